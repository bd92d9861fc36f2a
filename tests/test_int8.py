"""int8 pass: NNCF quantization to QDQ ONNX / FakeQuantize IR, ignored scope, accuracy control, calibration input."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rewriter.passes.int8 import choose_overflow_fix, host_has_vnni

from rewriter import ModelHandle, RewriteError
from rewriter.inputs import SKIMAGE_PHOTOS, calibration_set
from rewriter.metrics import depth_metrics
from rewriter.passbase import PassContext, build_passes
from rewriter.quant import already_quantized, op_quantization, quantized_op_counts, quantizer_counts
from rewriter.runtime import run

FAST = {"subset_size": "4"}


def make_net() -> onnx.ModelProto:
    """x[1,3,32,32] → conv0 → relu → dwconv1 (group 8) → relu → conv2 (8→4) → relu → MatMul (last dim)."""
    rng = np.random.default_rng(0)
    arrays = {"w0": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b0": rng.standard_normal(8) * 0.1,
              "w1": rng.standard_normal((8, 1, 3, 3)) * 0.3, "w2": rng.standard_normal((4, 8, 1, 1)) * 0.3,
              "wm": rng.standard_normal((32, 32)) * 0.2}
    inits = [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in arrays.items()]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4, name="conv0"),
             helper.make_node("Relu", ["c0"], ["r0"], name="relu0"),
             helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1] * 4, group=8, name="dwconv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("MatMul", ["r2", "wm"], ["y"], name="matmul3")]
    g = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 32, 32])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def make_sensitive() -> onnx.ModelProto:
    """conv0 → conv1 → conv2 where conv0 makes one channel ~300x larger than the rest: a per-tensor INT8
    quantizer on conv1's input crushes the small channels conv1 needs, so conv1 is the layer to keep float."""
    rng = np.random.default_rng(1)
    w0 = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    w0[0] *= 300.0
    w1 = (rng.standard_normal((8, 8, 3, 3)) * 0.3).astype(np.float32)
    w1[:, 0] = 0.0
    w1[0, 0] = 1e-3  # the huge channel barely reaches the output
    w2 = (rng.standard_normal((1, 8, 3, 3)) * 0.3).astype(np.float32)
    nodes = []
    src = "x"
    for i in range(3):
        nodes += [helper.make_node("Conv", [src, f"w{i}"], [f"c{i}"], pads=[1] * 4, name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        src = f"r{i}"
    g = helper.make_graph(nodes, "sensitive",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                          [helper.make_tensor_value_info("r2", TensorProto.FLOAT, [1, 1, 32, 32])],
                          initializer=[numpy_helper.from_array(w, f"w{i}") for i, w in enumerate((w0, w1, w2))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def handle(fmt: str, model: onnx.ModelProto | None = None) -> ModelHandle:
    """The model as ONNX, or as an IR converted the way users' IRs are (convert_model folds weight reshapes)."""
    h = ModelHandle.load(model if model is not None else make_net())
    if fmt == "onnx":
        return h
    import openvino as ov

    d = Path(tempfile.mkdtemp(prefix="int8-test-"))
    onnx.save(h.onnx, str(d / "m.onnx"))
    ov.save_model(ov.convert_model(str(d / "m.onnx")), str(d / "m.xml"), compress_to_fp16=False)
    return ModelHandle.load(d / "m.xml")


def int8(**opts):
    return build_passes(["int8"], {"int8": {**FAST, **{k: str(v) for k, v in opts.items()}}})[0]


def feeds() -> list[dict[str, np.ndarray]]:
    """The scikit-image photos int8 did not calibrate on (FAST uses the first 4)."""
    return calibration_set(handle("onnx"), None).feeds[4:]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


# ---- ONNX → QDQ, IR → FakeQuantize ----------------------------------------------------------------------------

def test_onnx_becomes_qdq_that_runs_in_ort_and_ov():
    h = handle("onnx")
    before = run(h, feeds(), "ort")
    res = int8().apply(h, PassContext())
    ops = h.op_types()
    assert ops["QuantizeLinear"] == 4 and ops["DequantizeLinear"] == 8  # 4 activation pairs + 4 int8 weights
    assert res.extra["quantizers"]["activation"] == 4 and res.extra["quantizers"]["weight"] == 4
    assert res.extra["quantized_ops"] == {"Conv": 3, "MatMul": 1}
    assert res.sites_changed == 4 and res.extra["kept_float"] == []
    w = next(i for i in h.onnx.graph.initializer if i.name == "q_output_w0_1")
    assert w.dims == [8, 3, 3, 3]
    h.validate()
    for rt in ("ort", "ov"):
        after = run(h, feeds(), rt)
        errs = [rel_err(a["y"], b["y"]) for a, b in zip(before, after)]
        assert 0 < max(errs) < 0.15, (rt, errs)
    tagged = h.tags()
    qdq = [n.name for n in h.onnx.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert set(qdq) <= set(tagged) and set(res.new_nodes) == set(qdq)
    assert all(tagged[n] == "int8" for n in qdq)


def test_ir_becomes_fakequantize_ir_that_runs(tmp_path):
    h = handle("ir")
    before = run(h, feeds())
    res = int8().apply(h, PassContext())
    assert h.format == "ir" and h.op_types()["FakeQuantize"] == 4
    assert res.extra["quantized_ops"] == {"Convolution": 2, "GroupConvolution": 1, "MatMul": 1}
    assert res.extra["quantizers"]["weight"] == 4 and res.extra["backend"] == "openvino"
    fq = [op.get_friendly_name() for op in h.ov.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert set(fq) <= set(h.tags()) and {h.tags()[n] for n in fq} == {"int8"}
    after = run(h, feeds())
    assert 0 < max(rel_err(a["y"], b["y"]) for a, b in zip(before, after)) < 0.15
    out = h.save(tmp_path / "q.xml")  # the saved INT8 IR reloads and still counts as quantized
    assert already_quantized(ModelHandle.load(out)).startswith("already quantized (4 FakeQuantize")


def test_report_names_calibration_and_overflow_choice():
    res = int8().apply(handle("onnx"), PassContext(targets=("cpu",)))
    cal, st = res.extra["calibration"], res.extra["settings"]
    assert cal["source"] == "skimage" and cal["samples"] == 4 and cal["preprocess"] == "imagenet"
    assert any("scikit-image" in n for n in res.notes)
    assert st["overflow_fix"] == ("disable" if host_has_vnni() else "enable")
    assert "VNNI" in st["overflow_fix_reason"]
    res = int8(overflow_fix="first_layer_only").apply(handle("onnx"), PassContext())
    assert res.extra["settings"]["overflow_fix"] == "first_layer_only"


def test_overflow_fix_auto_follows_targets_and_cpu():
    assert choose_overflow_fix("auto", ("cpu",), False)[0] == "enable"
    assert choose_overflow_fix("auto", ("kmb", "mtl", "cpu"), False)[0] == "enable"
    assert choose_overflow_fix("auto", ("cpu",), True)[0] == "disable"
    fix, why = choose_overflow_fix("auto", ("mtl",), False)
    assert fix == "disable" and "saturation" in why  # warns that CPU-measured fidelity will look worse
    assert choose_overflow_fix("enable", ("mtl",), True) == ("enable", "set by the user")


def test_host_has_vnni_reads_cpu_flags(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor : 0\nflags : fpu sse avx2 fma\n")
    assert host_has_vnni(p) is False
    p.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_vnni\n")
    assert host_has_vnni(p) is True
    assert host_has_vnni(tmp_path / "missing") is None


def test_overflow_fix_halves_weight_range():
    """enable → 7-bit weights: the int8 weights of every conv stay within [-64, 64] (NNCF exempts depthwise
    convs, whose products are not summed across channels, so w1 keeps 8 bits)."""
    def weight_peak(fix: str) -> int:
        h = handle("onnx")
        int8(overflow_fix=fix).apply(h, PassContext())
        ws = [numpy_helper.to_array(i) for i in h.onnx.graph.initializer if i.data_type == TensorProto.INT8
              and i.name.startswith("q_output_w") and i.name != "q_output_w1_1"]
        return max(int(np.abs(w).max()) for w in ws)

    assert weight_peak("enable") <= 64 < weight_peak("disable")


# ---- ignored scope ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_ignore_names_keeps_those_ops_float(fmt):
    h = handle(fmt)
    # OpenVINO names a biased conv "<name>/WithoutBiases" and a MatMul after its output tensor
    conv0, matmul = ("conv0", "matmul3") if fmt == "onnx" else ("conv0/WithoutBiases", "y")
    p = int8(ignore_names=f"{conv0}|{matmul}")
    decisions = {s.node: s.decision for s in p.match(h, PassContext())}
    assert decisions[conv0] == "in ignore_names" and decisions[matmul] == "in ignore_names"
    res = p.apply(h, PassContext())
    q = op_quantization(h)
    assert not q[conv0]["weights"] and not q[matmul]["weights"]
    assert q["conv2"]["weights"] and q["conv2"]["activations"]
    assert res.sites_changed == 2 and {k["node"] for k in res.extra["kept_float"]} == {conv0, matmul}


def test_ignore_regex_and_types():
    h = handle("onnx")
    res = int8(ignore_regex="conv[02]").apply(h, PassContext())  # re.match: dwconv1 does not start with conv
    assert quantized_op_counts(h) == {"Conv": 1, "MatMul": 1}
    assert {k["node"] for k in res.extra["kept_float"]} == {"conv0", "conv2"}

    h = handle("onnx")
    int8(ignore_types="MatMul").apply(h, PassContext())
    assert quantized_op_counts(h) == {"Conv": 3}

    h = handle("ir")  # the ONNX spelling works on IR too: Conv → Convolution and GroupConvolution
    res = int8(ignore_types="Conv").apply(h, PassContext())
    assert quantized_op_counts(h) == {"MatMul": 1}
    assert res.sites[0].decision == "op type Convolution in ignore_types"


@pytest.mark.parametrize("opts, words", [
    ({"ignore_names": "conv0|no_such_conv"}, ["ignore_names", "'no_such_conv'"]),
    ({"ignore_types": "Softmax"}, ["ignore_types", "'Softmax'", "Conv, MatMul"]),
    ({"ignore_regex": "zzz.*"}, ["ignore_regex", "'zzz.*'", "matches no node"]),
])
def test_ignored_scope_that_matches_nothing_is_an_error(opts, words):
    h = handle("onnx")
    with pytest.raises(RewriteError) as e:
        int8(**opts).apply(h, PassContext())
    assert all(w in str(e.value) for w in words), str(e.value)
    assert "QuantizeLinear" not in h.op_types()  # nothing happened


def test_bad_options_are_errors():
    with pytest.raises(RewriteError, match="ignore_regex"):
        int8(ignore_regex="conv[")
    with pytest.raises(RewriteError, match="subset_size"):
        int8(subset_size=0)
    with pytest.raises(RewriteError, match="overflow_fix"):
        int8(overflow_fix="sometimes")
    with pytest.raises(RewriteError, match="needs int8.max_drop"):
        int8(max_float_layers=2)


# ---- accuracy control -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["ir", "onnx"])
def test_accuracy_control_keeps_sensitive_layer_float_and_meets_drop(fmt):
    plain = handle(fmt, make_sensitive())
    int8(subset_size=8).apply(plain, PassContext())
    h = handle(fmt, make_sensitive())
    reference = handle(fmt, make_sensitive())
    res = int8(subset_size=8, max_drop=0.08).apply(h, PassContext())
    acc = res.extra["accuracy_control"]
    kept = [k["node"] for k in res.extra["kept_float"]]
    assert kept == ["conv1"] and "accuracy control" in res.extra["kept_float"][0]["reason"]
    assert res.sites_changed == 2 and acc["met"] and acc["drop"] <= 0.08
    assert "conv1" in acc["reverted_by_nncf"] and acc["validation_images"] == len(SKIMAGE_PHOTOS)
    # check the drop independently on the validation images (the skimage photos, as calibration)
    val = calibration_set(reference, None).feeds
    ref, out, full = run(reference, val), run(h, val), run(plain, val)
    absrel = np.mean([depth_metrics(a["r2"], b["r2"])["absrel"] for a, b in zip(ref, out)])
    absrel_full = np.mean([depth_metrics(a["r2"], b["r2"])["absrel"] for a, b in zip(ref, full)])
    assert absrel <= 0.08 < absrel_full
    assert abs(absrel - acc["int8"]) < 1e-3 and abs(absrel_full - acc["int8_all_layers"]) < 1e-3


# ---- calibration input ------------------------------------------------------------------------------------------

def _save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_calib_dir_with_grayscale_and_rgb_images_works(tmp_path):
    rng = np.random.default_rng(0)
    _save_png(tmp_path / "gray.png", rng.integers(0, 255, (40, 60), dtype=np.uint8))
    _save_png(tmp_path / "rgb.png", rng.integers(0, 255, (50, 50, 3), dtype=np.uint8))
    res = int8().apply(handle("onnx"), PassContext(calib_dir=str(tmp_path)))
    cal = res.extra["calibration"]
    assert cal["source"] == f"images:{tmp_path}" and cal["images"] == ["gray.png", "rgb.png"]
    assert res.sites_changed == 4


@pytest.mark.parametrize("setup, words", [
    (lambda d: None, "no images"),
    (lambda d: (d / "broken.jpg").write_bytes(b"not a jpeg"), "cannot read this image"),
    (lambda d: (d / "notes.txt").write_text("hello"), "no images"),
])
def test_bad_calib_dir_is_a_clear_error(tmp_path, setup, words):
    setup(tmp_path)
    with pytest.raises(RewriteError, match=words):
        int8().apply(handle("onnx"), PassContext(calib_dir=str(tmp_path)))
    with pytest.raises(RewriteError, match="does not exist"):
        int8().apply(handle("onnx"), PassContext(calib_dir=str(tmp_path / "nope")))


# ---- already quantized, tags, output ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_second_run_changes_nothing(fmt):
    h = handle(fmt)
    int8().apply(h, PassContext())
    counts = quantizer_counts(h)
    res = int8().apply(h, PassContext())
    assert res.sites_changed == 0
    assert all(s.decision.startswith("already quantized") for s in res.sites)
    assert quantizer_counts(h) == counts


def test_earlier_pass_tags_survive_on_ir():
    h = handle("ir")
    h.tag(["relu1"], "asym_interp")
    int8().apply(h, PassContext())
    assert h.tags()["relu1"] == "asym_interp"


def test_progress_goes_to_stderr_and_quiet_silences_it(capfd):
    int8().apply(handle("ir"), PassContext())
    out, err = capfd.readouterr()
    assert "Statistics collection" in err and "Statistics collection" not in out
    int8().apply(handle("ir"), PassContext(verbosity=-1))
    out, err = capfd.readouterr()
    assert "Statistics collection" not in err + out


def test_opset11_onnx_is_upgraded_for_per_channel_weights():
    m = make_net()
    m.opset_import[0].version = 11
    h = ModelHandle.load(m)
    res = int8().apply(h, PassContext())
    assert h.onnx.opset_import[0].version == 13 and any("converted to 13" in n for n in res.notes)
    scale = next(i for i in h.onnx.graph.initializer if i.name == "scale_w0_1")
    assert list(scale.dims) == [8]  # one scale per output channel
    run(h, feeds(), "ort")


# ---- real exports (slow) ---------------------------------------------------------------------------------------

def _absrel(a: ModelHandle, b: ModelHandle, feeds_: list) -> float:
    ra, rb = run(a, feeds_), run(b, feeds_)
    return float(np.mean([depth_metrics(next(iter(x.values())), next(iter(y.values())))["absrel"]
                          for x, y in zip(ra, rb)]))


@pytest.mark.slow
@pytest.mark.parametrize("name, op_counts", [
    ("small_ir_288x512", {"Convolution": 73, "GroupConvolution": 24}),
    ("small_ts17_288x512", {"Conv": 97}),
])
def test_small_midas_exports_quantize_and_run(name, op_counts):
    from fixtures import fixture_path

    h = ModelHandle.load(fixture_path(name))
    base = h.clone()
    res = build_passes(["int8"])[0].apply(h, PassContext(verbosity=-1))
    assert res.extra["quantized_ops"] == op_counts and res.extra["kept_float"] == []
    assert res.extra["quantizers"]["weight"] == sum(op_counts.values())
    h.validate()
    val = calibration_set(base, None).feeds
    assert 0 < _absrel(base, h, val) < 0.2  # seeded weights: ~0.10 here (informal CPU speed-up 1.5-1.8x)
    if h.format == "onnx":
        run(h, val[:1], "ort")


@pytest.mark.slow
def test_accuracy_control_on_small_ir_keeps_layers_float():
    """The all-INT8 drop, minus 3%, as max_drop: NNCF must revert at least one layer and meet it."""
    from fixtures import fixture_path

    path = fixture_path("small_ir_256x256")
    base = ModelHandle.load(path)
    val = calibration_set(base, None).feeds
    plain = base.clone()
    build_passes(["int8"])[0].apply(plain, PassContext(verbosity=-1))
    max_drop = 0.97 * _absrel(base, plain, val)
    h = base.clone()
    res = build_passes(["int8"], {"int8": {"max_drop": max_drop, "max_float_layers": 5}})[0].apply(
        h, PassContext(verbosity=-1))
    acc = res.extra["accuracy_control"]
    assert len(res.extra["kept_float"]) >= 1 and res.sites_changed > 80
    assert acc["met"] and _absrel(base, h, val) <= max_drop


def _compressed_ir(activation_fq: bool):
    """x → [FakeQuantize] → Convolution whose weights are NNCF's compressed form (i8 Constant → Convert →
    Multiply); the FakeQuantize is optional."""
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    a = x
    if activation_fq:
        lo, hi = ops.constant(np.float32(-1)), ops.constant(np.float32(1))
        a = ops.fake_quantize(x, lo, hi, lo, hi, 256, name="fq_x")
    wq = ops.constant(np.ones((4, 4, 1, 1), np.int8), name="w_i8")
    w = ops.multiply(ops.convert(wq, np.float32), ops.constant(np.full((4, 1, 1, 1), 0.1, np.float32)))
    y = ops.convolution(a, w, [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
    return ModelHandle.load(ov.Model([y], [x], "compressed"))


@pytest.mark.parametrize("fq", [False, True])
def test_quantizers_read_through_the_view(fq):
    """Compressed IR weights and FakeQuantize activations, counted from the graph view (ONNX QDQ: above)."""
    h = _compressed_ir(fq)
    want = {"activation": 1, "weight": 1, "FakeQuantize": 1} if fq else {"activation": 0, "weight": 1}
    assert quantizer_counts(h) == want
    assert already_quantized(h) == ("already quantized (1 FakeQuantize)" if fq
                                    else "already quantized (1 int8/int4 compressed weights)")
    assert op_quantization(h)["conv"] == {"op": "Convolution", "activations": fq, "weights": True}
