"""``asym_interp``: change the coordinate mode of bilinear upsampling (align_corners → asymmetric).

The NPU compiler handles ``align_corners`` bilinear upsampling poorly (its weights vary with position), while
``asymmetric`` (or ``half_pixel``) with an integer scale is a fixed stencil it can run cheaply — and that
``interp_deconv`` can turn into a depthwise transposed conv. The swap is **approximate**: geometrically the
sampling grid moves. With align_corners, output ``o`` of an ``L → sL`` upsample reads input coordinate
``o (L-1)/(sL-1)``; with asymmetric it reads ``o / s``; the two agree at the first sample and drift apart
towards the far border by up to ``1 - 1/s`` input pixels before clamping (half a pixel for x2, per stage).
half_pixel spreads the shift over both borders (up to half a pixel each side); on a trained MiDaS,
asymmetric moved the output about twice as much as half_pixel, so the target mode is an option.

Each site can take ``half_pixel`` or ``asymmetric`` (whichever it is not already in). With ``mode=auto`` (the
default) each site in ``from_modes`` takes the mode that lands on the NPU's DPU (``rewriter.cost.lowering``, on
the requested NPU targets; the first decides when they disagree) with the smaller error: half_pixel when both
do, asymmetric when only it does; when neither does, with no NPU target or no static shapes, it falls back to
asymmetric (the CLI's long-standing default; ``optimize`` decides such sites by their cost and error).
``mode=asymmetric|half_pixel`` forces one.
``compensate=true`` refits the convs consuming each changed site on calibration activations (``rewriter.compensate``).
"""

from __future__ import annotations

from typing import Any

from rewriter.compensate import compensate
from rewriter.errors import RewriteError
from rewriter.graph import Editor, GraphView
from rewriter.interp import (
    COORDINATE_MODES,
    HALF_PIXEL_FAMILY,
    InterpSite,
    compile_pattern,
    grid_shift,
    name_filter_reason,
    site_engines,
    sites,
)
from rewriter.model import ModelHandle
from rewriter.passbase import KEEP, Decision, Option, Outcome, Pass, PassContext, register

TARGET_MODES = ("asymmetric", "half_pixel")
AUTO = "auto"
NPU_TARGETS = ("kmb", "mtl")


@register
class AsymInterp(Pass):
    name = "asym_interp"
    description = ("Switch bilinear upsampling from align_corners to asymmetric (or half_pixel) coordinates; "
                   "approximate, optional least-squares compensation of the consuming convs")
    exact = False
    options = {
        "mode": Option(AUTO, str, "target coordinate mode; auto = per site, the mode that lands on the DPU "
                       "with the smaller error (half_pixel, else asymmetric)",
                       choices=(AUTO, *TARGET_MODES)),
        "from_modes": Option(["align_corners"], list, "coordinate modes to change, '|'-separated; half_pixel "
                             "also covers pytorch_half_pixel (the MiDaS head is half_pixel and left alone "
                             "unless listed)"),
        "include": Option(None, str, "regex: only change sites whose node name matches (re.search)"),
        "exclude": Option(None, str, "regex: leave sites whose node name matches (re.search)"),
        "compensate": Option(False, bool, "refit the conv(s) consuming each changed site on calibration "
                             "images so their outputs match the model before the pass"),
        "calib_count": Option(8, int, "calibration images used by compensate"),
        "ridge": Option(None, float, "compensate: ridge strength (relative to the mean diagonal of AᵀA) "
                        "pulling the refit weights towards the original ones; none = chosen per conv by "
                        "leave-images-out validation"),
    }

    def check_options(self) -> None:
        bad = [m for m in self.opts.from_modes if m not in COORDINATE_MODES]
        if bad or not self.opts.from_modes:
            raise RewriteError(f"option asym_interp.from_modes={'|'.join(self.opts.from_modes)!r}: "
                               f"unknown mode(s) {bad} (use {'|'.join(COORDINATE_MODES)})")
        if self.opts.calib_count < 1:
            raise RewriteError("option asym_interp.calib_count must be >= 1")
        compile_pattern(self.name, "include", self.opts.include)
        compile_pattern(self.name, "exclude", self.opts.exclude)

    # ---- plan ------------------------------------------------------------------------------------------------
    def _from_modes(self) -> set[str]:
        modes = set(self.opts.from_modes)
        if "half_pixel" in modes:  # IRs converted from PyTorch spell the head pytorch_half_pixel
            modes.update(HALF_PIXEL_FAMILY)
        return modes

    def _choices(self, site: InterpSite) -> tuple[tuple[str, ...], str | None]:
        """The modes this site can take, or why it can take none."""
        cm = site.coordinate_mode
        if site.mode != "linear":
            return (KEEP,), f"{site.attrs.get('raw_mode', site.mode)} mode: not bilinear"
        if site.op == "Upsample":
            return (KEEP,), "legacy opset-9 Upsample: always asymmetric, has no align_corners form"
        if site.mode_fixed:
            return (KEEP,), f"{site.op}-{site.version} has no coordinate_transformation_mode attribute ({cm})"
        if cm == "tf_crop_and_resize":
            return (KEEP,), "tf_crop_and_resize samples a roi: not a plain upsample"
        same = {m for m in TARGET_MODES if m == cm or (m == "half_pixel" and cm in HALF_PIXEL_FAMILY)}
        return (KEEP, *[m for m in ("half_pixel", "asymmetric") if m not in same]), None

    def _default(self, site: InterpSite, choices: tuple[str, ...], include, exclude,
                 engines: dict[str, dict[str, dict[str, str]]], targets: tuple[str, ...]) -> tuple[str, str]:
        target, cm = self.opts.mode, site.coordinate_mode
        if (reason := name_filter_reason(site.name, include, exclude)) is not None:
            return KEEP, reason
        if target != AUTO and target not in choices:
            return KEEP, (f"already {target}" if cm == target else
                          f"already half_pixel ({cm} equals it for integer upsampling)")
        if cm not in self._from_modes():
            already = f"already {cm}: " if cm in (*TARGET_MODES, *HALF_PIXEL_FAMILY) else ""
            return KEEP, (f"{already}coordinate mode {cm} not in from_modes ({'|'.join(self.opts.from_modes)}); "
                          "add it to change this site")
        if target == AUTO:
            return _auto(cm, choices, engines, targets)
        return target, f"{cm} → {target} (forced by mode={target})"

    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        include = compile_pattern(self.name, "include", self.opts.include)
        exclude = compile_pattern(self.name, "exclude", self.opts.exclude)
        targets = tuple(t for t in ctx.targets if t in NPU_TARGETS)
        out = []
        for site in sites(view):
            details = site.details()
            choices, blocked = self._choices(site)
            engines = site_engines(site, (site.coordinate_mode, *TARGET_MODES), tuple(ctx.targets),
                                   single_use=_single_use(view, site))
            if blocked:
                choice, reason = KEEP, blocked
            else:
                choice, reason = self._default(site, choices, include, exclude, engines, targets)
            after = choice if choice != KEEP else site.coordinate_mode
            if engines:
                details["engine_before"] = {t: e[site.coordinate_mode] for t, e in engines.items()}
                details["engine_after"] = {t: e[after] for t, e in engines.items()}
            if choice != KEEP:
                details["target_mode"] = choice
                if (shift := _grid_shift(site, choice)) is not None:
                    details["grid_shift_px"] = round(shift, 4)
            out.append(Decision(site.name, self.name, "resize", choices, choice, reason, details))
        return out

    # ---- emit ------------------------------------------------------------------------------------------------
    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        editor.set_attr(decision.site, "coordinate_mode", decision.choice)

    def needs_reference(self, changed: list[Decision], ctx: PassContext) -> bool:
        return bool(self.opts.compensate)

    def finish(self, changed: list[Decision], editor: Editor, ctx: PassContext,
               reference: ModelHandle | None) -> Outcome:
        modes = sorted({d.choice for d in changed})
        shift = max((d.details.get("grid_shift_px") or 0) for d in changed)
        out = Outcome(notes=[f"{len(changed)} site(s) now sample with {'/'.join(modes)} coordinates: the grid "
                             f"moves by up to {shift:.2f} input pixels per stage (approximate change)"],
                      extra={"target_mode": self.opts.mode, "modes": modes})
        if self.opts.compensate and reference is not None:
            comp: dict[str, Any] = compensate(reference, editor.handle, [d.site for d in changed], ctx,
                                              self.opts.calib_count, self.opts.ridge)
            out.modified = comp.pop("refit_nodes")
            out.notes += comp.pop("notes")
            out.extra["compensation"] = comp
        return out


def _grid_shift(site: InterpSite, target: str) -> float | None:
    """Largest grid move over the spatial axes, in input pixels (None when sizes are unknown)."""
    if site.input_shape is None or site.spatial_scales is None:
        return None
    shifts = []
    for n, s in zip(site.input_shape[2:], site.spatial_scales):
        if n is None:
            return None
        try:
            shifts.append(grid_shift(n, s, site.coordinate_mode, target))
        except ValueError:
            return None
    return max(shifts, default=0.0)


def _single_use(view: GraphView, site: InterpSite) -> bool:
    """The resize output has one reader (the compiler's asymmetric x2 fast path requires it)."""
    node = view.node(site.name)
    return sum(len(view.users(t)) for t in node.outputs) <= 1


def _auto(cm: str, choices: tuple[str, ...], engines: dict[str, dict[str, dict[str, str]]],
          targets: tuple[str, ...]) -> tuple[str, str]:
    """Per site: half_pixel if it lands on the DPU (half the grid shift of asymmetric), else asymmetric if it
    does, else keep. The first NPU target that lands some mode on the DPU decides."""
    if not targets or not engines:  # no lowering rule applies: the pass's historical default
        why = "no NPU target (kmb|mtl) requested" if not targets else "shapes not static"
        if "asymmetric" not in choices:
            return KEEP, f"already {cm}; {why}: no DPU placement to gain"
        return "asymmetric", f"{cm} → asymmetric: {why}, DPU placement unknown (mode=auto falls back to asymmetric)"
    if all(engines[t][cm]["engine"] == "dpu" for t in targets):
        return KEEP, f"{cm} already lands on the DPU on {'/'.join(targets)}: {engines[targets[0]][cm]['rule']}"
    for t in targets:  # the first target where the site is off the DPU and some mode lands on it decides
        on_dpu = {m for m, e in engines[t].items() if e["engine"] == "dpu"}
        if cm in on_dpu:
            continue
        for m in ("half_pixel", "asymmetric"):
            if m in choices and m in on_dpu:
                return m, f"{cm} → {m}: lands on the DPU on {t} ({engines[t][m]['rule']})"
    why = engines[targets[0]].get("asymmetric", {}).get("rule", "")
    if "asymmetric" not in choices:
        return KEEP, f"already {cm}; neither mode lands on the DPU on {'/'.join(targets)} ({why})"
    # the CLI contract's default: asymmetric, as with no NPU target (not slower; `optimize` weighs it per site)
    return "asymmetric", (f"{cm} → asymmetric: neither mode lands on the DPU on {'/'.join(targets)} ({why}); "
                          "mode=auto falls back to asymmetric")
