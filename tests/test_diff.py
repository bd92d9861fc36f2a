"""Structural diff: attribute changes, added/removed nodes, matching through renames, ONNX vs IR, CLI."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_tiny, run_cli
from onnx import TensorProto, helper, numpy_helper

from rewriter.diff import diff
from rewriter.model import ModelHandle

RNG = np.random.default_rng(0)
W = {k: (RNG.standard_normal(s) * 0.2).astype(np.float32) for k, s in dict(
    w1=(8, 8, 3, 3), w2=(8, 8, 3, 3), w3=(1, 8, 3, 3), wd=(8, 1, 3, 3), wp=(8, 8, 1, 1), b2=(8,)).items()}


def _stack(dwpw: bool = False, prefix: str = "", coord: str = "align_corners") -> onnx.ModelProto:
    """x → conv1 → relu → conv2 (3x3, bias) → relu → resize x2 → conv3 → y; dwpw: conv2 as dw3x3 + pw1x1."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"], pads=[1] * 4, name=prefix + "conv1"),
             n("Relu", ["c1"], ["r1"], name=prefix + "relu1")]
    inits = ["w1", "w3", "b2"]
    if dwpw:
        nodes += [n("Conv", ["r1", "wd"], ["d2"], pads=[1] * 4, group=8, name=prefix + "conv2_dw"),
                  n("Conv", ["d2", "wp", "b2"], ["c2"], name=prefix + "conv2_pw")]
        inits += ["wd", "wp"]
    else:
        nodes += [n("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4, name=prefix + "conv2")]
        inits += ["w2"]
    nodes += [n("Relu", ["c2"], ["r2"], name=prefix + "relu2"),
              n("Resize", ["r2", "", "scales"], ["up"], mode="linear",
                coordinate_transformation_mode=coord, name=prefix + "resize"),
              n("Conv", ["up", "w3"], ["y"], pads=[1] * 4, name=prefix + "conv3")]
    g = helper.make_graph(nodes, "stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])],
                          initializer=[numpy_helper.from_array(W[k], k) for k in inits]
                          + [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def _rename_everything(m: onnx.ModelProto, prefix: str = "r_") -> onnx.ModelProto:
    """Rename every node and every internal tensor (graph inputs/outputs and weights kept)."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    keep = {i.name for i in m2.graph.input} | {o.name for o in m2.graph.output}
    keep |= {i.name for i in m2.graph.initializer}
    ren = {}
    for k, node in enumerate(m2.graph.node):
        node.name = f"{prefix}node{k}"
        for j, o in enumerate(node.output):
            if o not in keep:
                ren[o] = f"{prefix}t{k}_{j}"
                node.output[j] = ren[o]
    for node in m2.graph.node:
        for j, i in enumerate(node.input):
            node.input[j] = ren.get(i, i)
    return m2


def test_attribute_change_survives_renames():
    before = make_tiny()
    after = _rename_everything(make_tiny("asymmetric"))
    r = diff(before, after)
    assert r["added"] == [] and r["removed"] == []
    assert len(r["changed"]) == 1
    c = r["changed"][0]
    assert (c["before"], c["op"]) == ("resize1", "Resize") and c["after"].startswith("r_node")
    assert c["attributes"] == {"coordinate_transformation_mode": ["align_corners", "asymmetric"]}
    assert len(r["renamed"]) == 4
    assert r["op_counts"] == {"Conv": [2, 2], "Relu": [1, 1], "Resize": [1, 1]}


def test_identical_models_have_no_changes():
    r = diff(make_tiny(), make_tiny())
    assert (r["changed"], r["added"], r["removed"], r["renamed"]) == ([], [], [], [])
    assert r["matched"] == 4


def test_conv_replaced_by_dw_pw_pair_with_renames_and_tags():
    after = ModelHandle.load(_stack(dwpw=True, prefix="new_"))
    after.tag(["new_conv2_dw", "new_conv2_pw"], "dwpw")
    r = diff(_stack(), after)
    assert [x["name"] for x in r["removed"]] == ["conv2"]
    assert [x["name"] for x in r["added"]] == ["new_conv2_dw", "new_conv2_pw"]
    assert all(x["tag"] == "dwpw" for x in r["added"])
    assert r["added"][0]["description"] == "Conv depthwise 3x3 8 ch"
    assert r["added"][0]["weights"] == [[8, 1, 3, 3]] and r["added"][1]["weights"] == [[8, 8, 1, 1], [8]]
    assert r["replaced"] == [{"removed": ["conv2"], "added": ["new_conv2_dw", "new_conv2_pw"]}]
    assert r["changed"] == []  # neighbours rewired to the new pair are not "changed"
    assert r["op_counts"]["Conv"] == [3, 4]
    assert r["tags"]["by_pass"] == {"dwpw": ["new_conv2_dw", "new_conv2_pw"]}
    # parameters: 3x3 8→8 + bias (584) becomes dw 72 + pw 64 + bias 8; conv1 576 and conv3 72 stay
    assert r["params"]["before"] == 576 + 584 + 72 and r["params"]["after"] == 576 + 72 + 72 + 72
    # MACs: 16x16x8 outputs x 72 (conv1, conv2), 32x32 x 72 (conv3); dw 16x16x8x9, pw 16x16x8x8
    assert r["macs"]["before"] == 2 * 2048 * 72 + 1024 * 72
    assert r["macs"]["after"] == 2048 * 72 + 2048 * 9 + 2048 * 8 + 1024 * 72


def _chain(channels: int, seed: int) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    wa = rng.standard_normal((channels, 8, 3, 3)).astype(np.float32)
    wb = rng.standard_normal((1, channels, 1, 1)).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "wa"], ["a"], pads=[1] * 4, name="convA"),
         helper.make_node("Relu", ["a"], ["ra"], name="relu"),
         helper.make_node("Conv", ["ra", "wb"], ["y"], name="convB")],
        "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 8, 8])],
        initializer=[numpy_helper.from_array(wa, "wa"), numpy_helper.from_array(wb, "wb")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_weight_shape_and_value_changes():
    r = diff(_chain(16, 0), _chain(4, 1))
    assert {c["before"] for c in r["changed"]} == {"convA", "convB"}
    shapes = {(w["node"], tuple(w["before_shape"]), tuple(w["after_shape"])) for w in r["weight_changes"]}
    assert shapes == {("convA", (16, 8, 3, 3), (4, 8, 3, 3)), ("convB", (1, 16, 1, 1), (1, 4, 1, 1))}
    assert r["params"] == {"before": 16 * 72 + 16, "after": 4 * 72 + 4, "unit": "parameters"}
    # same shapes, new values: a value change with its size
    r = diff(_chain(16, 0), _chain(16, 1))
    convA = next(c for c in r["changed"] if c["before"] == "convA")
    assert convA["weights"][0]["before_shape"] == convA["weights"][0]["after_shape"] == [16, 8, 3, 3]
    assert convA["weights"][0]["max_abs_change"] > 0.1
    assert r["weight_changes"] == []


def test_rounding_level_weight_noise_is_not_a_change():
    noisy = _chain(16, 0)
    w = numpy_helper.to_array(noisy.graph.initializer[0])
    noisy.graph.initializer[0].CopyFrom(numpy_helper.from_array(w * np.float32(1 + 1e-4), "wa"))
    assert diff(_chain(16, 0), noisy)["changed"] == []


def _save_ir(model: onnx.ModelProto, path: Path, fp16: bool = True, tags: dict | None = None) -> Path:
    h = ModelHandle.load(model)
    for node, pass_name in (tags or {}).items():
        h.tag([node], pass_name)
    return h.save(path, to="ir", compress_to_fp16=fp16)


def test_onnx_vs_its_fp16_ir_is_unchanged(tmp_path):
    src = tmp_path / "stack.onnx"
    onnx.save(_stack(), str(src))
    ir = _save_ir(_stack(), tmp_path / "stack.xml")
    r = diff(src, ir)
    assert (r["changed"], r["added"], r["removed"]) == ([], [], [])
    assert r["compared_as"] == "ir" and r["before"]["format"] == "onnx" and r["after"]["format"] == "ir"
    # IR vocabulary shown as ONNX, bias Add folded back into its Conv, Constant/Convert not ops
    assert r["op_counts"] == {"Conv": [3, 3], "Relu": [2, 2], "Resize": [1, 1]}
    assert r["params"]["before"] == r["params"]["after"] == 576 + 584 + 72


def test_onnx_vs_ir_after_rewrites(tmp_path):
    asym = _save_ir(_stack(coord="asymmetric"), tmp_path / "asym.xml", tags={"resize": "asym_interp"})
    r = diff(_stack(), asym)
    assert len(r["changed"]) == 1
    assert r["changed"][0]["before"] == "resize" and r["changed"][0]["tag"] == "asym_interp"
    assert r["changed"][0]["attributes"] == {"coordinate_transformation_mode": ["align_corners", "asymmetric"]}
    # IR vs IR: a depthwise (GroupConvolution) + pointwise pair replacing a Convolution
    before_ir = _save_ir(_stack(), tmp_path / "a.xml")
    after_ir = _save_ir(_stack(True, "n_"), tmp_path / "b.xml", tags={"n_conv2_dw": "dwpw", "n_conv2_pw": "dwpw"})
    r = diff(before_ir, after_ir)
    assert r["compared_as"] == "ir"
    assert [x["name"] for x in r["removed"]] == ["conv2"]
    assert sorted(x["name"] for x in r["added"]) == ["n_conv2_dw", "n_conv2_pw"]
    assert {x["ir_op"] for x in r["added"]} == {"GroupConvolution", "Convolution"}
    assert r["tags"]["by_pass"] == {"dwpw": ["n_conv2_dw", "n_conv2_pw"]}


def test_fidelity_and_latency_use_the_helpers_when_present(monkeypatch):
    calls = []
    fake_verify = types.ModuleType("rewriter.verify")
    fake_verify.verify_models = lambda a, b, images=None: calls.append(("verify", images)) or {
        "passed": False, "metrics": {"max_abs": 0.5}}
    fake_cost = types.ModuleType("rewriter.cost")
    fake_cost.compare = lambda a, b, t: calls.append(("cost", t)) or {"before_ms": 2.0, "after_ms": 1.0}
    monkeypatch.setitem(sys.modules, "rewriter.verify", fake_verify)
    monkeypatch.setitem(sys.modules, "rewriter.cost", fake_cost)
    r = diff(make_tiny(), make_tiny("asymmetric"), fidelity=True, targets=("kmb", "mtl"), images="imgs")
    assert calls == [("verify", "imgs"), ("cost", "kmb"), ("cost", "mtl")]
    assert r["fidelity"]["metrics"] == {"max_abs": 0.5}
    assert r["latency"] == {"kmb": {"before_ms": 2.0, "after_ms": 1.0}, "mtl": {"before_ms": 2.0, "after_ms": 1.0}}


def test_cost_model_bugs_raise_runtime_failures_are_noted(monkeypatch):
    """A target the runtime cannot cost becomes a note; a bug in the cost model (TypeError) is not swallowed."""
    import rewriter.cost

    def fails(*a, **k):
        raise RuntimeError("no such device")

    monkeypatch.setattr(rewriter.cost, "compare", fails)
    r = diff(make_tiny(), make_tiny(), targets=("kmb",))
    assert r["latency"] == {}
    assert any("latency[kmb]: prediction failed: RuntimeError" in n for n in r["notes"])

    def bug(*a, **k):
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(rewriter.cost, "compare", bug)
    with pytest.raises(TypeError, match="unexpected keyword"):
        diff(make_tiny(), make_tiny(), targets=("kmb",))


def test_package_level_call():
    import rewriter
    import rewriter.diff  # noqa: F401 - the module and the function have different names

    assert len(rewriter.diff_models(make_tiny(), make_tiny("half_pixel"))["changed"]) == 1


# ---- command line ------------------------------------------------------------------------------------
def test_cli_writes_json_markdown_html(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(make_tiny(), str(a))
    onnx.save(make_tiny("asymmetric"), str(b))
    rep, md, page = tmp_path / "d.json", tmp_path / "d.md", tmp_path / "d.html"
    r = run_cli("diff", a, b, "--report", rep, "--md", md, "--html", page)
    assert r.returncode == 0, r.stderr
    j = json.loads(rep.read_text())
    assert j["op_counts"]["Resize"] == [1, 1]
    assert [c["attributes"] for c in j["changed"]] == [
        {"coordinate_transformation_mode": ["align_corners", "asymmetric"]}]
    assert "align_corners → asymmetric" in r.stdout
    assert "| resize1 | Resize |" in md.read_text()
    assert "<table>" in page.read_text()
    assert not list(tmp_path.glob(".*tmp"))  # atomic writes leave no temp files


def test_cli_bad_input_exit_2(tmp_path):
    good, junk = tmp_path / "a.onnx", tmp_path / "junk.onnx"
    onnx.save(make_tiny(), str(good))
    junk.write_text("not a model")
    r = run_cli("diff", good, junk)
    assert r.returncode == 2 and "junk.onnx" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("diff", tmp_path / "missing.xml", good)
    assert r.returncode == 2 and "missing.xml" in r.stderr
    r = run_cli("diff", good, good, "--report", tmp_path / "nofolder" / "d.json")
    assert r.returncode == 2 and "nofolder" in r.stderr


# ---- real MiDaS exports (fixtures + passes) ----------------------------------------------------------
def _midas_or_skip() -> ModelHandle:
    try:
        from fixtures import fixture_path
    except ImportError:
        pytest.skip("fixtures.fixture_path is not available yet")
    return ModelHandle.load(fixture_path("small_ts17_256x256"))


def _apply(handle: ModelHandle, pass_name: str, **opts) -> ModelHandle:
    from rewriter.passbase import PassContext, load_passes

    passes = load_passes()
    if pass_name not in passes:
        pytest.skip(f"pass {pass_name} is not available yet")
    after = handle.clone()
    passes[pass_name](**opts).apply(after, PassContext())
    return after


def test_midas_asym_interp_lists_the_four_fusion_resizes():
    src = _midas_or_skip()
    after = _apply(src, "asym_interp")
    renamed = ModelHandle(_rename_everything(after.onnx, "x_"))  # matching must not rely on names
    for r in (diff(src, after), diff(src, renamed)):
        resizes = [c for c in r["changed"] if c["op"] == "Resize"]
        assert len(r["changed"]) == len(resizes) == 4
        # mode=auto: half_pixel x2 lands on the DPU (one depthwise conv) with half asymmetric's grid shift
        assert all(c["attributes"] == {"coordinate_transformation_mode": ["align_corners", "half_pixel"]}
                   for c in resizes)
        assert r["added"] == [] and r["removed"] == []
    r = diff(src, after)
    assert all(c["tag"] == "asym_interp" for c in r["changed"])
    assert r["tags"]["by_pass"]["asym_interp"] == sorted(c["after"] for c in r["changed"])


def test_midas_dwpw_lists_each_replaced_conv_and_its_two_new_nodes():
    src = _midas_or_skip()
    after = _apply(src, "dwpw", refit=False)
    r = diff(src, after)
    removed = {x["name"] for x in r["removed"]}
    assert removed and all(x["op"] == "Conv" for x in r["removed"])
    assert len(r["added"]) == 2 * len(removed) and all(x["tag"] == "dwpw" for x in r["added"])
    assert sorted(n for g in r["replaced"] for n in g["removed"]) == sorted(removed)
    for g in r["replaced"]:
        assert len(g["removed"]) == 1 and len(g["added"]) == 2
    forms = sorted(x["description"].split()[1] for x in r["added"])
    assert forms.count("depthwise") == len(removed)
    assert r["changed"] == []
    assert r["op_counts"]["Conv"][1] - r["op_counts"]["Conv"][0] == len(removed)
