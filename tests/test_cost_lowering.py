"""Resize placement on the NPUs, one test per compiler rule (mode x scale x channels), each citing its source.

Sources: openvinotoolkit/vpux_plugin (and npu_plugin for 30XX)
  [CBSC] src/vpux_compiler/src/dialect/IE/transforms/passes/convert_bilinear_to_strided_concat_and_conv.cpp
  [MBID] src/vpux_compiler/src/dialect/IE/transforms/passes/map_bilinear_interpolate_on_DPU.cpp
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from rewriter import ModelHandle
from rewriter.cost import predict, resize_lowering

NPUS = ("kmb", "mtl")


def _resize_model(coord: str, c: int, h: int, w: int, scale: int = 2, uses: int = 1) -> ModelHandle:
    """x[1,c,h,w] -> Resize(linear, coord, x scale) -> (uses readers)."""
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["up"], name="up", mode="linear",
                              coordinate_transformation_mode=coord)]
    outs = [helper.make_tensor_value_info("up", TensorProto.FLOAT, None)]
    for i in range(1, uses):
        nodes.append(helper.make_node("Relu", ["up"], [f"r{i}"], name=f"reader{i}"))
        outs.append(helper.make_tensor_value_info(f"r{i}", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])], outs,
                          [numpy_helper.from_array(np.array([1, 1, scale, scale], np.float32), "sc")])
    return ModelHandle(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))


def _row(coord, c, h, w, target, scale=2, uses=1):
    cost = predict(_resize_model(coord, c, h, w, scale, uses), target)
    return next(x for x in cost.layers if x.node == "up")


@pytest.mark.parametrize("target", NPUS)
@pytest.mark.parametrize("c", [16, 64])
def test_align_corners_x2_stays_on_shave(target, c):
    """[CBSC] legality: ALIGN_CORNERS converts only when (out-1) % (in-1) == 0 (E46240); out = 2*in fails it,
    and [MBID] isLegalInterpolateOp keeps it an Interpolate (SHAVE) while input+output fit CMX."""
    low = resize_lowering("linear", "align_corners", [1, c, 16, 24], [1, c, 32, 48], target)
    assert low.engine == "shave" and "not a fixed stencil" in low.rule and "convert_bilinear" in low.citation
    row = _row("align_corners", c, 16, 24, target)
    assert row.engine == "shave" and row.lowering["rule"] == low.rule


@pytest.mark.parametrize("target", NPUS)
def test_align_corners_exact_multiple_goes_to_dpu(target):
    """[CBSC] legality + BilinearInterpolateOpConverter (V1): (out-1) = 2*(in-1) is a fixed stencil: strided
    concat + depthwise conv k2 s1, on the DPU."""
    low = resize_lowering("linear", "align_corners", [1, 32, 9, 9], [1, 32, 17, 17], target)
    assert low.engine == "dpu" and "V1" in low.rule
    assert [o["op"] for o in low.ops] == ["copy", "dwconv"] and low.ops[1]["kernel"] == [2, 2]
    assert low.ops[1]["out"] == [1, 32, 17, 17]


@pytest.mark.parametrize("target", NPUS)
def test_align_corners_too_big_for_cmx_becomes_per_line_group_convs(target):
    """[MBID] isLegalInterpolateOp: an Interpolate whose input+output (elements) exceed the total CMX is mapped
    to one GroupConv per output line (scaleOnAxis); MiDaS's refinenet1 resize at 288x512 is such a case."""
    low = resize_lowering("linear", "align_corners", [1, 64, 72, 128], [1, 64, 144, 256], target)
    assert low.engine == "dpu" and "per-line GroupConvs" in low.rule and "map_bilinear" in low.citation
    lines = [o for o in low.ops if o["op"] == "gconv_lines"]
    assert [o["lines"] for o in lines] == [144, 256]


@pytest.mark.parametrize("target", NPUS)
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel"])
def test_half_pixel_x2_is_one_depthwise_k4_s2(target, coord):
    """[CBSC] BilinearInterpolateOpConverter (V1), PYTORCH_HALF_PIXEL / HALF_PIXEL even scale: strided concat x4,
    pad 1, depthwise conv kernel 2*scale = 4, stride 2 (lit test ConvertBilinearToStridedConcatAndConv_V1:
    1x20x96x176 -> concat 1x20x384x704 -> pad 1x20x386x706 -> GroupConv 4x4 s2)."""
    low = resize_lowering("linear", coord, [1, 32, 96, 176], [1, 32, 192, 352], target)
    assert low.engine == "dpu"
    dw = [o for o in low.ops if o["op"] == "dwconv"]
    assert len(dw) == 1 and dw[0]["kernel"] == [4, 4] and dw[0]["stride"] == [2, 2]
    assert dw[0]["in"] == [1, 32, 386, 706]
    assert _row(coord, 32, 12, 20, target).engine == "dpu"


@pytest.mark.parametrize("target", NPUS)
def test_half_pixel_x4_stays_on_shave(target):
    """[CBSC] legality: HALF_PIXEL with even scales converts only when both are <= 2 (kernel <= 4)."""
    low = resize_lowering("linear", "half_pixel", [1, 32, 16, 16], [1, 32, 64, 64], target)
    assert low.engine == "shave" and "even scale > 2" in low.rule


@pytest.mark.parametrize("target", NPUS)
def test_asymmetric_x2_aligned_channels_is_three_dw_plus_maxpool(target):
    """[CBSC] BilinearInterpolateOpConverterV2 (E#49791): ASYMMETRIC x2 with C % 16 == 0 and one reader:
    dw 1x2, 2x1, 2x2 + MaxPool 1x1 when the CMX concat does not fit, else 6 depthwise convs."""
    big = resize_lowering("linear", "asymmetric", [1, 64, 96, 176], [1, 64, 192, 352], target)
    assert big.engine == "dpu" and "3 depthwise convs + MaxPool" in big.rule
    assert sorted(tuple(o["kernel"]) for o in big.ops if o["op"] == "dwconv") == [(1, 2), (2, 1), (2, 2)]
    assert [o["op"] for o in big.ops].count("pool") == 1
    small = resize_lowering("linear", "asymmetric", [1, 16, 8, 8], [1, 16, 16, 16], target)
    assert "6 depthwise convs" in small.rule and [o["op"] for o in small.ops].count("dwconv") == 6
    assert _row("asymmetric", 32, 12, 20, target).lowering["rule"].endswith("(V2)")


@pytest.mark.parametrize("target", NPUS)
def test_asymmetric_x2_two_readers_or_unaligned_takes_v1(target):
    """[CBSC] V2 requires origOp->hasOneUse() and C % alignment == 0; otherwise V1: strided concat + pad +
    depthwise conv k2 s1."""
    assert "V1" in _row("asymmetric", 32, 12, 20, target, uses=2).lowering["rule"]
    low = resize_lowering("linear", "asymmetric", [1, 24, 12, 20], [1, 24, 24, 40], target)
    assert low.engine == "dpu" and "V1" in low.rule


@pytest.mark.parametrize("target", NPUS)
def test_asymmetric_above_x4_stays_on_shave(target):
    """[CBSC] legality: ASYMMETRIC converts unless scaleW > 4 and scaleH > 4 (Deeplab-v3 WA, E43217/E56905)."""
    assert resize_lowering("linear", "asymmetric", [1, 32, 8, 8], [1, 32, 64, 64], target).engine == "shave"
    assert resize_lowering("linear", "asymmetric", [1, 32, 8, 8], [1, 32, 32, 32], target).engine == "dpu"


@pytest.mark.parametrize("target", NPUS)
@pytest.mark.parametrize("coord", ["asymmetric", "half_pixel", "align_corners"])
def test_fewer_than_8_channels_stay_on_shave(target, coord):
    """[CBSC] legality: C < getAlignment (16) is not converted ("small-channel models WA"); the small-channel
    converter only takes half_pixel with C*W and C*H_out multiples of 16, so these stay SHAVE kernels."""
    low = resize_lowering("linear", coord, [1, 3, 15, 15], [1, 3, 30, 30], target)
    assert low.engine == "shave" and "alignment" in low.rule
    assert _row(coord, 4, 15, 15, target).engine == "shave"


@pytest.mark.parametrize("target", NPUS)
def test_small_channel_half_pixel_with_aligned_width_goes_to_dpu(target):
    """[CBSC] SmallChannelPytorchHalfPixelBilinearInterpolateOpConverter: C < 8, half_pixel, scale <= 4, N = 1,
    not quantized, C*W_in and C*H_out multiples of 16: two 1-axis convolutions on the DPU."""
    low = resize_lowering("linear", "pytorch_half_pixel", [1, 4, 16, 16], [1, 4, 32, 32], target)
    assert low.engine == "dpu" and "small-channel" in low.rule
    assert resize_lowering("linear", "pytorch_half_pixel", [1, 4, 16, 16], [1, 4, 32, 32], target,
                           precision="int8").engine == "shave"  # quantized input: E#104698


@pytest.mark.parametrize("target", NPUS)
def test_channels_8_to_15_stay_on_shave(target):
    """[CBSC] 8 <= C < 16 is left for SEP NCEInterpolate, which is off by default on 37XX
    (enable-se-ptrs-operations init(false)): a SHAVE kernel."""
    assert resize_lowering("linear", "half_pixel", [1, 8, 16, 16], [1, 8, 32, 32], target).engine == "shave"


def test_cpu_target_and_nearest():
    """CPU runs its own Interpolate kernel; nearest integer upscales are DMA copies on the NPU
    (convert_nearest_to_broadcast_or_strided_concat.cpp)."""
    assert resize_lowering("linear", "align_corners", [1, 8, 4, 4], [1, 8, 8, 8], "cpu").engine == "cpu"
    assert resize_lowering("nearest", "asymmetric", [1, 8, 4, 4], [1, 8, 8, 8], "mtl").engine == "dma"


@pytest.mark.parametrize("shape", [(512, 9, 16), (256, 18, 32), (128, 36, 64), (64, 72, 128)])
def test_midas_resizes_dpu_forms_vs_align_corners(shape):
    """The MiDaS decision at the four fusion-block shapes (288x512 input): align_corners never gets the stencil
    lowering; asymmetric (V2: 3 dw + MaxPool) is predicted cheaper on both chips, half_pixel (V1: x16 strided
    concat + dw k4 s2) cheaper on mtl. On kmb, 16 SHAVEs make its 256-channel SHAVE kernel cheaper than V1's DMA
    copies — the compiler's own comment ("lots of DMAs") says the same of V1 on big interpolates."""
    for t in NPUS:
        ac, hp, asym = (_row(m, *shape, t) for m in ("align_corners", "half_pixel", "asymmetric"))
        assert "not a fixed stencil" in ac.lowering["rule"]
        assert (hp.engine, asym.engine) == ("dpu", "dpu")
        assert asym.us < ac.us, t
        if t == "mtl":
            assert hp.us < ac.us
