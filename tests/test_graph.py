"""rewriter.graph: one view over both formats (ids, kinds, constants, shapes, types) and the editors."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from graphs import FORMATS, feed, handle

from rewriter.graph import editor, parse_input_shape, view
from rewriter.model import ModelHandle
from rewriter.runtime import run


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    return request.param


def test_kinds_ids_shapes_and_resize_semantics(fmt):
    v = view(handle("head", fmt))
    kinds = [n.kind for n in v.of_kind("conv", "pointwise", "resize")]
    assert kinds == ["conv", "resize", "conv", "resize", "pointwise"]
    up1, up2 = v.of_kind("resize")
    if fmt == "onnx":  # the parser's nodes are unnamed: one scheme, "<op>:<first output>"
        assert (up1.id, up2.id) == ("Resize:u1", "Resize:u2")
    r1, r2 = up1.attrs["resize"].get(), up2.attrs["resize"].get()
    assert (r1.mode, r1.coordinate_mode, r1.scales) == ("linear", "align_corners", [1, 1, 2, 2])
    assert r2.coordinate_mode == "half_pixel"
    assert v.static_shape(up1.outputs[0]) == [1, 32, 24, 24] and v.dtype(up1.outputs[0]) == np.float32
    conv = v.of_kind("conv")[0]
    assert v.weight(conv).shape == (32, 32, 3, 3) and v.bias(conv).shape == (32,)
    assert [u.id for u, _ in v.users(conv.outputs[0])] or fmt == "ir"  # IR: the bias Add reads it


def test_view_is_cached_until_an_edit(fmt):
    h = handle("head", fmt)
    v = view(h)
    assert view(h) is v
    ed = editor(h)
    ed.set_attr(v.of_kind("resize")[0].id, "coordinate_mode", "asymmetric")
    ed.commit()
    v2 = view(h)
    assert v2 is not v and v2.of_kind("resize")[0].attrs["resize"].get().coordinate_mode == "asymmetric"


def test_onnx_shape_chain_is_folded():
    m = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,5,7] x) => (float[1,3,10,14] y) {
        s = Shape (x)
        hw = Slice (s, starts, ends)
        two = Constant <value = int64[2] {2, 2}> ()
        hw2 = Mul (hw, two)
        nc = Slice (s, zero, starts)
        sizes = Concat <axis = 0> (nc, hw2)
        y = Resize <mode = "linear"> (x, , , sizes)
    }""".replace("starts, ends", "c2, c4").replace("zero, starts", "c0, c2").replace(
        "s = Shape (x)", "s = Shape (x)\n c0 = Constant <value = int64[1] {0}> ()\n"
        " c2 = Constant <value = int64[1] {2}> ()\n c4 = Constant <value = int64[1] {4}> ()"))
    v = view(ModelHandle.load(m))
    sizes = v.const(v.of_kind("resize")[0].inputs[3])
    assert sizes.tolist() == [1, 3, 10, 14]
    assert v.of_kind("resize")[0].attrs["resize"].get().scales == [1, 1, 2, 2]


def test_input_shape_pins_dynamic_dims():
    m = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,H,W] x, float[4,3,3,3] w) => (float[1,4,H,W] y) { y = Conv <pads = [1, 1, 1, 1]> (x, w) }""")
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w"))
    del m.graph.input[1]
    h = ModelHandle.load(m)
    assert view(h).shape("y")[2:] == [None, None]
    pinned = parse_input_shape("1,3,288,512", h)
    assert pinned == {"x": [1, 3, 288, 512]} and view(h, pinned).static_shape("y") == [1, 4, 288, 512]
    with pytest.raises(Exception, match="no input 'z'"):
        parse_input_shape("z:1,3,8,8", h)


@pytest.mark.parametrize("precision", ["f16", "f16c"])
def test_ir_constants_keep_the_element_type_they_join(precision):
    h = handle("head", "ir", precision)
    v = view(h)
    conv = v.of_kind("conv")[0]
    ed = editor(h)
    ed.set_const(conv.id, 1, v.weight(conv) * 0)  # zero the first conv: the output is then constant
    ed.commit()
    consts = [op for op in h.ov.get_ops() if op.get_type_name() == "Constant" and op.get_friendly_name() == "w1"
              or op.get_friendly_name() == "w1_compressed"]
    assert consts and all(op.get_output_element_type(0).get_type_name() == "f16" for op in consts)
    h.validate()
    ys = run(h, [feed(h, 1), feed(h, 2)])
    assert np.allclose(ys[0]["y"], ys[1]["y"])
