"""Where the NPU compiler puts a bilinear Resize / Interpolate, mirrored from its public sources.

``resize_lowering(mode, coordinate_mode, in_shape, out_shape, target)`` returns the engine (dpu / shave / dma /
cpu), the rule that decided it, its citation, and the ops the compiler emits (which the cost model then prices).

Sources (openvinotoolkit/vpux_plugin and openvinotoolkit/npu_plugin, identical logic for 30XX = KMB and
37XX = MTL unless noted):

[CBSC]  src/vpux_compiler/src/dialect/IE/transforms/passes/convert_bilinear_to_strided_concat_and_conv.cpp
        (npu_plugin: src/vpux_compiler/src/dialect/IE/passes/...), run in buildAdjustForVPUPipeline:
        the legality lambda of ConvertBilinearToStridedConcatAndConvPass::safeRunOnFunc, the patterns
        BilinearInterpolateOpConverter (V1), BilinearInterpolateOpConverterV2 (V2) and
        SmallChannelPytorchHalfPixelBilinearInterpolateOpConverter; channel alignment from
        VPU::NCEInvariant::getAlignment = max(128 / element bits, 16) = 16 for FP16 and INT8.
[MBID]  src/vpux_compiler/src/dialect/IE/transforms/passes/map_bilinear_interpolate_on_DPU.cpp
        (isLegalInterpolateOp, scaleOnAxis): what is still an Interpolate after [CBSC] becomes per-line
        GroupConvs (kernel 2 on the scaled axis, one output line each, identity pools at the borders) only when
        input + output (in elements) do not fit the total CMX; pass enabled by default in DefaultHW mode
        (dialect/IE/transforms/passes.hpp: map-interpolate-on-dpu init(true)).
[SEP]   NCEInterpolate (storage-element pointers) is off by default on 37XX (enable-se-ptrs-operations
        init(false), NPU37XX/core/pipelines_options.hpp), so it is not modelled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

CBSC = ("openvinotoolkit/vpux_plugin src/vpux_compiler/src/dialect/IE/transforms/passes/"
        "convert_bilinear_to_strided_concat_and_conv.cpp")
MBID = ("openvinotoolkit/vpux_plugin src/vpux_compiler/src/dialect/IE/transforms/passes/"
        "map_bilinear_interpolate_on_DPU.cpp")
NEAREST = ("openvinotoolkit/vpux_plugin src/vpux_compiler/src/dialect/IE/transforms/passes/"
           "convert_nearest_to_broadcast_or_strided_concat.cpp")
OV_CPU = "OpenVINO CPU plugin: Interpolate runs as its own kernel (no decomposition)"

LINEAR_MODES = ("linear", "linear_onnx", "bilinear")
HALF_PIXEL = ("half_pixel", "pytorch_half_pixel")
CHANNEL_ALIGNMENT = 16  # NCEInvariant::getAlignment: max(128 / bits, 16) for FP16 and INT8
CMX_TOTAL_BYTES = {"kmb": 917504, "mtl": 1982464}  # usable CMX_NN per tile (npu_plugin lit init-compiler)


@dataclass(frozen=True)
class Lowering:
    """Where one resize lands: ``engine`` (dpu | shave | dma | cpu), the deciding ``rule`` and its
    ``citation``, and ``ops``: what the compiler emits, as dicts the cost model prices
    (``{"op": "dwconv", "in": [n,c,h,w], "out": [...], "kernel": [kh,kw], "stride": [sh,sw]}``,
    ``{"op": "pool", ...}``, ``{"op": "copy", "elems": n}`` for DMA copies (strided concats, slices),
    ``{"op": "interpolate", ...}`` for the SHAVE kernel)."""

    engine: str
    rule: str
    citation: str
    ops: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _prod(s) -> int:
    out = 1
    for d in s:
        out *= int(d)
    return out


def _dw(inp: list[int], out: list[int], kh: int, kw: int, sh: int = 1, sw: int = 1, what: str = "") -> dict:
    return {"op": "dwconv", "in": list(inp), "out": list(out), "kernel": [kh, kw], "stride": [sh, sw], "what": what}


def _shave(in_shape, out_shape, rule: str, citation: str) -> Lowering:
    return Lowering("shave", rule, citation, [{"op": "interpolate", "in": list(in_shape), "out": list(out_shape)}])


def resize_lowering(mode: str, coordinate_mode: str, in_shape: list[int], out_shape: list[int], target: str,
                    *, precision: str = "fp16", single_use: bool = True) -> Lowering:
    """How the ``target`` compiler lowers one Resize/Interpolate (NCHW shapes), and the rule that decided it.

    ``target``: kmb | mtl (NPU compiler rules) or cpu. ``precision``: fp16 | int8 (fp32 is computed as fp16).
    ``single_use``: the resize output has one reader (the V2 asymmetric fast path requires it).
    """
    mode = (mode or "").lower()
    cm = (coordinate_mode or "").lower()
    if target == "cpu":
        return Lowering("cpu", "OpenVINO CPU Interpolate kernel", OV_CPU,
                        [{"op": "interpolate", "in": list(in_shape), "out": list(out_shape)}])
    if len(in_shape) != 4 or len(out_shape) != 4:
        return _shave(in_shape, out_shape, "not a 4D tensor: SHAVE kernel", CBSC + " (legality: 4D only)")
    n, c, hi, wi = (int(d) for d in in_shape)
    _, co, ho, wo = (int(d) for d in out_shape)
    if mode not in LINEAR_MODES:
        if mode == "nearest" and ho % hi == 0 and wo % wi == 0 and ho >= hi and wo >= wi:
            return Lowering("dma", "nearest integer upscale: broadcast / strided concat (DMA copies)", NEAREST,
                            [{"op": "copy", "elems": _prod(out_shape)}])
        return _shave(in_shape, out_shape, f"mode {mode}: SHAVE kernel", CBSC + " (legality: LINEAR/LINEAR_ONNX only)")
    if c != co:
        return _shave(in_shape, out_shape, "channels change: SHAVE kernel", CBSC + " (legality)")
    both_up = ho > hi and wo > wi
    if not both_up:
        return _map_on_dpu(in_shape, out_shape, target, "not an upscale on both H and W", c)

    if c < CHANNEL_ALIGNMENT:
        small = _small_channel(cm, n, c, hi, wi, ho, wo, precision)
        if small is not None:
            return small
        return _map_on_dpu(in_shape, out_shape, target,
                           f"{c} channels < alignment {CHANNEL_ALIGNMENT}: not converted to strided concat + conv", c)
    if hi == 1 and wi == 1:
        return _shave(in_shape, out_shape, "1x1 input: runtime SHAVE kernel", CBSC + " (legality: H == W == 1)")

    if cm == "align_corners":
        ok = (wo - 1) % max(wi - 1, 1) == 0 and (ho - 1) % max(hi - 1, 1) == 0 and wi > 1 and hi > 1
        if not ok:
            return _map_on_dpu(in_shape, out_shape, target,
                               "align_corners with (out-1) not a multiple of (in-1): not a fixed stencil", c)
        sw_, sh_ = (wo - 1) // (wi - 1), (ho - 1) // (hi - 1)
        if sw_ > 4 and sh_ > 4:
            return _map_on_dpu(in_shape, out_shape, target, "align_corners scale > 4 on both axes", c)
        ups = [n, c, hi * sh_, wi * sw_]
        return Lowering("dpu", f"align_corners (out-1)=(in-1)x{sh_}: strided concat + depthwise conv "
                        f"k{sh_}x{sw_} s1 (V1)", CBSC + " (legality: E46240 accurate align_corners; V1 pattern)",
                        [{"op": "copy", "elems": _prod(ups), "what": f"strided concat (nearest x{sw_})"},
                         _dw(ups, out_shape, sh_, sw_, what="average")])
    if ho % hi or wo % wi:
        return _map_on_dpu(in_shape, out_shape, target, "non-integer scale", c)
    sw_, sh_ = wo // wi, ho // hi
    if cm == "asymmetric":
        if sw_ > 4 and sh_ > 4:
            return _map_on_dpu(in_shape, out_shape, target, "asymmetric scale > 4 on both axes (SHAVE is faster, "
                               "E43217/E56905)", c)
        if sw_ == 2 and sh_ == 2 and c % CHANNEL_ALIGNMENT == 0 and single_use and wi > 1:
            return _asym_v2(n, c, hi, wi, ho, wo, precision, target)
        padded = [n, c, hi * sh_ + sh_ - 1, wi * sw_ + sw_ - 1]
        return Lowering("dpu", f"asymmetric x{sh_}x{sw_}: strided concat + pad + depthwise conv k{sh_}x{sw_} s1 (V1)",
                        CBSC + " (BilinearInterpolateOpConverter, V1)",
                        [{"op": "copy", "elems": _prod(padded), "what": "strided concat + pad"},
                         _dw(padded, out_shape, sh_, sw_, what="average")])
    if cm in HALF_PIXEL:
        if cm == "pytorch_half_pixel" and (wo == 1 or ho == 1):
            return _map_on_dpu(in_shape, out_shape, target, "pytorch_half_pixel with a 1-wide output", c)
        if sw_ % 2 == 0 and sh_ % 2 == 0:
            if sw_ > 2 or sh_ > 2:
                return _map_on_dpu(in_shape, out_shape, target, f"{cm} even scale > 2 (kernel would exceed 4)", c)
            kh, kw, st = 2 * sh_, 2 * sw_, 2
        elif sw_ % 2 and sh_ % 2:
            if sw_ > 3 or sh_ > 3:
                return _map_on_dpu(in_shape, out_shape, target, f"{cm} odd scale > 3", c)
            kh, kw, st = sh_, sw_, 1
        else:
            return _map_on_dpu(in_shape, out_shape, target, f"{cm} with mixed odd/even scales", c)
        ph, pw = (2 * (sh_ - 1), 2 * (sw_ - 1)) if st == 2 else (sh_ - 1, sw_ - 1)  # forward + back pad
        padded = [n, c, hi * kh + ph, wi * kw + pw]
        return Lowering("dpu", f"{cm} x{sh_}x{sw_}: strided concat + pad + depthwise conv k{kh}x{kw} s{st} (V1)",
                        CBSC + " (BilinearInterpolateOpConverter, V1)",
                        [{"op": "copy", "elems": _prod(padded), "what": f"strided concat x{kw} + pad"},
                         _dw(padded, out_shape, kh, kw, st, st, what="average")])
    return _map_on_dpu(in_shape, out_shape, target, f"coordinate mode {cm} is not converted", c)


def _asym_v2(n, c, hi, wi, ho, wo, precision, target) -> Lowering:
    """asymmetric x2, C % 16 == 0: 3 depthwise convs + MaxPool (or 6 depthwise convs when CMX concat fits)."""
    bpe = 1 if precision == "int8" else 2
    out_b = n * c * ho * wo * bpe // 2  # the pass sizes the half output (one of two W-joins)
    in_b = out_b // 2
    fits = in_b + out_b + c * bpe + c * 16 <= CMX_TOTAL_BYTES.get(target, CMX_TOTAL_BYTES["mtl"])
    base = [n, c, hi, wi]
    ops = [{"op": "copy", "elems": n * c * (hi + 1) * (wi + 1) - n * c * hi * wi, "what": "right/bottom pad"},
           _dw([n, c, hi, wi + 1], base, 1, 2, what="over_w"),
           _dw([n, c, hi + 1, wi], base, 2, 1, what="over_h"),
           _dw([n, c, hi + 1, wi + 1], base, 2, 2, what="over_wh")]
    if fits:
        ops += [_dw(base, base, 1, 1, what="center"), _dw([n, c, hi, wo], [n, c, hi, wo], 1, 1, what="join_w0"),
                _dw([n, c, hi, wo], [n, c, hi, wo], 1, 1, what="join_w1")]
        rule = "asymmetric x2, C % 16 == 0: 6 depthwise convs with CMX concat (V2)"
    else:
        ops.append({"op": "pool", "in": base, "out": base, "kernel": [1, 1], "stride": [1, 1], "what": "center"})
        ops.append({"op": "copy", "elems": 2 * n * c * ho * wo, "what": "W and H joins (no CMX concat)"})
        rule = "asymmetric x2, C % 16 == 0: 3 depthwise convs + MaxPool (V2)"
    return Lowering("dpu", rule, CBSC + " (BilinearInterpolateOpConverterV2, E#49791)", ops)


def _small_channel(cm, n, c, hi, wi, ho, wo, precision) -> Lowering | None:
    """C < 8 pytorch_half_pixel / half_pixel, scale <= 4: H and W split into two 1-axis convs (CBSC small channel)."""
    if c >= 8 or cm not in HALF_PIXEL or precision == "int8" or n != 1:
        return None
    if ho % hi or wo % wi or ho // hi != wo // wi or ho // hi > 4 or (hi == 1 and wi == 1):
        return None
    if (c * wi) % CHANNEL_ALIGNMENT or (c * ho) % CHANNEL_ALIGNMENT:
        return None
    s = ho // hi
    k, st = (2 * s, 2) if s % 2 == 0 else (s, 1)
    mid = [n, c, ho, wi]
    return Lowering("dpu", f"{cm} x{s} with {c} < 8 channels: H and W as two {k}x1 convolutions "
                    "(small-channel path)", CBSC + " (SmallChannelPytorchHalfPixelBilinearInterpolateOpConverter)",
                    [{"op": "copy", "elems": n * c * hi * k * wi + n * c * wi * k * ho, "what": "strided concats"},
                     _dw([n, c, hi * k + 2, wi], mid, k, 1, st, 1, what="H"),
                     {"op": "copy", "elems": 2 * n * c * ho * wi, "what": "MemPermute H<->W"},
                     _dw([n, c, wi * k + 2, ho], [n, c, wo, ho], k, 1, st, 1, what="W")])


def _map_on_dpu(in_shape, out_shape, target: str, why: str, c: int) -> Lowering:
    """What [CBSC] leaves as an Interpolate: SHAVE, unless [MBID] maps it to per-line GroupConvs (no CMX fit)."""
    elems = _prod(in_shape) + _prod(out_shape)
    cmx = CMX_TOTAL_BYTES.get(target, CMX_TOTAL_BYTES["mtl"])
    if c == 1 or elems <= cmx or len(in_shape) != 4:
        reason = "one channel" if c == 1 else f"input+output {elems} elements fit CMX ({cmx})"
        return _shave(in_shape, out_shape, f"{why}; {reason}: SHAVE interpolate kernel",
                      CBSC + " (legal: stays Interpolate); " + MBID + " (isLegalInterpolateOp)")
    n, _, hi, wi = in_shape
    _, _, ho, wo = out_shape
    cp = -(-c // CHANNEL_ALIGNMENT) * CHANNEL_ALIGNMENT  # channels expanded to the alignment
    ops = []
    if cp != c:
        ops.append({"op": "copy", "elems": n * cp * hi * wi, "what": "Expand channels"})
    ops.append({"op": "gconv_lines", "lines": ho, "in": [n, cp, 2, wi], "out": [n, cp, 1, wi], "kernel": [2, 1],
                "what": "vertical: one GroupConv per output row"})
    ops.append({"op": "gconv_lines", "lines": wo, "in": [n, cp, ho, 2], "out": [n, cp, ho, 1], "kernel": [1, 2],
                "what": "horizontal: one GroupConv per output column"})
    ops.append({"op": "copy", "elems": 2 * n * cp * ho * (wi + wo), "what": "slices + concats"})
    return Lowering("dpu", f"{why}; input+output {elems} elements exceed CMX ({cmx}): per-line GroupConvs",
                    MBID + " (scaleOnAxis)", ops)
