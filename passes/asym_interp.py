"""``asym_interp``: change the coordinate mode of bilinear upsampling (align_corners → asymmetric).

The NPU compiler handles ``align_corners`` bilinear upsampling poorly (its weights vary with position), while
``asymmetric`` (or ``half_pixel``) with an integer scale is a fixed stencil it can run cheaply — and that
``interp_deconv`` can turn into a depthwise transposed conv. The swap is **approximate**: geometrically the
sampling grid moves. With align_corners, output ``o`` of an ``L → sL`` upsample reads input coordinate
``o (L-1)/(sL-1)``; with asymmetric it reads ``o / s``; the two agree at the first sample and drift apart
towards the far border by up to ``1 - 1/s`` input pixels before clamping (half a pixel for x2, per stage).
half_pixel spreads the shift over both borders (up to half a pixel each side); on a trained MiDaS,
asymmetric moved the output about twice as much as half_pixel, so the target mode is an option.

``compensate=true`` refits the weights of the convolution(s) that directly consume each changed site, by
ridge least squares on captured activations (``rewriter.refit``), so their outputs match the model before
the pass on calibration images; sites are refit in graph order on the already-rewritten model, so each
refit also absorbs what the earlier sites changed. Per-site errors with and without compensation (held-out
positions) and the whole-output relative L2 both ways go to ``PassResult.extra``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx

from rewriter import metrics
from rewriter.convs import IR_CONV_OPS, ConvInfo, OnnxIndex, ir_conv, onnx_conv, write_conv
from rewriter.errors import RewriteError
from rewriter.interp import (
    COORDINATE_MODES,
    HALF_PIXEL_FAMILY,
    InterpSite,
    compile_pattern,
    find_sites,
    grid_shift,
    name_filter_reason,
)
from rewriter.model import ModelHandle
from rewriter.passbase import WILL_CHANGE, Option, Pass, PassContext, PassResult, Site, register
from rewriter.refit import (
    conv_on_patches,
    cross_validate_conv,
    fit_conv_patches,
    im2col,
    rel_l2,
    sample_positions,
)

TARGET_MODES = ("asymmetric", "half_pixel")
POSITIONS = 8000  # sampled output positions per conv, spread evenly over the calibration images
RIDGE_GRID = (1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried when the option leaves it to validation
MAX_FOLDS = 4  # images are split into at most this many folds for leave-images-out validation


@register
class AsymInterp(Pass):
    name = "asym_interp"
    description = ("Switch bilinear upsampling from align_corners to asymmetric (or half_pixel) coordinates; "
                   "approximate, optional least-squares compensation of the consuming convs")
    formats = ("onnx", "ir")
    exact = False
    options = {
        "mode": Option("asymmetric", str, "target coordinate mode", choices=TARGET_MODES),
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
        bad = [m for m in self.opts["from_modes"] if m not in COORDINATE_MODES]
        if bad or not self.opts["from_modes"]:
            raise RewriteError(f"option asym_interp.from_modes={'|'.join(self.opts['from_modes'])!r}: "
                               f"unknown mode(s) {bad} (use {'|'.join(COORDINATE_MODES)})")
        if self.opts["calib_count"] < 1:
            raise RewriteError("option asym_interp.calib_count must be >= 1")
        self._include = compile_pattern(self.name, "include", self.opts["include"])
        self._exclude = compile_pattern(self.name, "exclude", self.opts["exclude"])

    # ---- match ----------------------------------------------------------------------------------------
    def _from_modes(self) -> set[str]:
        modes = set(self.opts["from_modes"])
        if "half_pixel" in modes:  # IRs converted from PyTorch spell the head pytorch_half_pixel
            modes.update(HALF_PIXEL_FAMILY)
        return modes

    def _decide(self, site: InterpSite) -> str:
        target = self.opts["mode"]
        cm = site.coordinate_mode
        if site.mode != "linear":
            return f"{site.attrs.get('raw_mode', site.mode)} mode: not bilinear"
        if site.op == "Upsample":
            return "legacy opset-9 Upsample: always asymmetric, has no align_corners form"
        if site.mode_fixed:
            return f"{site.op}-{site.version} has no coordinate_transformation_mode attribute ({cm})"
        if (reason := name_filter_reason(site.name, self._include, self._exclude)) is not None:
            return reason
        if cm == target:
            return f"already {target}"
        if target == "half_pixel" and cm in HALF_PIXEL_FAMILY:
            return f"already half_pixel ({cm} equals it for integer upsampling)"
        if cm == "tf_crop_and_resize":
            return "tf_crop_and_resize samples a roi: not a plain upsample"
        if cm not in self._from_modes():
            return (f"coordinate mode {cm} not in from_modes ({'|'.join(self.opts['from_modes'])}); "
                    f"add it to change this site")
        return WILL_CHANGE

    def match(self, model: ModelHandle, ctx: PassContext) -> list[Site]:
        out = []
        for site in find_sites(model):
            decision = self._decide(site)
            details = site.details()
            if decision == WILL_CHANGE:
                details["target_mode"] = self.opts["mode"]
                shift = _grid_shift(site, self.opts["mode"])
                if shift is not None:
                    details["grid_shift_px"] = round(shift, 4)
            out.append(Site(site.name, site.op, decision, details))
        return out

    # ---- apply ----------------------------------------------------------------------------------------
    def apply(self, model: ModelHandle, ctx: PassContext) -> PassResult:
        target = self.opts["mode"]
        sites = find_sites(model)
        decisions = [self._decide(s) for s in sites]
        before = model.clone() if self.opts["compensate"] else None
        result_sites, changed, notes = [], [], []
        for site, decision in zip(sites, decisions):
            details = site.details()
            if decision == WILL_CHANGE:
                details["target_mode"] = target
                shift = _grid_shift(site, target)
                if shift is not None:
                    details["grid_shift_px"] = round(shift, 4)
                if model.format == "onnx":
                    node = site.ref
                    if not node.name:  # tags and diffs need a name; keep it stable: the output tensor's
                        node.name = site.name = f"Resize:{node.output[0]}"
                        notes.append(f"unnamed Resize producing '{node.output[0]}' named '{node.name}'")
                    _set_onnx_attr(node, "coordinate_transformation_mode", target)
                else:
                    site.ref.set_attribute("coordinate_transformation_mode", target)
                changed.append(site)
            result_sites.append(Site(site.name, site.op, decision, details))
        if model.format == "ir" and changed:
            model.ov.validate_nodes_and_infer_types()
        model.tag([s.name for s in changed], self.name)
        new_nodes = [s.name for s in changed]
        extra: dict[str, Any] = {"target_mode": target}
        if changed:
            notes.append(f"{len(changed)} site(s) now sample with {target} coordinates: the grid moves by up "
                         f"to {max((d.details.get('grid_shift_px') or 0) for d in result_sites):.2f} input "
                         "pixels per stage (approximate change)")
        if self.opts["compensate"] and changed:
            comp = _compensate(before, model, changed, ctx, self.opts["calib_count"], self.opts["ridge"], self.name)
            new_nodes += comp.pop("refit_nodes")
            notes += comp.pop("notes")
            extra["compensation"] = comp
        elif self.opts["compensate"]:
            notes.append("compensate: no site changed, nothing to refit")
        return PassResult(result_sites, new_nodes, notes, extra)


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


def _set_onnx_attr(node: onnx.NodeProto, name: str, value: str) -> None:
    for a in node.attribute:
        if a.name == name:
            a.s = value.encode()
            return
    node.attribute.append(onnx.helper.make_attribute(name, value))


# ---- compensation: the convs consuming a changed site ------------------------------------------------------------
def _consumer_convs(model: ModelHandle, site: InterpSite) -> tuple[list[ConvInfo], list[str]]:
    """The float 2-D convs reading the site's output as their data input (weights/bias as float32), and
    why each other consumer is not one."""
    if model.format == "onnx":
        out_name = site.ref.output[0]
        index = OnnxIndex(model.onnx)
        users = [(n, n.op_type, n.name or n.op_type, n.op_type == "Conv" and n.input[0] == out_name)
                 for n in model.onnx.graph.node if out_name in n.input]
        what = "initializer"
    else:
        users = [(t.get_node(), t.get_node().get_type_name(), t.get_node().get_friendly_name(),
                  t.get_node().get_type_name() in IR_CONV_OPS and t.get_index() == 0)
                 for t in site.ref.output(0).get_target_inputs()]
        what = "constant"
    convs, skipped = [], []
    for node, op, label, reads in users:
        if not reads:
            skipped.append(f"{label} ({op}) is not a conv reading it")
            continue
        c = onnx_conv(node, index) if model.format == "onnx" else ir_conv(node)
        floats = (np.float32, np.float16) if model.format == "onnx" else (np.floating,)
        if c.weight is None or not any(np.issubdtype(c.weight.dtype, f) for f in floats):
            skipped.append(f"{c.name}: weights are not a float {what} (quantized or computed)")
        elif c.weight.ndim != 4:
            skipped.append(f"{c.name}: not a 2-D conv")
        elif c.bias_dynamic:
            skipped.append(f"{c.name}: bias is computed at run time")
        else:
            c.weight = c.weight.astype(np.float32)  # fit in float32; write_conv restores the storage type
            c.bias = None if c.bias is None else c.bias.astype(np.float32)
            convs.append(c)
    return convs, skipped


def _compensate(before: ModelHandle, after: ModelHandle, sites: list[InterpSite], ctx: PassContext,
                count: int, lam: float, pass_name: str) -> dict[str, Any]:
    """Refit the convs consuming each changed site, site by site in graph order (see module docstring)."""
    from rewriter.runtime import Runner

    calib = ctx.calibration(before)
    feeds = calib.feeds[:count]
    notes = list(calib.notes)
    if not calib.is_images:
        notes.append("compensate: fitted on random inputs (the model input is not an image)")
    per_site, plan = [], []
    for site in sites:
        plan.append((site, *_consumer_convs(after, site)))
    conv_list = [c for _, cs, _ in plan for c in cs]
    if not conv_list:
        per_site = [{"site": s.name, "refit": [], "note": _no_conv_note(sk)} for s, _, sk in plan]
        return {"sites": per_site, "notes": notes + ["compensate: nothing to refit"], "refit_nodes": [],
                "images": len(feeds), "source": calib.source}
    # targets: every refit conv's output in the model before the pass, sampled at fixed positions
    targets = _sampled_outputs(Runner(before, "ov", taps=[c.biased_tap for c in conv_list]), feeds, conv_list)
    reference = _flat_outputs(before, feeds)
    swapped_err = best_err = metrics.rel_l2(reference, _flat_outputs(after, feeds))
    refit_nodes = []
    can_add_bias = after.format == "onnx"  # an IR conv carries its bias in an Add it may not have
    for site, convs, skipped in plan:
        if not convs:
            per_site.append({"site": site.name, "refit": [], "note": _no_conv_note(skipped)})
            continue
        runner = Runner(after, "ov", taps=list(dict.fromkeys(c.in_tap for c in convs)))
        patches_of = _sampled_patches(runner, feeds, convs, {c.name: targets[c.name][1] for c in convs})
        entry: dict[str, Any] = {"site": site.name, "refit": []}
        written = []
        for conv in convs:
            y, positions = targets[conv.name]
            image = np.repeat(np.arange(len(positions)), [len(p) for p in positions])
            fit = _validated_fit(patches_of[conv.name], y, image, conv, lam, can_add_bias)
            rec = {"conv": conv.name, "rel_l2_without": round(fit["without"], 6),
                   "rel_l2_with": round(fit["with"], 6), "ridge": fit["ridge"], "validation": fit["validation"]}
            if fit["w"] is not None:
                write_conv(after, conv, fit["w"], fit["b"])
                written.append((conv, rec))
            else:
                rec["kept_original"] = "refit did not lower the conv's error on held-out data"
            entry["refit"].append(rec)
        if written:
            # a conv closer to its old output can still move the model output further (downstream layers
            # weigh channels unevenly): keep a site's refit only if the whole output gets closer too
            err = metrics.rel_l2(reference, _flat_outputs(after, feeds))
            entry["output_rel_l2"] = round(err, 6)
            if err < best_err:
                best_err = err
                refit_nodes += [c.name for c, _ in written]
            else:
                for conv, rec in written:
                    bias = conv.bias if conv.bias is not None or not can_add_bias else \
                        np.zeros(conv.weight.shape[0], np.float32)
                    write_conv(after, conv, conv.weight, bias)
                    rec["kept_original"] = (f"refit raised the model output's error ({best_err:.4g} → "
                                            f"{err:.4g} rel L2): reverted")
        per_site.append(entry)
    after.tag(refit_nodes, pass_name)
    whole = {"without": round(swapped_err, 6), "with": round(best_err, 6)}
    notes.append(f"compensate: refit {len(refit_nodes)} conv(s) on {len(feeds)} {calib.source} input(s); "
                 f"output rel L2 vs before the pass {whole['without']:.4g} → {whole['with']:.4g}")
    return {"sites": per_site, "output_rel_l2": whole, "images": len(feeds), "source": calib.source,
            "notes": notes, "refit_nodes": refit_nodes}


def _no_conv_note(skipped: list[str]) -> str:
    why = f" ({'; '.join(skipped)})" if skipped else ""
    return f"no float conv consumes its output directly; not compensated{why}"


def _sampled_outputs(runner, feeds: list[dict], convs: list[ConvInfo]) -> dict[str, tuple[np.ndarray, list]]:
    """{conv: (P x Cout targets, per-feed positions)} at seeded positions, so memory stays bounded."""
    ys: dict[str, list] = {c.name: [] for c in convs}
    pos: dict[str, list] = {c.name: [] for c in convs}
    per_feed = -(-POSITIONS // max(len(feeds), 1))
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        for j, c in enumerate(convs):
            y = np.asarray(out[c.biased_tap], np.float32)
            p = sample_positions(1, y.shape[2:], per_feed, seed=1000 * i + j)
            pos[c.name].append(p)
            ys[c.name].append(y[0][:, p[:, 1], p[:, 2]].T)
    return {k: (np.concatenate(v), pos[k]) for k, v in ys.items()}


def _sampled_patches(runner, feeds: list[dict], convs: list[ConvInfo],
                     positions: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """{conv: P x Cin x kh x kw input patches} at the positions its targets were sampled at (one run per feed)."""
    parts: dict[str, list] = {c.name: [] for c in convs}
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        for c in convs:
            x = np.asarray(out[c.in_tap], np.float32)
            g = c.geometry(x.shape[2:])
            parts[c.name].append(im2col(x, g.kernel, g.stride, g.dilation, g.pads, positions[c.name][i]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _validated_fit(patches: np.ndarray, y: np.ndarray, image: np.ndarray, conv: ConvInfo,
                   ridge: float | None, can_add_bias: bool) -> dict[str, Any]:
    """Refit ``conv`` and estimate its error on data it was not fit on.

    Rows are grouped by calibration image; each fold of images is predicted by a fit on the others
    (positions of one image when there is a single image). A refit on a few images can learn channel
    correlations that do not hold on other scenes, so the weights are kept only when the held-out error
    drops; ``ridge=None`` also picks the ridge strength on the held-out error.
    """
    use_bias = conv.bias is not None or can_add_bias
    n_img = int(image.max()) + 1
    if n_img >= 2:
        fold, validation = image % min(n_img, MAX_FOLDS), f"leave-images-out ({min(n_img, MAX_FOLDS)} folds)"
    else:
        fold, validation = np.random.default_rng(0).permutation(len(y)) % MAX_FOLDS, "held-out positions"
    without = rel_l2(conv_on_patches(patches, conv.weight, conv.bias, conv.groups), y)
    lams = RIDGE_GRID if ridge is None else (ridge,)
    errs = cross_validate_conv(patches, y, fold, conv.weight.shape, conv.groups, lams, conv.weight, use_bias)
    lam = min(lams, key=lambda v: errs[v])  # first of the grid on ties, as a strict < scan would pick
    err = errs[lam]
    out = {"without": without, "with": err, "ridge": lam, "validation": validation, "w": None, "b": None}
    if err < without:
        out["w"], out["b"] = fit_conv_patches(patches, y, conv.weight.shape, conv.groups, lam, conv.weight,
                                              use_bias)
    return out


def _flat_outputs(model: ModelHandle, feeds: list[dict]) -> np.ndarray:
    """Every output of the model on every feed, flattened into one vector (for a whole-model rel L2)."""
    from rewriter.runtime import run

    return np.concatenate([np.ravel(o[k]) for o in run(model, feeds) for k in sorted(o)])
