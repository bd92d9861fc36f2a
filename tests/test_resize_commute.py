"""resize_commute: on every exporter's MiDaS-small the four fusion upsamples swap with their 1x1 out_conv (the
head's 3x3 conv stays), the outputs match the original to float tolerance, mtl is predicted faster, and a second
run changes nothing. Hand-built graphs cover the blockers and the resize forms (sizes constant or computed by a
Shape chain, nearest, Interpolate v1/v4/v11 sizes over the channel axis)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rewriter.cost import predict
from rewriter.engine import plan
from rewriter.graph import view
from rewriter.model import ModelHandle
from rewriter.passbase import KEEP, PassContext, build_passes
from rewriter.runtime import Runner

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # fixtures/ is a repo folder, not an installed package
    sys.path.insert(0, str(ROOT))

TARGETS = ("mtl", "kmb", "cpu")
EXPORTS = ("small_ts17_256x256", "small_ts11_256x256", "small_dynamo_256x256", "small_ir_256x256",
           "small_ir10_fp16_256x256")


def _pass(**opts):
    return build_passes(["resize_commute"], {"resize_commute": opts} if opts else None)[0]


def _apply(model: ModelHandle, targets=TARGETS):
    out = model.clone()
    res = _pass().apply(out, PassContext(targets=targets))
    return out, res


def _feed(model: ModelHandle, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal([d or 1 for d in s]).astype(np.float32) for n, s, _ in model.inputs()}


def _rel(before: ModelHandle, after: ModelHandle, runtime: str = "ov") -> float:
    feed = _feed(before)
    ref = np.asarray(next(iter(Runner(before, runtime).run(feed).values())), np.float64)
    out = np.asarray(next(iter(Runner(after, runtime).run(feed).values())), np.float64)
    assert out.shape == ref.shape
    return float(np.max(np.abs(out - ref)) / np.max(np.abs(ref)))


def _fixture(name: str) -> ModelHandle:
    pytest.importorskip("torch")
    import fixtures

    return ModelHandle.load(fixtures.fixture_path(name))


# ---- real exports ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXPORTS)
def test_midas_small_fusion_sites_commute_exactly(name):
    before = _fixture(name)
    after, res = _apply(before)
    changed = [d for d in res.decisions if d.will_change]
    kept = [d for d in res.decisions if not d.will_change]
    assert len(changed) == 4 and len(kept) == 1, [(d.site, d.reason) for d in res.decisions]
    assert "3x3 kernel, not 1x1" in kept[0].reason
    assert res.exact
    v = view(after)
    for d in changed:  # the resize keeps its id and now upsamples the conv's (fewer) output channels
        node = v.node(d.site)
        assert v.shape(node.inputs[0])[1] == d.details["cout"] < d.details["cin"] or d.details["cout"] == 64
        assert d.details["latency_us"]["mtl"]["after"] < d.details["latency_us"]["mtl"]["before"]
        assert d.details["engine_before"]["mtl"]["engine"] in ("shave", "dpu")
    assert _rel(before, after) < 1e-5
    if before.format == "onnx":
        onnx.checker.check_model(after.onnx)
        assert _rel(before, after, "ort") < 1e-5
    assert predict(after, "mtl").total_ms < predict(before, "mtl").total_ms - 0.5
    again = plan(after, _pass(), PassContext(targets=TARGETS))  # idempotent: the resizes now feed Adds / a 3x3
    assert not any(d.will_change for d in again)


@pytest.mark.parametrize("name", ["small_ir_int8_256x256", "small_qdq_256x256"])
def test_quantized_models_keep_every_site(name):
    decisions = plan(_fixture(name), _pass(), PassContext(targets=TARGETS))
    assert len(decisions) == 5
    assert all(d.choice == KEEP and "quantized" in d.reason for d in decisions), [d.reason for d in decisions]


def test_dynamic_export_commutes_when_pinned_and_stays_dynamic():
    before = _fixture("small_ts17_dynamic")
    unpinned = plan(before, _pass(), PassContext(targets=TARGETS))
    assert not any(d.will_change for d in unpinned)
    assert sum("not static" in d.reason for d in unpinned) == 4
    after = before.clone()
    res = _pass().apply(after, PassContext(targets=TARGETS, input_shape={"image": [1, 3, 256, 256]}))
    assert res.sites_changed == 4
    for hw in ((256, 256), (192, 320)):  # the pin priced the sites; the model still takes any size
        feed = {"image": np.random.default_rng(1).standard_normal((1, 3, *hw)).astype(np.float32)}
        ref, out = (next(iter(Runner(m).run(feed).values())) for m in (before, after))
        assert out.shape == (1, *hw) and np.max(np.abs(out - ref)) < 1e-5 * np.max(np.abs(ref))


def test_asym_interp_and_interp_deconv_still_find_the_commuted_resizes():
    """A commuted site keeps its id: asym_interp + interp_deconv lower it, and (a resize still commuting with a
    1x1 conv) the result equals asym_interp + interp_deconv on the original."""
    before = _fixture("small_ts17_256x256")
    commuted, _ = _apply(before)
    ctx = PassContext(targets=())
    passes = build_passes(["asym_interp", "interp_deconv"], {"asym_interp": {"mode": "asymmetric"}})
    plain = before.clone()
    for m in (commuted, plain):
        results = [p.apply(m, ctx) for p in passes]
        assert [r.sites_changed for r in results] == [4, 5]
    assert _rel(plain, commuted) < 1e-5


# ---- hand-built graphs -------------------------------------------------------------------------------------------
def pair(*, cin=8, cout=4, k=1, hw=(6, 5), mode="linear", coord="align_corners", form="scales", opset=17,
         extra_reader=False, resize_is_output=False, groups=1, qweights=False) -> ModelHandle:
    """x → Resize x2 → Conv(k x k, cin → cout, bias) → y; ``form``: scales, sizes (constant), shape (sizes =
    Concat(Shape(x)[:2], const), the TorchScript form), roi (opset 11 Constant roi + empty scales + sizes chain)."""
    rng = np.random.default_rng(3)
    h, w = hw
    out_hw = [2 * h, 2 * w]
    inits = [numpy_helper.from_array((rng.standard_normal((cout, cin // groups, k, k)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")]
    nodes = []
    attrs = {"mode": mode, "coordinate_transformation_mode": coord}
    if mode == "nearest":
        attrs["nearest_mode"] = "floor"
    if form == "scales":
        inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"))
        ins = ["x", "", "scales"]
    elif form == "sizes":
        inits.append(numpy_helper.from_array(np.array([1, cin, *out_hw], np.int64), "sizes"))
        ins = ["x", "", "", "sizes"]
    else:
        inits += [numpy_helper.from_array(np.array([0], np.int64), "i0"),
                  numpy_helper.from_array(np.array([2], np.int64), "i2"),
                  numpy_helper.from_array(np.array(out_hw, np.int64), "hw")]
        nodes += [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
                  helper.make_node("Slice", ["shp", "i0", "i2"], ["nc"], name="slice"),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0, name="concat")]
        ins = ["x", "", "", "sizes"]
        if form == "roi":
            nodes += [helper.make_node("Constant", [], ["roi"], value=numpy_helper.from_array(np.zeros(0, np.float32))),
                      helper.make_node("Constant", [], ["sc"], value=numpy_helper.from_array(np.zeros(0, np.float32)))]
            ins = ["x", "roi", "sc", "sizes"]
    nodes.append(helper.make_node("Resize", ins, ["u"], name="up", **attrs))
    if qweights:  # int8 weights through DequantizeLinear (QDQ)
        inits[0] = numpy_helper.from_array(rng.integers(-100, 100, (cout, cin // groups, k, k)).astype(np.int8), "wq")
        inits.append(numpy_helper.from_array(np.float32(0.01), "ws"))
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="dqw"))
    nodes.append(helper.make_node("Conv", ["u", "w", "b"], ["y"], name="conv", kernel_shape=[k, k],
                                  pads=[k // 2] * 4, group=groups))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, cout, *out_hw])]
    if extra_reader:
        nodes.append(helper.make_node("Relu", ["u"], ["r"], name="relu"))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, cin, *out_hw]))
    if resize_is_output:
        outputs.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, cin, *out_hw]))
    g = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, cin, h, w])],
                          outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return ModelHandle.load(m)


@pytest.mark.parametrize("kw,why", [
    ({"extra_reader": True}, "2 readers"),
    ({"resize_is_output": True}, "graph output"),
    ({"k": 3}, "3x3 kernel, not 1x1"),
    ({"qweights": True}, "quantized: the weights of conv come through DequantizeLinear"),
    ({"mode": "cubic"}, "cubic mode"),
    ({"coord": "tf_crop_and_resize"}, "tf_crop_and_resize"),
])
def test_blocked_sites_keep_with_a_reason(kw, why):
    (d,) = plan(pair(**kw), _pass(), PassContext(targets=TARGETS))
    assert d.choice == KEEP and d.choices == (KEEP,) and why in d.reason, d.reason


@pytest.mark.parametrize("kw", [
    {},
    {"mode": "nearest", "coord": "asymmetric"},
    {"coord": "half_pixel", "groups": 2},
    {"form": "sizes"},
    {"form": "shape"},
    {"form": "roi", "opset": 11},
])
def test_commuted_pair_matches_the_original(kw):
    before = pair(**kw)
    after, res = _apply(before, targets=())
    assert res.sites_changed == 1, res.decisions[0].reason
    onnx.checker.check_model(after.onnx, full_check=True)  # topological order, types
    nodes = [n.op_type for n in after.onnx.graph.node]
    assert nodes[-2:] == ["Conv", "Resize"] and "Shape" not in nodes  # a Shape chain is gone with the old sizes
    assert after.onnx.graph.output[0].name == "y"
    assert _rel(before, after, "ort") < 1e-5 and _rel(before, after, "ov") < 1e-5
    resize = after.onnx.graph.node[-1]
    if kw.get("form") == "sizes":
        sizes = {t.name: numpy_helper.to_array(t) for t in after.onnx.graph.initializer}[resize.input[3]]
        assert sizes.tolist() == [1, 4, 12, 10]
    if kw.get("form") in ("shape", "roi"):  # a computed sizes chain becomes whole-number scales
        assert len(resize.input) == 3 and resize.input[2]


def test_the_cost_model_decides():
    """Widening 1x1 convs (4 → 64 channels) would upsample 16x more channels: kept, on MACs and on mtl."""
    wide = pair(cin=4, cout=64, hw=(16, 16))
    (d,) = plan(wide, _pass(), PassContext(targets=()))
    assert d.choice == KEEP and "more multiply-adds" in d.reason
    (d,) = plan(wide, _pass(), PassContext(targets=("mtl",)))
    assert d.choice == KEEP and "predicted slower on mtl" in d.reason
    assert d.details["latency_us"]["mtl"]["after"] > d.details["latency_us"]["mtl"]["before"]
    (d,) = plan(pair(cin=64, cout=32, hw=(16, 16)), _pass(), PassContext(targets=("mtl",)))
    lat = d.details["latency_us"]["mtl"]  # the engine's whole-model figures replace the pass's estimate
    assert d.choice == "conv_first" and lat["after"] < lat["before"]


# ---- OpenVINO Interpolate forms --------------------------------------------------------------------------------
def ir_pair(version: int, sizes_form: str) -> ModelHandle:
    """Parameter → Interpolate-``version`` x2 (sizes over all four axes: const / computed ShapeOf chain; or over
    H, W only) → Convolution 1x1 + bias Add → Result."""
    import openvino as ov
    import openvino.opset1 as op1
    import openvino.opset13 as ops
    from openvino.utils.node_factory import NodeFactory

    rng = np.random.default_rng(5)
    cin, cout, h, w = 8, 4, 6, 5
    p = ops.parameter([1, cin, h, w], np.float32, name="x")
    axes = [0, 1, 2, 3] if sizes_form != "hw" else [2, 3]
    if sizes_form == "computed":
        sizes = ops.multiply(ops.shape_of(p), ops.constant(np.array([1, 1, 2, 2], np.int64))).output(0)
    else:
        full = np.array([1, cin, 2 * h, 2 * w], np.int64)
        sizes = ops.constant(full[axes]).output(0)
    attrs = dict(mode="linear_onnx", shape_calculation_mode="sizes", coordinate_transformation_mode="align_corners",
                 nearest_mode="floor", antialias=False, pads_begin=[0, 0, 0, 0], pads_end=[0, 0, 0, 0],
                 cube_coeff=-0.75)
    if version == 1:
        up = op1.interpolate(p, sizes, {"axes": axes, "mode": "linear", "align_corners": True, "antialias": False,
                                        "pads_begin": [0], "pads_end": [0]})
    elif version == 4:
        scales = ops.constant(np.array([1, 1, 2, 2], np.float32)[axes])
        up = NodeFactory("opset4").create("Interpolate", [p.output(0), sizes, scales.output(0),
                                                          ops.constant(np.array(axes, np.int64)).output(0)], attrs)
    else:
        up = NodeFactory("opset11").create("Interpolate", [p.output(0), sizes,
                                                           ops.constant(np.array(axes, np.int64)).output(0)], attrs)
    up.set_friendly_name("up")
    wt = ops.constant((rng.standard_normal((cout, cin, 1, 1)) * 0.3).astype(np.float32))
    conv = ops.convolution(up, wt, [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
    y = ops.add(conv, ops.constant(rng.standard_normal((1, cout, 1, 1)).astype(np.float32)), name="conv/bias")
    y.output(0).set_names({"y"})
    return ModelHandle.load(ov.Model([y.output(0)], [p], "ir_pair"))


@pytest.mark.parametrize("version,sizes_form", [(1, "const"), (1, "hw"), (4, "const"), (4, "computed"),
                                                (11, "const"), (11, "computed"), (11, "hw")])
def test_interpolate_forms_commute(version, sizes_form):
    before = ir_pair(version, sizes_form)
    after, res = _apply(before, targets=())
    assert res.sites_changed == 1, res.decisions[0].reason
    assert _rel(before, after) < 1e-5
    (result,) = after.ov.get_results()
    out = result.input_value(0)
    assert out.get_any_name() == "y" and out.get_node().get_friendly_name() == "up"
    assert list(out.get_partial_shape().to_shape()) == [1, 4, 12, 10]


# ---- rewrite optimize ----------------------------------------------------------------------------------------------
def test_optimize_commutes_up_front_and_judges_against_the_input(tmp_path):
    from rewriter.optimizer import optimize

    src = tmp_path / "pair.onnx"
    pair(cin=64, cout=32, hw=(16, 16)).save(src)
    final, rep = optimize(src, targets=("mtl", "cpu"), passes="resize_commute,asym_interp,interp_deconv",
                          budget="rel_l2=1e-4")  # no mode change fits: only the exact commute is taken
    (row,) = [s for s in rep.sites if s.pass_name == "resize_commute"]
    assert row.selected and row.choice == "conv_first" and row.budget_used == 0.0 and row.saved_us["mtl"] > 0
    assert any(n.startswith("resize_commute: 1 site(s) commuted up front") for n in rep.notes)
    assert not [s for s in rep.sites if s.selected and s.pass_name != "resize_commute"]
    assert [n.op_type for n in final.onnx.graph.node] == ["Conv", "Resize"]
    for t in ("mtl", "cpu"):
        assert rep.latency[t]["after_ms"] < rep.latency[t]["before_ms"]  # measured from the input, not the start
    assert rep.fidelity["validation"]["passed"]
    assert _rel(ModelHandle.load(src), final) < 1e-5


def test_name_filters_deselect_but_a_selection_can_force():
    m = pair()
    (d,) = plan(m, _pass(exclude="^up$"), PassContext(targets=()))
    assert d.choice == KEEP and "exclude pattern" in d.reason and "conv_first" in d.choices
    out = m.clone()
    res = _pass(exclude="^up$").apply(out, PassContext(targets=()), selection={"up": "conv_first"})
    assert res.sites_changed == 1 and _rel(m, out) < 1e-5
