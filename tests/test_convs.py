"""rewriter.convs: conv sites read the same way in ONNX, FP32 IR and FP16-compressed IR, and written back."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from rewriter.convs import convs, write_conv
from rewriter.model import ModelHandle
from rewriter.refit import conv_on_patches, cross_validate_conv, fit_conv_patches, rel_l2
from rewriter.runtime import run

RNG = np.random.default_rng(0)
W1 = (RNG.standard_normal((6, 4, 3, 3)) * 0.3).astype(np.float32)
B1 = RNG.standard_normal(6).astype(np.float32)
W2 = (RNG.standard_normal((6, 3, 3, 3)) * 0.3).astype(np.float32)  # groups=2: 6 in → 6 out


def two_convs(dtype=np.float32, shared: bool = False) -> onnx.ModelProto:
    """x → conv1 (initializer weights + bias) → conv2 (groups=2, weights via Constant → Identity, no bias).

    ``shared``: conv2 instead reads conv1's weight initializer, from ``x``."""
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(W1.astype(dtype), "w1"), numpy_helper.from_array(B1.astype(dtype), "b1")]
    if shared:  # conv2 reads the same weight initializer as conv1, from the same input
        nodes.append(helper.make_node("Conv", ["x", "w1"], ["y"], name="conv2", pads=[1, 1, 1, 1]))
    else:
        nodes = [helper.make_node("Constant", [], ["w2"], name="w2_const",
                                  value=numpy_helper.from_array(W2.astype(dtype), "w2")),
                 helper.make_node("Identity", ["w2"], ["w2_id"], name="w2_identity"), *nodes,
                 helper.make_node("Conv", ["c1", "w2_id"], ["y"], name="conv2", pads=[1, 1, 1, 1], group=2)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", elem, [1, 4, 10, 10])],
                          [helper.make_tensor_value_info("y", elem, [1, 6, 10, 10])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def feeds(model: ModelHandle, dtype=np.float32):
    return [{"x": np.random.default_rng(3).standard_normal((1, 4, 10, 10)).astype(dtype)}]


def out(model: ModelHandle) -> np.ndarray:
    dtype = model.inputs()[0][2]
    return next(iter(run(model, feeds(model, dtype), "ov")[0].values()))


def ir_of(tmp_path, proto: onnx.ModelProto, fp16: bool) -> ModelHandle:
    """The IR ``ov.convert_model`` makes (constants folded, as in saved IRs), optionally FP16-compressed."""
    import openvino as ov

    onnx.save(proto, tmp_path / "m.onnx")
    h = ModelHandle.load(ov.convert_model(str(tmp_path / "m.onnx")))
    if not fp16:
        return h
    h.save(tmp_path / "m.xml", compress_to_fp16=True)
    return ModelHandle.load(tmp_path / "m.xml")


def onnx_convs(m) -> list:
    """The convs of a proto or handle, read through a fresh graph view."""
    return convs(m if isinstance(m, ModelHandle) else ModelHandle(m))


def by_name(model: ModelHandle):
    """(conv1, conv2) of :func:`two_convs` in an IR."""
    found = {c.in_tap == "x": c for c in convs(model)}
    return found[True], found[False]


# ---- ONNX ----------------------------------------------------------------------------------------------------
def test_onnx_reads_weights_bias_groups_and_taps_through_identity():
    m = two_convs()
    c1, c2 = onnx_convs(m)
    assert (c1.name, c1.in_tap, c1.out_tap, c1.biased_tap, c1.groups) == ("conv1", "x", "c1", "c1", 1)
    np.testing.assert_array_equal(c1.weight, W1)
    np.testing.assert_array_equal(c1.bias, B1)
    assert c1.kernel == (3, 3) and c1.geometry().pads == (1, 1, 1, 1)
    assert (c2.in_tap, c2.groups, c2.bias, c2.bias_dynamic, c2.quantizer) == ("c1", 2, None, False, None)
    np.testing.assert_array_equal(c2.weight, W2)  # Constant → Identity followed


def test_onnx_write_back_is_identical_and_new_values_run():
    h = ModelHandle.load(two_convs())
    y0 = out(h)
    before = {t.name: t.SerializeToString() for t in h.onnx.graph.initializer}
    c1 = onnx_convs(h.onnx)[0]
    write_conv(h, c1, c1.weight, c1.bias)
    assert {t.name: t.SerializeToString() for t in h.onnx.graph.initializer} == before  # sole user: in place
    # a bias round trip through new values, then back
    write_conv(h, c1, 2 * W1, B1 + 1)
    r1 = onnx_convs(h.onnx)[0]
    np.testing.assert_array_equal(r1.weight, 2 * W1)
    np.testing.assert_array_equal(r1.bias, B1 + 1)
    assert rel_l2(out(h), y0) > 0.1
    write_conv(h, r1, W1, B1)
    np.testing.assert_array_equal(out(h), y0)


def test_onnx_identity_fed_and_biasless_conv_gets_its_own_initializers():
    h = ModelHandle.load(two_convs())
    c2 = onnx_convs(h.onnx)[1]
    b = np.arange(6, dtype=np.float32)
    write_conv(h, c2, W2 * 3, b)
    node = next(n for n in h.onnx.graph.node if n.name == "conv2")
    assert list(node.input) == ["c1", "conv2/input1", "conv2/input2"]
    r2 = onnx_convs(h.onnx)[1]
    np.testing.assert_array_equal(r2.weight, W2 * 3)
    np.testing.assert_array_equal(r2.bias, b)
    h.validate()


def test_onnx_shared_weights_only_change_for_the_written_conv():
    h = ModelHandle.load(two_convs(shared=True))
    c1, c2 = onnx_convs(h.onnx)
    write_conv(h, c2, W1 * 0.5)
    n1, n2 = onnx_convs(h.onnx)
    np.testing.assert_array_equal(n1.weight, W1)
    np.testing.assert_array_equal(n2.weight, W1 * 0.5)
    assert n2.ref.inputs[1] == "conv2/input1"


def test_onnx_fp16_storage_is_kept():
    h = ModelHandle.load(two_convs(np.float16))
    c1, c2 = onnx_convs(h.onnx)
    assert c1.weight_dtype == np.float16 and c2.weight_dtype == np.float16
    write_conv(h, c1, c1.weight.astype(np.float32) * 2, c1.bias.astype(np.float32))
    write_conv(h, c2, c2.weight.astype(np.float32), np.ones(6, np.float32))  # new bias: f16 like the weights
    types = {t.name: t.data_type for t in h.onnx.graph.initializer}
    assert set(types.values()) == {TensorProto.FLOAT16}
    np.testing.assert_array_equal(onnx_convs(h.onnx)[0].weight, (W1.astype(np.float16) * 2))
    h.validate()


def test_onnx_quantized_and_computed_weights():
    q = numpy_helper.from_array(np.ones((6, 4, 3, 3), np.int8), "wq")
    nodes = [helper.make_node("DequantizeLinear", ["wq", "s"], ["wd"], name="dq"),
             helper.make_node("Conv", ["x", "wd"], ["c"], name="convq"),
             helper.make_node("Mul", ["x", "x"], ["xx"], name="mul"),
             helper.make_node("Conv", ["c", "wd", "bd"], ["y"], name="convd")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8]),
                                       helper.make_tensor_value_info("bd", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[q, numpy_helper.from_array(np.float32(0.1), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cq, cd = onnx_convs(m)
    assert cq.weight is None and cq.quantizer == "DequantizeLinear"
    assert cd.bias is None and cd.bias_dynamic


# ---- OpenVINO IR ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_ir_reads_weights_bias_add_and_group_conv(fp16, tmp_path):
    h = ir_of(tmp_path, two_convs(), fp16)
    assert any(op.get_type_name() == "Convert" for op in h.ov.get_ops()) == fp16
    c1, c2 = by_name(h)
    cast = (lambda a: a.astype(np.float16).astype(np.float32)) if fp16 else (lambda a: a)
    assert c1.op == "Convolution" and c1.weight_dtype == (np.float16 if fp16 else np.float32)
    np.testing.assert_array_equal(c1.weight, cast(W1))
    np.testing.assert_array_equal(c1.bias, cast(B1))
    assert c1.ref.attrs["bias_add"] and c1.biased_tap == f"{c1.ref.attrs['bias_add']}:0"
    assert c1.out_tap == f"{c1.name}:0" and c1.in_tap == "x"
    assert c2.op == "GroupConvolution" and c2.groups == 2 and c2.bias is None
    np.testing.assert_array_equal(c2.weight, cast(W2))
    assert c2.in_tap == c1.biased_tap  # conv2 reads the biased output
    assert c1.geometry((10, 10)).pads == (1, 1, 1, 1)


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_ir_write_back_identical_then_bias_round_trip(fp16, tmp_path):
    h = ir_of(tmp_path, two_convs(), fp16)
    y0 = out(h)
    ops_before = sorted(op.get_type_name() for op in h.ov.get_ops())
    for c in convs(h):
        write_conv(h, c, c.weight, c.bias)
    assert sorted(op.get_type_name() for op in h.ov.get_ops()) == ops_before  # f16 Constant → Convert kept
    np.testing.assert_array_equal(out(h), y0)
    c1, c2 = by_name(h)
    write_conv(h, c1, W1 * 2, B1 + 1)
    write_conv(h, c2, W2 * 0.5)
    r1, r2 = by_name(h)
    cast = (lambda a: a.astype(np.float16).astype(np.float32)) if fp16 else (lambda a: a)
    np.testing.assert_array_equal(r1.weight, cast(W1 * 2))
    np.testing.assert_array_equal(r1.bias, cast(B1 + 1))
    np.testing.assert_array_equal(r2.weight, cast(W2 * 0.5))
    assert r1.weight_dtype == r2.weight_dtype == (np.float16 if fp16 else np.float32)
    assert sorted(op.get_type_name() for op in h.ov.get_ops()) == ops_before
    # the model now computes what an ONNX model with those weights computes
    ref = two_convs()
    for t in ref.graph.initializer:
        t.CopyFrom(numpy_helper.from_array({"w1": cast(W1 * 2), "b1": cast(B1 + 1)}[t.name], t.name))
    ref.graph.node[0].attribute[0].t.CopyFrom(numpy_helper.from_array(cast(W2 * 0.5), "w2"))
    assert rel_l2(out(h), out(ModelHandle.load(ref))) < (1e-3 if fp16 else 1e-5)
    with pytest.raises(ValueError, match="no bias Add"):
        write_conv(h, r2, r2.weight, np.zeros(6, np.float32))


def test_ir_quantized_weights_and_replace_constant():
    import openvino as ov
    import openvino.opset13 as ops

    x = ops.parameter([1, 4, 8, 8], np.float32, name="x")
    wq = ops.convert(ops.constant(np.ones((6, 4, 3, 3), np.int8)), np.float32)
    wf = ops.constant(W1, name="wf")
    c_q = ops.convolution(x, wq, [1, 1], [0, 0], [0, 0], [1, 1], name="cq")
    c_f = ops.convolution(x, wf, [1, 1], [0, 0], [0, 0], [1, 1], name="cf")
    h = ModelHandle(ov.Model([ops.result(c_q), ops.result(c_f)], [x], "q"))
    found = {c.name: c for c in convs(h)}
    assert found["cq"].weight is None and found["cq"].quantizer == "Convert"
    write_conv(h, found["cf"], W1 * 3)
    assert any(op.get_friendly_name() == "wf" for op in h.ov.get_ops())  # the constant keeps its name
    np.testing.assert_array_equal(next(c for c in convs(h) if c.name == "cf").weight, W1 * 3)


# ---- the cross-validated ridge the compensation uses -------------------------------------------------------------
@pytest.mark.parametrize("groups,bias", [(1, True), (1, False), (2, True)])
def test_cross_validate_conv_matches_a_fit_per_fold(groups, bias):
    rng = np.random.default_rng(1)
    patches = (rng.standard_normal((600, 4, 3, 3)) + 1.5).astype(np.float32)  # offset: tests the centring
    w0 = (rng.standard_normal((4, 4 // groups, 3, 3)) * 0.3).astype(np.float32)
    y = (conv_on_patches(patches, w0 * 1.2, np.full(4, 0.3), groups)
         + rng.standard_normal((600, 4)) * 0.2).astype(np.float32)
    folds = np.repeat(np.arange(5), 120) % 3
    lams = (1e-2, 1.0, 100.0)
    got = cross_validate_conv(patches, y, folds, w0.shape, groups, lams, w0, bias)
    for lam in lams:
        pred = np.zeros(y.shape)
        for k in range(3):
            w, b = fit_conv_patches(patches[folds != k], y[folds != k], w0.shape, groups, lam, w0, bias)
            pred[folds == k] = conv_on_patches(patches[folds == k], w, b, groups)
        assert got[lam] == pytest.approx(rel_l2(pred, y), rel=1e-9)
    assert got[100.0] != pytest.approx(got[1e-2], rel=1e-3)  # the ridge strengths really differ
