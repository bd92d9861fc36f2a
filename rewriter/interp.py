"""Interpolation math and site parsing, written once for ``asym_interp`` and ``interp_deconv``.

Two halves:

* **Math** (format-free): the source coordinate of every output sample for each ONNX/OpenVINO coordinate
  transformation mode (:func:`source_coordinates`), the 1-D linear interpolation matrix with the Resize clamp
  semantics (:func:`interp_matrix`), how far a mode swap moves the sampling grid (:func:`grid_shift`), and
  the fixed-weight **depthwise transposed-convolution plan** that reproduces bilinear upsampling by an
  integer factor exactly (:func:`linear_stencil`, :func:`deconv_plan`).
* **Sites**: ONNX ``Resize``/``Upsample`` and OpenVINO ``Interpolate`` (v1/v4/v11) parsed into one
  :class:`InterpSite` (mode, coordinate mode, scales, shapes, channels) that both passes read, whatever the
  exporter (TorchScript opset 11 with a Constant empty roi, opset 13+ without roi, dynamo with initializer
  scales and antialias/keep_aspect_ratio_policy, scales or constant/computed sizes).

Why the deconv plan is exact. With an integer scale ``s`` and asymmetric or half-pixel coordinates, output
sample ``o`` reads input coordinate ``c(o) = (o + δ) / s`` (``δ = 0`` asymmetric, ``(1 - s) / 2``
half-pixel): the fractional positions repeat with period ``s``, so the weights are a fixed triangle stencil
``1 - |k - m| / s`` applied with stride ``s`` — a transposed convolution. Resize clamps coordinates to the
input, which equals linear interpolation on the input padded by one replicated edge sample, so the plan is
``Pad(edge) → ConvTranspose(group=C, stride s) `` with the transposed conv's ``pads`` cropping the extra
border. align_corners has ``c(o) = o (L - 1) / (sL - 1)``: the fractional positions drift across the image,
so no fixed stencil exists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .errors import RewriteError
from .model import ModelHandle, ir_const

# Coordinate modes whose integer-scale linear upsampling is a fixed stencil (interp_deconv can replace it).
# pytorch_half_pixel and half_pixel_symmetric equal half_pixel whenever the scale is an integer.
STENCIL_MODES = ("asymmetric", "half_pixel", "pytorch_half_pixel", "half_pixel_symmetric")
HALF_PIXEL_FAMILY = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                    "half_pixel_symmetric", "tf_crop_and_resize")
_LINEAR = {"linear": "linear", "linear_onnx": "linear", "bilinear": "linear"}  # op spellings → "linear"


# ---- coordinate math ---------------------------------------------------------------------------------------
def source_coordinates(mode: str, in_len: int, out_len: int, scale: float | None = None) -> np.ndarray:
    """Input coordinate (before clamping) that each of ``out_len`` output samples reads, in float64.

    ``scale`` is the factor the op uses for the transform (its ``scales`` input, or ``out_len / in_len``
    when sizes are given). Follows the ONNX Resize / OpenVINO Interpolate definitions.
    """
    s = float(scale) if scale else out_len / in_len
    o = np.arange(out_len, dtype=np.float64)
    if mode == "asymmetric":
        return o / s
    if mode == "half_pixel":
        return (o + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return (o + 0.5) / s - 0.5 if out_len > 1 else np.zeros(out_len)
    if mode == "align_corners":
        return o * (in_len - 1) / (out_len - 1) if out_len > 1 else np.zeros(out_len)
    if mode == "tf_half_pixel_for_nn":
        return (o + 0.5) / s
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (s * in_len)
        return in_len / 2 * (1 - adjustment) + (o + 0.5) / s - 0.5
    raise ValueError(f"coordinate mode {mode!r} has no closed-form grid (known: {', '.join(COORDINATE_MODES)})")


def interp_matrix(in_len: int, out_len: int, mode: str, scale: float | None = None) -> np.ndarray:
    """``out_len x in_len`` linear-interpolation weights with Resize's edge clamping (float64).

    Resizing one axis of ``x`` is ``tensordot(interp_matrix(...), x, axes=(1, axis))``. Coordinates outside
    ``[0, in_len - 1]`` read the edge sample, as onnxruntime, OpenVINO and ``onnx.reference`` do.
    """
    c = source_coordinates(mode, in_len, out_len, scale)
    lo = np.floor(c)
    frac = c - lo
    lo = lo.astype(np.int64)
    m = np.zeros((out_len, in_len), np.float64)
    rows = np.arange(out_len)
    np.add.at(m, (rows, np.clip(lo, 0, in_len - 1)), 1.0 - frac)
    np.add.at(m, (rows, np.clip(lo + 1, 0, in_len - 1)), frac)
    return m


def grid_shift(in_len: int, scale: float, from_mode: str, to_mode: str) -> float:
    """Largest move of the (clamped) sampling grid, in input pixels, when ``from_mode`` becomes ``to_mode``."""
    out_len = int(math.floor(in_len * scale))
    a = np.clip(source_coordinates(from_mode, in_len, out_len, scale), 0, in_len - 1)
    b = np.clip(source_coordinates(to_mode, in_len, out_len, scale), 0, in_len - 1)
    return float(np.max(np.abs(a - b))) if out_len else 0.0


# ---- the exact transposed-convolution plan -------------------------------------------------------------------
@dataclass(frozen=True)
class Stencil:
    """1-D plan for linear upsampling by an integer ``scale``: edge-pad, transposed conv, crop.

    ``Pad(edge, pad_begin, pad_end) → ConvTranspose(kernel, stride=scale, pads=(crop_begin, crop_end))``
    gives exactly ``scale * L`` samples for any input length ``L`` (the amounts do not depend on ``L``).
    """

    scale: int
    kernel: tuple[float, ...]
    pad_begin: int
    pad_end: int
    crop_begin: int
    crop_end: int

    def output_length(self, in_len: int) -> int:
        """Samples the plan produces for ``in_len`` inputs (always ``scale * in_len``)."""
        padded = in_len + self.pad_begin + self.pad_end
        return (padded - 1) * self.scale + len(self.kernel) - self.crop_begin - self.crop_end


def linear_stencil(scale: int, mode: str) -> Stencil:
    """The :class:`Stencil` for ``mode`` (asymmetric or the half-pixel family) and integer ``scale >= 1``.

    Output ``o`` reads padded coordinate ``(o + δ + pad_begin·s) / s``; with kernel centre ``m`` the
    transposed conv puts that sample at index ``t = o + δ + pad_begin·s + m``, so the crop is that offset.
    """
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale {scale} is not a positive integer")
    if mode not in STENCIL_MODES:
        raise ValueError(f"coordinate mode {mode!r} has no fixed stencil (use one of {', '.join(STENCIL_MODES)})")
    s = int(scale)
    delta = 0.0 if mode == "asymmetric" else (1 - s) / 2  # c(o) = (o + δ) / s
    pad_begin = 1 if delta < 0 else 0  # half-pixel reads left of sample 0: replicate it
    pad_end = 1 if s > 1 else 0  # the last outputs read right of sample L-1
    half = delta - math.floor(delta)  # 0 or 0.5: taps sit on integers or half-integers
    centre = s - 1 + half
    taps = int(round(2 * s - 1 + 2 * half))  # 2s-1 taps, or 2s when the taps straddle half-integers
    kernel = tuple(1.0 - abs(k - centre) / s for k in range(taps))
    crop_begin = int(round(delta + pad_begin * s + centre))
    crop_end = (pad_begin + pad_end - 1) * s + taps - crop_begin
    return Stencil(s, kernel, pad_begin, pad_end, crop_begin, crop_end)


@dataclass(frozen=True)
class DeconvPlan:
    """N-D plan: one :class:`Stencil` per spatial axis; bilinear weights are their outer product."""

    stencils: tuple[Stencil, ...]

    @property
    def strides(self) -> list[int]:
        return [st.scale for st in self.stencils]

    @property
    def kernel_shape(self) -> list[int]:
        return [len(st.kernel) for st in self.stencils]

    @property
    def pads_begin(self) -> list[int]:
        """Edge padding before each spatial axis (input of the transposed conv)."""
        return [st.pad_begin for st in self.stencils]

    @property
    def pads_end(self) -> list[int]:
        return [st.pad_end for st in self.stencils]

    @property
    def crops_begin(self) -> list[int]:
        """The transposed conv's ``pads`` (begin): samples dropped from its output."""
        return [st.crop_begin for st in self.stencils]

    @property
    def crops_end(self) -> list[int]:
        return [st.crop_end for st in self.stencils]

    @property
    def needs_pad(self) -> bool:
        return any(self.pads_begin) or any(self.pads_end)

    def kernel(self) -> np.ndarray:
        """The N-D stencil (float64), outer product of the per-axis kernels."""
        k = np.ones((), np.float64)
        for st in self.stencils:
            k = np.multiply.outer(k, np.asarray(st.kernel, np.float64))
        return k

    def weights(self, channels: int, dtype: Any = np.float32) -> np.ndarray:
        """Depthwise transposed-conv weights ``C x 1 x k...`` (ONNX ConvTranspose with ``group=C``)."""
        k = self.kernel()
        return np.ascontiguousarray(np.broadcast_to(k, (channels, 1, *k.shape))).astype(dtype)


def deconv_plan(scales: Sequence[int], mode: str) -> DeconvPlan:
    """Plan for integer ``scales`` (one per spatial axis) in coordinate ``mode``."""
    return DeconvPlan(tuple(linear_stencil(int(s), mode) for s in scales))


# ---- sites -----------------------------------------------------------------------------------------------
@dataclass
class InterpSite:
    """One resize/interpolate node, format-free. ``ref`` is the ONNX ``NodeProto`` or OpenVINO node."""

    name: str
    op: str  # "Resize", "Upsample" or "Interpolate"
    version: str  # "opset11" (ONNX default-domain opset / OpenVINO op version)
    mode: str  # "linear" for every linear spelling, else the op's own (nearest, cubic, ...)
    coordinate_mode: str  # effective mode (legacy ops that have no attribute: "asymmetric")
    mode_fixed: bool  # the op cannot carry another coordinate mode (Upsample, Resize-10)
    input_shape: list[int | None] | None
    output_shape: list[int | None] | None
    scales: list[float] | None  # per axis, full rank; None when not known statically
    scale_source: str  # "scales" or "sizes"
    channels: int | None
    dtype: np.dtype | None
    attrs: dict[str, Any] = field(default_factory=dict)  # other semantics-relevant attributes
    ref: Any = field(default=None, repr=False, compare=False)

    @property
    def rank(self) -> int | None:
        if self.input_shape is not None:
            return len(self.input_shape)
        return len(self.scales) if self.scales is not None else None

    @property
    def spatial_scales(self) -> list[float] | None:
        """Scales of the axes after batch and channel."""
        return None if self.scales is None else self.scales[2:]

    def integer_scales(self) -> list[int] | None:
        """Spatial scales as ints when every one is a whole number >= 1, else None."""
        sp = self.spatial_scales
        if sp is None or any(s < 1 or abs(s - round(s)) > 1e-6 for s in sp):
            return None
        return [int(round(s)) for s in sp]

    def details(self) -> dict[str, Any]:
        """JSON-able facts for ``--explain`` and reports."""
        def sp(shape):
            return None if shape is None else shape[2:]

        d: dict[str, Any] = {"op": f"{self.op}-{self.version}", "mode": self.mode,
                             "coordinate_mode": self.coordinate_mode,
                             "scale": None if self.spatial_scales is None else [_num(s) for s in self.spatial_scales],
                             "input_size": sp(self.input_shape), "output_size": sp(self.output_shape),
                             "channels": self.channels, "scale_source": self.scale_source}
        d.update({k: v for k, v in self.attrs.items() if v not in (None, 0, "stretch", [])})
        if d.get("raw_mode") == self.mode:
            del d["raw_mode"]
        return {k: v for k, v in d.items() if v is not None}


def _num(x: float) -> float | int:
    return int(round(x)) if abs(x - round(x)) < 1e-9 else round(float(x), 6)


def deconv_blocker(site: InterpSite) -> str | None:
    """Why ``interp_deconv`` cannot replace ``site`` exactly, or None when it can."""
    if site.mode != "linear":
        return f"{site.attrs.get('raw_mode', site.mode)} mode: not bilinear"
    cm = site.coordinate_mode
    if cm == "align_corners":
        return "align_corners: weights vary with position, no fixed stencil; run asym_interp first"
    if cm not in STENCIL_MODES:
        return f"coordinate mode {cm}: not exactly expressible as a transposed conv"
    if site.attrs.get("pads_begin") or site.attrs.get("pads_end"):
        return "Interpolate with pads_begin/pads_end: not handled"
    if site.scales is None:
        return "scale factor is not known statically (dynamic sizes)"
    if any(abs(s - 1) > 1e-6 for s in site.scales[:2]):
        return f"scales batch/channel axes ({_num(site.scales[0])}, {_num(site.scales[1])})"
    sp = site.spatial_scales
    if not sp or all(abs(s - 1) < 1e-6 for s in sp):
        return "scale 1 on every axis: nothing to upsample"
    if site.integer_scales() is None:
        return f"scale {[_num(s) for s in sp]} is not an integer >= 1 on every axis"
    if site.rank is None or not 3 <= site.rank <= 5:
        return f"rank {site.rank}: needs 1 to 3 spatial axes"
    if site.channels is None:
        return "channel count is dynamic; the depthwise weights need it static"
    if site.dtype is not None and not np.issubdtype(site.dtype, np.floating):
        return f"element type {site.dtype}: not floating point"
    return None


def find_sites(model: ModelHandle) -> list[InterpSite]:
    """Every resize/interpolate site of the model, in graph order."""
    return onnx_sites(model.onnx) if model.format == "onnx" else ir_sites(model.ov)


# ---- ONNX ------------------------------------------------------------------------------------------------
def onnx_opset(model: onnx.ModelProto) -> int:
    """Default-domain opset of the model."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def onnx_constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """{tensor name: value} for initializers and Constant node outputs."""
    out = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type != "Constant" or not n.output:
            continue
        for a in n.attribute:
            if a.name == "value":
                out[n.output[0]] = numpy_helper.to_array(a.t)
            elif a.name in ("value_float", "value_int"):
                out[n.output[0]] = np.array(onnx.helper.get_attribute_value(a))
            elif a.name in ("value_floats", "value_ints"):
                out[n.output[0]] = np.array(list(onnx.helper.get_attribute_value(a)))
    return out


def onnx_shapes(model: onnx.ModelProto) -> dict[str, tuple[list[int | None], int]]:
    """{tensor name: (shape with None for unknown dims, elem type)} from shape inference with data
    propagation (resolves sizes computed by Shape → Slice → Concat chains); empty if inference fails."""
    if model.ByteSize() > 1_800_000_000:
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is a best effort; sites then report unknown shapes
        return {}
    out = {}
    g = inferred.graph
    for vi in [*g.input, *g.value_info, *g.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            out[vi.name] = (None, tt.elem_type)
            continue
        shape = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        out[vi.name] = (shape, tt.elem_type)
    return out


def onnx_sites(model: onnx.ModelProto) -> list[InterpSite]:
    """Parse every ``Resize`` and ``Upsample`` node of an ONNX model."""
    nodes = [n for n in model.graph.node if n.op_type in ("Resize", "Upsample") and n.domain in ("", "ai.onnx")]
    if not nodes:
        return []
    opset = onnx_opset(model)
    consts = onnx_constants(model)
    shapes = onnx_shapes(model)
    sites = [_onnx_site(n, opset, consts, shapes) for n in nodes]
    if any(not _static(s.input_shape) or not _static(s.output_shape) for s in sites):
        # ONNX inference gives up behind computed Pad chains (TF "same" padding); OpenVINO folds them
        ov_shapes = {k: (v, shapes.get(k, (None, 0))[1]) for k, v in _ov_tensor_shapes(model).items()}
        shapes = {**shapes, **ov_shapes}
        sites = [_onnx_site(n, opset, consts, shapes) for n in nodes]
    return sites


def _static(shape: list[int | None] | None) -> bool:
    return shape is not None and all(d is not None for d in shape)


def _ov_tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """{tensor name: static shape} as OpenVINO infers them for the ONNX model (best effort)."""
    try:
        ov_model = ModelHandle(model).ov_model()
    except Exception:  # noqa: BLE001 - a model OpenVINO cannot read simply keeps the ONNX shapes
        return {}
    out = {}
    for op in ov_model.get_ops():
        for port in op.outputs():
            shape = _ps(port.get_partial_shape())
            if _static(shape):
                for name in port.get_names():
                    out[name] = shape
    return out


def _onnx_site(n: onnx.NodeProto, opset: int, consts: dict, shapes: dict) -> InterpSite:
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
    attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    in_shape, elem = shapes.get(n.input[0], (None, 0))
    out_shape = shapes.get(n.output[0], (None, 0))[0] if n.output else None
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else None
    raw_mode = attrs.get("mode", "nearest")
    legacy = n.op_type == "Upsample" or opset < 11
    coord = "asymmetric" if legacy else attrs.get("coordinate_transformation_mode", "half_pixel")

    def const(i: int) -> np.ndarray | None:
        if len(n.input) <= i or not n.input[i]:
            return None
        v = consts.get(n.input[i])
        return None if v is None or v.size == 0 else v

    if n.op_type == "Upsample":
        scales_in = const(1) if len(n.input) > 1 else np.array(attrs.get("scales", []) or [], np.float64)
        sizes_in = None
    elif opset < 11:
        scales_in, sizes_in = const(1), None
    else:
        scales_in, sizes_in = const(2), const(3)
    has_sizes_input = n.op_type == "Resize" and opset >= 11 and len(n.input) > 3 and bool(n.input[3])
    rank = len(in_shape) if in_shape is not None else None
    axes = attrs.get("axes")
    scales: list[float] | None = None
    if scales_in is not None and scales_in.size:
        scales = _full_rank(scales_in.astype(np.float64).tolist(), axes, rank, 1.0)
    elif in_shape is not None:
        if sizes_in is not None and attrs.get("keep_aspect_ratio_policy", "stretch") == "stretch":
            sizes = _full_rank(sizes_in.astype(np.int64).tolist(), axes, rank, None)
            if sizes is not None:
                sizes = [in_shape[i] if v is None else v for i, v in enumerate(sizes)]
                out_shape = out_shape or sizes
        if out_shape is not None and all(v is not None for v in (*in_shape, *out_shape)):
            scales = [o / i for o, i in zip(out_shape, in_shape)]
    ch = in_shape[1] if in_shape is not None and len(in_shape) > 1 else None
    extra = {"raw_mode": raw_mode, "antialias": attrs.get("antialias", 0),
             "keep_aspect_ratio_policy": attrs.get("keep_aspect_ratio_policy"),
             "exclude_outside": attrs.get("exclude_outside", 0), "axes": list(axes) if axes else None}
    return InterpSite(name=n.name, op=n.op_type, version=f"opset{opset}", mode=_LINEAR.get(raw_mode, raw_mode),
                      coordinate_mode=coord, mode_fixed=legacy, input_shape=in_shape, output_shape=out_shape,
                      scales=scales, scale_source="sizes" if has_sizes_input and scales_in is None else "scales",
                      channels=ch, dtype=dtype, attrs=extra, ref=n)


def _full_rank(values: list, axes, rank: int | None, fill) -> list | None:
    """Expand per-``axes`` values (Resize-18 ``axes``) to one per axis; None if the rank is unknown."""
    if not axes:
        return list(values)
    if rank is None:
        return None
    out = [fill] * rank
    for a, v in zip(axes, values):
        out[a % rank] = v
    return out


# ---- OpenVINO IR ------------------------------------------------------------------------------------------
def ir_sites(model) -> list[InterpSite]:
    """Parse every ``Interpolate`` (v1, v4, v11) of an ``openvino.Model``."""
    return [_ir_site(op) for op in model.get_ordered_ops() if op.get_type_name() == "Interpolate"]


def _ir_site(op) -> InterpSite:
    version = op.get_type_info().version_id
    attrs = op.get_attributes()
    in_ps = op.get_input_partial_shape(0)
    out_ps = op.get_output_partial_shape(0)
    in_shape = _ps(in_ps)
    out_shape = _ps(out_ps)
    rank = len(in_shape) if in_shape is not None else None
    dtype = np.dtype(op.get_input_element_type(0).to_dtype())
    raw_mode = attrs.get("mode", "nearest")

    def const(i: int) -> np.ndarray | None:
        if op.get_input_size() <= i:
            return None
        return ir_const(op.input_value(i).get_node())

    scales: list[float] | None = None
    if version == "opset1":  # legacy: align_corners flag, sizes input; linear without it is asymmetric-like
        coord = "align_corners" if attrs.get("align_corners") else "asymmetric"
        axes = list(attrs.get("axes", []))
        calc, values = "sizes", const(1)
        extra_pads = (list(attrs.get("pads_begin", [])), list(attrs.get("pads_end", [])))
    else:
        coord = attrs.get("coordinate_transformation_mode", "half_pixel")
        calc = attrs.get("shape_calculation_mode", "sizes")
        if version == "opset4":
            values = const(2) if calc == "scales" else const(1)
            axes_v = const(3)
        else:
            values = const(1)
            axes_v = const(2)
        axes = None if axes_v is None else axes_v.astype(np.int64).tolist()
        extra_pads = (list(attrs.get("pads_begin", [])), list(attrs.get("pads_end", [])))
    if calc == "scales" and values is not None:
        scales = _full_rank(values.astype(np.float64).tolist(), axes, rank, 1.0)
        if scales is not None and rank is not None and len(scales) != rank:
            scales = None
    if scales is None and in_shape is not None and out_shape is not None \
            and all(v is not None for v in (*in_shape, *out_shape)):
        scales = [o / i for o, i in zip(out_shape, in_shape)]
    pads_b, pads_e = extra_pads
    extra = {"raw_mode": raw_mode, "antialias": int(bool(attrs.get("antialias", False))),
             "pads_begin": pads_b if any(pads_b) else [], "pads_end": pads_e if any(pads_e) else []}
    ch = in_shape[1] if in_shape is not None and len(in_shape) > 1 else _static_dim(in_ps, 1)
    return InterpSite(name=op.get_friendly_name(), op="Interpolate", version=version,
                      mode=_LINEAR.get(raw_mode, raw_mode), coordinate_mode=coord, mode_fixed=version == "opset1",
                      input_shape=in_shape, output_shape=out_shape, scales=scales, scale_source=calc,
                      channels=ch, dtype=dtype, attrs=extra, ref=op)


def _ps(ps) -> list[int | None] | None:
    if ps.rank.is_dynamic:
        return None
    return [d.get_length() if d.is_static else None for d in ps]


def _static_dim(ps, i: int) -> int | None:
    if ps.rank.is_dynamic or len(ps) <= i:
        return None
    d = ps[i]
    return d.get_length() if d.is_static else None


# ---- shared by both passes: node-name selection ---------------------------------------------------------------
def compile_pattern(pass_name: str, key: str, regex: str | None) -> re.Pattern | None:
    """Compile a ``include``/``exclude`` option, or raise RewriteError naming the option."""
    if not regex:
        return None
    try:
        return re.compile(regex)
    except re.error as e:
        raise RewriteError(f"option {pass_name}.{key}={regex!r}: not a valid regular expression ({e})") from e


def name_filter_reason(name: str, include: re.Pattern | None, exclude: re.Pattern | None) -> str | None:
    """Why a site is deselected by the node-name patterns (searched anywhere in the name), or None."""
    if include is not None and not include.search(name):
        return f"name does not match include pattern {include.pattern!r}"
    if exclude is not None and exclude.search(name):
        return f"name matches exclude pattern {exclude.pattern!r}"
    return None
