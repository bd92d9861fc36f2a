"""interp_deconv: the transposed-conv plan is exact (numpy, onnxruntime, OpenVINO, onnx.reference), sites parse
in every exporter form, quantization nodes stay, and a second run changes nothing.

Also home of the small graph builders the asym_interp tests share (every Resize/Interpolate form).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from rewriter.interp import (
    deconv_plan,
    find_sites,
    grid_shift,
    interp_matrix,
    linear_stencil,
    source_coordinates,
)
from rewriter.model import ModelHandle
from rewriter.passbase import WILL_CHANGE, PassContext, load_passes
from rewriter.runtime import Runner

PASSES = load_passes()
CTX = PassContext(targets=())  # no cost check: these tests are about what emit writes


# ---- builders ------------------------------------------------------------------------------------------------
def resize_model(shape=(1, 3, 5, 7), scales=(2, 2), coord="asymmetric", mode="linear", opset=17,
                 form="scales", name="resize", dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """x → Resize → y, in the forms exporters emit.

    form: "roi" (opset 11 TorchScript: Constant empty roi + Constant scales), "scales" (opset 13+: no roi,
    scales initializer), "dynamo" (initializer scales + antialias/keep_aspect_ratio_policy attributes),
    "sizes" (constant sizes), "computed" (sizes = Concat(Shape(x)[:2], Shape(x)[2:] * scales)).
    """
    n, c, h, w = shape
    full = np.array([1, 1, *scales], np.float32)
    out_shape = [n, c, h * scales[0], w * scales[1]]
    nodes, inits = [], []
    attrs = {"mode": mode}
    if not (opset < 11):
        attrs["coordinate_transformation_mode"] = coord
    if form == "roi":
        nodes += [helper.make_node("Constant", [], ["roi"], value=numpy_helper.from_array(np.zeros(0, np.float32))),
                  helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(full))]
        ins = ["x", "roi", "scales"]
    elif form in ("scales", "dynamo"):
        inits.append(numpy_helper.from_array(full, "scales"))
        ins = ["x", "", "scales"] if opset >= 11 else ["x", "scales"]
        if form == "dynamo":
            attrs.update(antialias=0, keep_aspect_ratio_policy="stretch", exclude_outside=0,
                         extrapolation_value=0.0, nearest_mode="floor", cubic_coeff_a=-0.75)
    elif form == "sizes":
        inits.append(numpy_helper.from_array(np.array(out_shape, np.int64), "sizes"))
        ins = ["x", "", "", "sizes"]
    elif form == "computed":
        inits += [numpy_helper.from_array(np.array([0], np.int64), "i0"),
                  numpy_helper.from_array(np.array([2], np.int64), "i2"),
                  numpy_helper.from_array(np.array([4], np.int64), "i4"),
                  numpy_helper.from_array(np.array(scales, np.int64), "sc")]
        nodes += [helper.make_node("Shape", ["x"], ["shp"], name="shape"),
                  helper.make_node("Slice", ["shp", "i0", "i2"], ["nc"], name="slice_nc"),
                  helper.make_node("Slice", ["shp", "i2", "i4"], ["hw"], name="slice_hw"),
                  helper.make_node("Mul", ["hw", "sc"], ["hw2"], name="mul"),
                  helper.make_node("Concat", ["nc", "hw2"], ["sizes"], axis=0, name="concat")]
        ins = ["x", "", "", "sizes"]
    else:
        raise ValueError(form)
    nodes.append(helper.make_node("Resize", ins, ["y"], name=name, **attrs))
    g = helper.make_graph(nodes, "resize", [helper.make_tensor_value_info("x", dtype, list(shape))],
                          [helper.make_tensor_value_info("y", dtype, out_shape)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return m


def ir_interp_model(shape=(1, 3, 5, 7), scales=(2, 2), coord="asymmetric", mode="linear_onnx", version=11,
                    calc="scales", computed=False, name="interp", dynamic_hw=False):
    """Parameter → Interpolate (v4 or v11) → Result; sizes may be a computed ShapeOf chain."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.utils.node_factory import NodeFactory

    pshape = [shape[0], shape[1], -1, -1] if dynamic_hw else list(shape)
    p = ops.parameter(pshape, np.float32, name="x")
    axes = ops.constant(np.array([2, 3], np.int64))
    sc = ops.constant(np.array(scales, np.float32))
    if computed:
        hw = ops.gather(ops.shape_of(p), ops.constant(np.array([2, 3], np.int64)), ops.constant(np.int64(0)))
        sizes = ops.multiply(hw, ops.constant(np.array(scales, np.int64)))
    else:
        sizes = ops.constant(np.array([shape[2] * scales[0], shape[3] * scales[1]], np.int64))
    attrs = dict(mode=mode, shape_calculation_mode=calc, coordinate_transformation_mode=coord,
                 nearest_mode="floor", antialias=False, pads_begin=[0, 0, 0, 0], pads_end=[0, 0, 0, 0],
                 cube_coeff=-0.75)
    if version == 4:
        node = NodeFactory("opset4").create("Interpolate", [p.output(0), sizes.output(0), sc.output(0),
                                                            axes.output(0)], attrs)
    else:
        second = sc if calc == "scales" else sizes
        node = NodeFactory("opset11").create("Interpolate", [p.output(0), second.output(0), axes.output(0)],
                                             {k: v for k, v in attrs.items()})
    node.set_friendly_name(name)
    node.output(0).set_names({"y"})
    return ov.Model([node.output(0)], [p], "interp")


def qdq_resize_model(coord="asymmetric", shape=(1, 4, 6, 5)) -> onnx.ModelProto:
    """x → Q → DQ → Resize x2 → Q → DQ → Conv 1x1: a QDQ-quantized upsample."""
    rng = np.random.default_rng(1)
    n, c, h, w = shape
    inits = [numpy_helper.from_array(np.float32(0.02), "s"), numpy_helper.from_array(np.uint8(128), "z"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array((rng.standard_normal((2, c, 1, 1)) * 0.3).astype(np.float32), "w")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq0"),
             helper.make_node("Resize", ["xd", "", "scales"], ["up"], mode="linear",
                              coordinate_transformation_mode=coord, name="resize"),
             helper.make_node("QuantizeLinear", ["up", "s", "z"], ["uq"], name="q1"),
             helper.make_node("DequantizeLinear", ["uq", "s", "z"], ["ud"], name="dq1"),
             helper.make_node("Conv", ["ud", "w"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, 2, 2 * h, 2 * w])],
                          initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])


def fq_interp_ir(coord="asymmetric", shape=(1, 4, 6, 5)):
    """Parameter → FakeQuantize → Interpolate x2 → FakeQuantize → Convolution 1x1 (an INT8-style IR)."""
    import openvino as ov
    import openvino.opset13 as ops

    rng = np.random.default_rng(2)
    p = ops.parameter(list(shape), np.float32, name="x")

    def fq(x, name):
        lo, hi = ops.constant(np.float32(-2.5)), ops.constant(np.float32(2.5))
        return ops.fake_quantize(x, lo, hi, lo, hi, 256, name=name)

    a = fq(p, "fq_in")
    up = ops.interpolate(a, ops.constant(np.array([2, 2], np.float32)), "linear_onnx", "scales",
                         axes=ops.constant(np.array([2, 3], np.int64)), coordinate_transformation_mode=coord,
                         name="interp")
    b = fq(up, "fq_out")
    conv = ops.convolution(b, ops.constant((rng.standard_normal((2, shape[1], 1, 1)) * 0.3).astype(np.float32)),
                           [1, 1], [0, 0], [0, 0], [1, 1], name="conv")
    conv.output(0).set_names({"y"})
    return ov.Model([conv.output(0)], [p], "fq")


def feed(shape, seed=0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def ort_run(m: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if not optimize:  # no QDQ fusion: ops run in float between the quantizers, as the graph says
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def ov_run(h: ModelHandle, x: np.ndarray) -> np.ndarray:
    r = Runner(h, "ov")
    return next(iter(r.run({h.inputs()[0][0]: x}).values()))


def ref_run(m: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(m).run(None, {"x": x})[0]


def rel_err(ref: np.ndarray, out: np.ndarray) -> float:
    """max |out - ref| relative to the reference's value range (the issue's exactness criterion)."""
    assert ref.shape == out.shape, (ref.shape, out.shape)
    span = float(np.ptp(ref)) or 1.0
    return float(np.max(np.abs(out.astype(np.float64) - ref))) / span


def deconv(h: ModelHandle, **opts):
    return PASSES["interp_deconv"](**opts).apply(h, CTX)


# ---- the math ---------------------------------------------------------------------------------------------------
def conv_transpose_1d(x: np.ndarray, kernel, stride: int) -> np.ndarray:
    k = np.asarray(kernel)
    y = np.zeros((len(x) - 1) * stride + len(k))
    for j, v in enumerate(x):
        y[j * stride: j * stride + len(k)] += v * k
    return y


@given(st.sampled_from(["asymmetric", "half_pixel", "pytorch_half_pixel", "half_pixel_symmetric"]),
       st.integers(1, 8), st.integers(1, 12))
@settings(max_examples=40, deadline=None)
def test_stencil_equals_interpolation_matrix(mode, s, n):
    """Pad(edge) → transposed conv → crop equals Resize's clamped linear interpolation, in numpy."""
    plan = linear_stencil(s, mode)
    x = feed(n, seed=n).astype(np.float64)
    y = conv_transpose_1d(np.pad(x, (plan.pad_begin, plan.pad_end), mode="edge"), plan.kernel, s)
    y = y[plan.crop_begin: len(y) - plan.crop_end]
    assert len(y) == plan.output_length(n) == s * n
    np.testing.assert_allclose(y, interp_matrix(n, s * n, mode, s) @ x, atol=1e-12)


def test_stencil_shapes_and_weights():
    a2, h2, h3 = linear_stencil(2, "asymmetric"), linear_stencil(2, "half_pixel"), linear_stencil(3, "half_pixel")
    assert a2.kernel == (0.5, 1.0, 0.5) and (a2.pad_begin, a2.pad_end) == (0, 1)
    assert h2.kernel == (0.25, 0.75, 0.75, 0.25) and (h2.pad_begin, h2.pad_end) == (1, 1)
    assert len(h3.kernel) == 5 and len(linear_stencil(4, "half_pixel").kernel) == 8
    assert linear_stencil(1, "half_pixel").kernel == (1.0,)
    plan = deconv_plan([2, 4], "asymmetric")
    assert plan.kernel_shape == [3, 7] and plan.weights(5).shape == (5, 1, 3, 7)
    with pytest.raises(ValueError, match="fixed stencil"):
        linear_stencil(2, "align_corners")
    with pytest.raises(ValueError, match="integer"):
        linear_stencil(1.5, "asymmetric")


@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "align_corners", "pytorch_half_pixel",
                                   "half_pixel_symmetric"])
def test_interp_matrix_matches_onnxruntime_and_reference(coord):
    x = feed((1, 2, 5, 6))
    m = resize_model((1, 2, 5, 6), (2, 3), coord, opset=19)
    ours = np.einsum("oh,nchw,pw->ncop", interp_matrix(5, 10, coord, 2), x, interp_matrix(6, 18, coord, 3))
    assert rel_err(ort_run(m, x), ours) < 1e-6
    assert rel_err(ref_run(m, x), ours) < 1e-6


def test_source_coordinates_and_grid_shift():
    np.testing.assert_allclose(source_coordinates("align_corners", 3, 6), [0, 0.4, 0.8, 1.2, 1.6, 2.0])
    np.testing.assert_allclose(source_coordinates("half_pixel", 3, 6, 2), [-0.25, 0.25, 0.75, 1.25, 1.75, 2.25])
    assert grid_shift(8, 2, "asymmetric", "asymmetric") == 0.0
    # align_corners → asymmetric at x2: the grid drifts towards half a pixel, never more
    shift = grid_shift(64, 2, "align_corners", "asymmetric")
    assert 0.45 < shift <= 0.5


# ---- exactness on runtimes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel"])
@pytest.mark.parametrize("hw", [(5, 7), (6, 8)])
def test_onnx_exact_in_ort_ov_and_reference(scale, coord, hw):
    shape = (1, 3, *hw)
    m = resize_model(shape, (scale, scale), coord)
    x = feed(shape)
    y_ort, y_ref = ort_run(m, x), ref_run(m, x)
    y_ov = ov_run(ModelHandle.load(m), x)
    h = ModelHandle.load(m)
    res = deconv(h)
    assert res.sites_changed == 1
    assert h.op_types() == {"ConvTranspose": 1, "Pad": 1}
    h.validate()
    for before, runner in ((y_ort, ort_run), (y_ref, ref_run)):
        assert rel_err(before, runner(h.onnx, x)) <= 1e-5
    assert rel_err(y_ov, ov_run(h, x)) <= 1e-5
    assert rel_err(y_ort, ov_run(h, x)) <= 1e-5


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "pytorch_half_pixel"])
@pytest.mark.parametrize("hw", [(5, 7), (6, 8)])
def test_ir_exact(scale, coord, hw):
    shape = (1, 3, *hw)
    h = ModelHandle.load(ir_interp_model(shape, (scale, scale), coord))
    x = feed(shape)
    before = ov_run(h, x)
    res = deconv(h)
    assert res.sites_changed == 1 and res.sites[0].details["plan"]["strides"] == [scale, scale]
    assert h.op_types() == {"GroupConvolutionBackpropData": 1, "Pad": 1}
    h.validate()
    assert rel_err(before, ov_run(h, x)) <= 1e-5
    # the same numbers as the ONNX reference implementation of Resize
    ref_coord = "half_pixel" if coord == "pytorch_half_pixel" else coord
    assert rel_err(ref_run(resize_model(shape, (scale, scale), ref_coord), x), ov_run(h, x)) <= 1e-5


@pytest.mark.parametrize("form,opset", [("roi", 11), ("scales", 13), ("dynamo", 18), ("sizes", 17),
                                        ("computed", 17)])
def test_every_onnx_form(form, opset):
    m = resize_model((1, 2, 5, 6), (2, 2), "half_pixel", opset=opset, form=form)
    [site] = find_sites(ModelHandle.load(m))
    assert site.integer_scales() == [2, 2] and site.channels == 2
    assert site.scale_source == ("sizes" if form in ("sizes", "computed") else "scales")
    x = feed((1, 2, 5, 6))
    h = ModelHandle.load(m)
    assert deconv(h).sites_changed == 1
    # the scales/roi constants and the sizes chain went with the Resize
    assert h.op_types() == {"ConvTranspose": 1, "Pad": 1}
    assert {i.name for i in h.onnx.graph.initializer} == {"resize/edge_pad_pads", "resize.weight"}
    assert rel_err(ort_run(m, x), ort_run(h.onnx, x)) <= 1e-5


@pytest.mark.parametrize("version,calc,computed", [(4, "scales", False), (4, "sizes", True), (11, "sizes", False),
                                                    (11, "sizes", True)])
def test_every_ir_form(version, calc, computed):
    m = ir_interp_model((1, 2, 5, 6), (2, 2), "pytorch_half_pixel", mode="linear" if version == 4 else "linear_onnx",
                        version=version, calc=calc, computed=computed)
    h = ModelHandle.load(m)
    [site] = find_sites(h)
    assert site.version == f"opset{version}" and site.integer_scales() == [2, 2]
    x = feed((1, 2, 5, 6))
    before = ov_run(h, x)
    assert deconv(h).sites_changed == 1
    assert rel_err(before, ov_run(h, x)) <= 1e-5
    assert "Interpolate" not in h.op_types()


def test_ir_dynamic_spatial_scales_mode():
    """Constant integer scales are enough: the plan does not depend on the input size."""
    h = ModelHandle.load(ir_interp_model((1, 3, 5, 7), (2, 2), "half_pixel", dynamic_hw=True))
    ref = h.clone()
    assert deconv(h).sites_changed == 1
    for hw in ((5, 7), (8, 3)):
        x = feed((1, 3, *hw))
        assert rel_err(ov_run(ref, x), ov_run(h, x)) <= 1e-5


def test_onnx_fp16_and_tensor_names_kept(tmp_path):
    m = resize_model((1, 2, 4, 4), (2, 2), "asymmetric", dtype=TensorProto.FLOAT16)
    h = ModelHandle.load(m)
    deconv(h)
    w = next(i for i in h.onnx.graph.initializer if i.name.endswith(".weight"))
    assert w.data_type == TensorProto.FLOAT16
    assert h.outputs() == ["y"]
    x = feed((1, 2, 4, 4), dtype=np.float16)
    np.testing.assert_allclose(ort_run(h.onnx, x).astype(np.float32), ort_run(m, x).astype(np.float32),
                               atol=2e-3)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 2), c=st.integers(1, 6), h=st.integers(1, 9), w=st.integers(1, 9),
       sh=st.sampled_from([1, 2, 3, 4]), sw=st.sampled_from([1, 2, 3, 4]),
       coord=st.sampled_from(["asymmetric", "half_pixel", "pytorch_half_pixel"]),
       form=st.sampled_from(["roi", "scales", "sizes"]))
def test_property_exact_on_random_cases(n, c, h, w, sh, sw, coord, form):
    if sh == sw == 1:
        sh = 2
    shape = (n, c, h, w)
    m = resize_model(shape, (sh, sw), coord, opset=11 if form == "roi" else 17, form=form)
    x = feed(shape, seed=h * 100 + w)
    y_ort = ort_run(m, x)
    y_ov = ov_run(ModelHandle.load(m), x)
    hd = ModelHandle.load(m)
    assert deconv(hd).sites_changed == 1
    assert rel_err(y_ort, ort_run(hd.onnx, x)) <= 1e-5
    assert rel_err(y_ov, ov_run(hd, x)) <= 1e-5


# ---- decisions ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,reason", [
    ({"coord": "align_corners"}, "run asym_interp first"),
    ({"mode": "nearest"}, "nearest mode: not bilinear"),
    ({"mode": "cubic"}, "cubic mode"),
    ({"scales": (1, 1)}, "scale 1 on every axis"),
])
def test_skip_reasons(kwargs, reason):
    h = ModelHandle.load(resize_model(**kwargs))
    [site] = PASSES["interp_deconv"]().match(h, CTX)
    assert reason in site.decision
    assert deconv(h).sites_changed == 0 and h.op_types() == {"Resize": 1}


def test_skip_non_integer_and_dynamic_channels():
    m = resize_model((1, 3, 4, 4), (2, 2))
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([1, 1, 1.5, 2], np.float32), "scales"))
    m.graph.output[0].type.tensor_type.shape.dim[2].dim_value = 6
    [site] = PASSES["interp_deconv"]().match(ModelHandle.load(m), CTX)
    assert "not an integer" in site.decision
    m = resize_model((1, 3, 4, 4), (2, 2))
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    m.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "C"
    [site] = PASSES["interp_deconv"]().match(ModelHandle.load(m), CTX)
    assert "channel count is dynamic" in site.decision


def test_name_filters():
    h = ModelHandle.load(resize_model(name="decoder/up"))
    assert "does not match include" in PASSES["interp_deconv"](include="head").match(h, CTX)[0].decision
    assert "matches exclude" in PASSES["interp_deconv"](exclude="^decoder").match(h, CTX)[0].decision
    assert PASSES["interp_deconv"](include="up$").match(h, CTX)[0].decision == WILL_CHANGE


def test_legacy_upsample_is_asymmetric_and_exact():
    """Opset-9 Upsample has no coordinate mode: it is asymmetric, so it converts exactly."""
    shape = (1, 2, 5, 4)
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="linear", name="up")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 10, 8])],
                          initializer=[numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    x = feed(shape)
    h = ModelHandle.load(m)
    assert deconv(h).sites_changed == 1
    assert rel_err(ort_run(m, x), ort_run(h.onnx, x)) <= 1e-5


# ---- quantized inputs, idempotence, tags ------------------------------------------------------------------------
def test_qdq_onnx_keeps_quantizers():
    m = qdq_resize_model("half_pixel")
    h = ModelHandle.load(m)
    assert deconv(h).sites_changed == 1
    ops = h.op_types()
    assert ops["QuantizeLinear"] == 2 and ops["DequantizeLinear"] == 2 and "Resize" not in ops
    x = feed((1, 4, 6, 5))
    # the upsampled float tensor between the quantizers is exact (onnxruntime and onnx.reference) ...
    def up(model):
        return Runner(ModelHandle.load(model), "ort", taps=["up"]).run({"x": x})["up"]

    assert rel_err(up(m), up(h.onnx)) <= 1e-5
    from onnx.reference import ReferenceEvaluator

    assert rel_err(*(ReferenceEvaluator(g).run(["up"], {"x": x})[0] for g in (m, h.onnx))) <= 1e-5
    # ... but requantizing it puts many values exactly on rounding ties (means of 8-bit levels), where a
    # 1-ulp float difference may pick the other level: the output moves by at most one step through the conv
    step = 0.02 * float(np.abs(numpy_helper.to_array(m.graph.initializer[3])).sum(axis=(1, 2, 3)).max())
    assert np.max(np.abs(ort_run(m, x) - ort_run(h.onnx, x))) <= step * 1.001
    # the transposed conv reads the dequantized tensor and feeds the same QuantizeLinear
    q1 = next(n for n in h.onnx.graph.node if n.name == "q1")
    assert q1.input[0] == "up"


def test_fakequantize_ir_keeps_quantizers():
    h = ModelHandle.load(fq_interp_ir("asymmetric"))
    x = feed((1, 4, 6, 5))

    def run(model):  # the upsampled tensor (the transposed conv keeps the Interpolate's name) and the output
        out = Runner(model, "ov", taps=["interp:0"]).run({"x": x})
        return out["interp:0"], out["y"]

    up0, y0 = run(h)
    assert deconv(h).sites_changed == 1
    assert h.op_types()["FakeQuantize"] == 2 and "Interpolate" not in h.op_types()
    up1, y1 = run(h)
    assert rel_err(up0, up1) <= 1e-5
    # requantization ties may flip one level (see the QDQ test): at most one step through the 1x1 conv
    w = next(op for op in h.ov.get_ops() if op.get_friendly_name() == "conv").input_value(1).get_node()
    step = 5.0 / 255 * float(np.abs(w.get_data()).sum(axis=(1, 2, 3)).max())
    assert np.max(np.abs(y0 - y1)) <= step * 1.001


@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_idempotent_tagged_and_saved(fmt, tmp_path):
    m = resize_model((1, 3, 5, 7), (2, 2), "half_pixel") if fmt == "onnx" else ir_interp_model()
    h = ModelHandle.load(m)
    res = deconv(h)
    name = "resize" if fmt == "onnx" else "interp"
    assert set(res.new_nodes) == {name, f"{name}/edge_pad"}
    assert h.tags() == {name: "interp_deconv", f"{name}/edge_pad": "interp_deconv"}
    assert deconv(h).sites_changed == 0
    out = h.save(tmp_path / ("m.onnx" if fmt == "onnx" else "m.xml"))
    again = ModelHandle.load(out)
    assert deconv(again).sites_changed == 0 and again.tags() == h.tags()


def test_after_asym_interp_removes_every_bilinear_site():
    """The conformance graph: align_corners is skipped until asym_interp ran, then exactly replaced."""
    from conftest import make_tiny

    h = ModelHandle.load(make_tiny("align_corners"))
    assert "asym_interp" in deconv(h).sites[0].decision
    PASSES["asym_interp"]().apply(h, CTX)
    asym = h.clone()
    assert deconv(h).sites_changed == 1 and "Resize" not in h.op_types()
    x = feed((1, 8, 16, 16))
    assert rel_err(ort_run(asym.onnx, x), ort_run(h.onnx, x)) <= 1e-5


def test_explain_shows_where_the_resize_and_its_deconv_run(tmp_path, capsys):
    """Every interp_deconv site carries the resize's engine per target (the compiler's lowering rule) and the
    transposed conv's (DPU on the NPUs), in the JSON details and in the --explain text."""
    from rewriter.cli import main

    m = tmp_path / "a32.onnx"
    onnx.save(resize_model((1, 32, 16, 16), (2, 2), "asymmetric"), str(m))
    assert main(["--explain", "--json", "--passes", "interp_deconv", "--target", "kmb", "--target", "mtl",
                 "--target", "cpu", str(m)]) == 0
    import json

    [site] = json.loads(capsys.readouterr().out)["passes"][0]["sites"]
    d = site["details"]
    assert set(d["engine_before"]) == set(d["engine_after"]) == {"kmb", "mtl", "cpu"}
    assert all(d["engine_after"][t]["engine"] == "dpu" for t in ("kmb", "mtl")) and d["engine_before"]["mtl"]["rule"]
    assert d["engine_before"]["cpu"]["engine"] == d["engine_after"]["cpu"]["engine"] == "cpu"
    assert main(["--explain", "--passes", "interp_deconv", "--target", "mtl", str(m)]) == 0
    assert "engine: mtl " in capsys.readouterr().out
