"""The first-divergence locator names the node a pass changed, not a later untouched one, on both formats."""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import rewriter
from rewriter.model import ModelHandle
from rewriter.verify import locate


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    """Chunks of 3 tensors make these small graphs behave like MiDaS-sized ones (sampled, not all at once)."""
    monkeypatch.setattr(sys.modules["rewriter.verify.locator"], "LOCATE_CHUNK_TENSORS", 3)


def three_stage(channels: int = 4, hw: int = 6) -> onnx.ModelProto:
    """conv → r1 (align_corners) → conv → r2 (align_corners) → conv → r3 (half_pixel, the 'head') → conv."""
    rng = np.random.default_rng(1)
    nodes, inits, x = [], [], "x"
    for k, coord in enumerate(("align_corners", "align_corners", "half_pixel"), start=1):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.3).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        nodes.append(helper.make_node("Conv", [x, f"w{k}"], [f"c{k}"], pads=[1, 1, 1, 1], name=f"conv{k}"))
        nodes.append(helper.make_node("Resize", [f"c{k}", "", "scales"], [f"u{k}"], mode="linear",
                                      coordinate_transformation_mode=coord, name=f"r{k}"))
        x = f"u{k}"
    w = (rng.standard_normal((1, channels, 3, 3)) * 0.3).astype(np.float32)
    inits += [numpy_helper.from_array(w, "w4"), numpy_helper.from_array(np.float32([1, 1, 2, 2]), "scales")]
    nodes.append(helper.make_node("Conv", [x, "w4"], ["y"], pads=[1, 1, 1, 1], name="conv4"))
    side = hw * 8
    g = helper.make_graph(nodes, "three_stage",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, side, side])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


def _ir_with_sizes_chains(m: onnx.ModelProto) -> ModelHandle:
    """The graph as an older Model Optimizer IR: Interpolate-4 with sizes computed from ShapeOf."""
    from fixtures.realworld import _with_sizes_chains

    h = ModelHandle(_with_sizes_chains(ModelHandle(m).to_ir().ov))
    assert h.op_types().get("ShapeOf") == 3
    return h


@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_locator_names_the_changed_resize_not_the_head(fmt):
    before = ModelHandle(three_stage()) if fmt == "onnx" else _ir_with_sizes_chains(three_stage())
    after, rep = rewriter.rewrite(before, "asym_interp", opts={"asym_interp": {"include": "^r2$"}},
                                  verify=False, targets=("cpu",))
    assert rep["passes"][0]["sites_changed"] == 1
    assert after.tags() == {"r2": "asym_interp"}
    hit = locate(before, after)
    assert hit["node"] == "r2" and hit["pass"] == "asym_interp", hit
    assert hit["error"] > 1e-3 and "measured_at" not in hit


def test_untagged_search_skips_shape_arithmetic():
    """Without tags the first divergent shared tensor is r2's output; the sizes chains (computed from
    ShapeOf, equal in both graphs) must not mark everything upstream of them as clean."""
    before = _ir_with_sizes_chains(three_stage())
    after, _ = rewriter.rewrite(before, "asym_interp", opts={"asym_interp": {"include": "^r2$"}},
                                verify=False, targets=("cpu",))
    hit = locate(before, after, tags={})
    assert hit["node"] == "r2", hit
    from rewriter.verify.locator import common_tensors

    taps = {t.op for _, t in common_tensors(before, after)}
    assert taps == {"Convolution", "Interpolate"}, taps  # no Convert/Multiply/Add/Floor of the sizes chains


def test_added_node_measured_downstream():
    """interp_deconv replaces a resize by new nodes: the locator names a tagged new node even though it has
    no counterpart in the model before (measured at the first shared tensor computed from it)."""
    before, _ = rewriter.rewrite(three_stage(), "asym_interp", verify=False, targets=("cpu",))
    after, rep = rewriter.rewrite(before, "interp_deconv", verify=False)  # all targets: never-slower keeps some
    assert rep["passes"][0]["sites_changed"] >= 1
    tags = after.tags()
    new = {n for n, p in tags.items() if p == "interp_deconv"}
    assert new
    # a deliberately wrong tolerance of 0 makes fp32 reassociation count as divergence: the locator must
    # blame a node interp_deconv made, the earliest one
    hit = locate(before, after, tol=0.0)
    assert hit is not None and hit["node"] in new and hit["pass"] == "interp_deconv", hit
