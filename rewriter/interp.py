"""Interpolation math and site parsing, written once for ``asym_interp`` and ``interp_deconv``.

Two halves:

* **Math** (format-free): the source coordinate of every output sample for each ONNX/OpenVINO coordinate
  transformation mode (:func:`source_coordinates`), the 1-D linear interpolation matrix with the Resize clamp
  semantics (:func:`interp_matrix`), how far a mode swap moves the sampling grid (:func:`grid_shift`), and
  the fixed-weight **depthwise transposed-convolution plan** that reproduces bilinear upsampling by an
  integer factor exactly (:func:`linear_stencil`, :func:`deconv_plan`).
* **Sites**: the graph view's resize nodes (ONNX ``Resize``/``Upsample``, OpenVINO ``Interpolate`` v1/v4/v11,
  parsed by the view's backends whatever the exporter) as one :class:`InterpSite` (mode, coordinate mode,
  scales, shapes, channels) that both passes read.

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

from .errors import RewriteError
from .graph import GraphView, Node
from .model import ModelHandle

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
    """One resize/interpolate node, format-free. ``ref`` is the graph view's node."""

    name: str  # the view's node id
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
    from .graph import view

    return sites(view(model))


def sites(v: GraphView) -> list[InterpSite]:
    """Every resize/interpolate node of a graph view as an :class:`InterpSite`, in graph order."""
    return [site_of(v, n) for n in v.of_kind("resize")]


def site_of(v: GraphView, node: Node) -> InterpSite:
    """One resize node of the view, format-free."""
    info = node.attrs["resize"].get()
    in_shape, out_shape = v.shape(node.inputs[0]), v.shape(node.outputs[0])
    ch = in_shape[1] if in_shape is not None and len(in_shape) > 1 else None
    return InterpSite(name=node.id, op=node.op_type, version=node.version, mode=info.mode,
                      coordinate_mode=info.coordinate_mode, mode_fixed=info.mode_fixed, input_shape=in_shape,
                      output_shape=out_shape, scales=info.scales, scale_source=info.scale_source, channels=ch,
                      dtype=v.dtype(node.inputs[0]), attrs=dict(info.extra), ref=node)


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


class NameFiltered:
    """Mixin for a resize pass with ``include``/``exclude`` node-name options (:func:`name_filter_options`): checks
    them in ``check_options`` and compiles them for ``plan``."""

    name: str
    opts: Any

    def check_options(self) -> None:
        self.name_filters()

    def name_filters(self) -> tuple[re.Pattern | None, re.Pattern | None]:
        return (compile_pattern(self.name, "include", self.opts.include),
                compile_pattern(self.name, "exclude", self.opts.exclude))


def name_filter_options(verb: str) -> dict[str, Any]:
    """The ``include``/``exclude`` options of a :class:`NameFiltered` pass; ``verb`` says what a site undergoes."""
    from .passbase import Option

    return {"include": Option(None, str, f"regex: only {verb} sites whose resize node name matches (re.search)"),
            "exclude": Option(None, str, "regex: leave sites whose resize node name matches (re.search)")}


def site_engines(site: InterpSite, modes: tuple[str, ...], targets: tuple[str, ...], *,
                 single_use: bool = True) -> dict[str, dict[str, dict[str, str]]]:
    """``{target: {mode: {"engine", "rule"}}}``: where the site lands per coordinate mode
    (``rewriter.cost.lowering.resize_lowering``); {} when its shapes are not static."""
    shp_in, shp_out = site.input_shape, site.output_shape
    if shp_in is None or shp_out is None or any(d is None for d in (*shp_in, *shp_out)):
        return {}
    out: dict[str, dict[str, dict[str, str]]] = {}
    for t in targets:
        per: dict[str, dict[str, str]] = {}
        for m in dict.fromkeys(modes):
            from .cost.lowering import resize_lowering

            low = resize_lowering(site.mode, m, list(shp_in), list(shp_out), t, single_use=single_use)
            per[m] = {"engine": low.engine, "rule": low.rule}
        out[t] = per
    return out
