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

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from rewriter import metrics
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
from rewriter.model import ModelHandle, ir_const
from rewriter.passbase import WILL_CHANGE, Option, Pass, PassContext, PassResult, Site, register
from rewriter.refit import ConvGeometry, conv_on_patches, fit_conv_patches, im2col, rel_l2, sample_positions

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


# ---- compensation: format adapters over the conv consumers --------------------------------------------------
@dataclass
class _Conv:
    """A float conv consuming a changed site: where to tap, its weights, and how to write new ones."""

    name: str
    in_tap: str
    out_tap: str  # output including the bias
    weight: np.ndarray  # Cout x Cin/groups x kh x kw
    bias: np.ndarray | None  # None: the conv has no bias and (IR) none can be added
    can_add_bias: bool
    groups: int
    attrs: dict[str, Any]  # kernel/strides/dilations/pads/auto_pad for ConvGeometry
    ref: Any


def _onnx_convs(model: onnx.ModelProto, site: InterpSite) -> tuple[list[_Conv], list[str]]:
    out_name = site.ref.output[0]
    inits = {i.name: i for i in model.graph.initializer}
    convs, skipped = [], []
    for n in model.graph.node:
        if out_name not in n.input:
            continue
        if n.op_type != "Conv" or n.input[0] != out_name:
            skipped.append(f"{n.name or n.op_type} ({n.op_type}) is not a conv reading it")
            continue
        w = inits.get(n.input[1])
        if w is None or w.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            skipped.append(f"{n.name}: weights are not a float initializer (quantized or computed)")
            continue
        wa = numpy_helper.to_array(w)
        if wa.ndim != 4:
            skipped.append(f"{n.name}: not a 2-D conv")
            continue
        b = inits.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        convs.append(_Conv(n.name, out_name, n.output[0], wa.astype(np.float32),
                           None if b is None else numpy_helper.to_array(b).astype(np.float32), True,
                           int(attrs.get("group", 1)),
                           {"kernel": wa.shape[2:], "strides": attrs.get("strides"),
                            "dilations": attrs.get("dilations"), "pads": attrs.get("pads"),
                            "auto_pad": (attrs.get("auto_pad") or b"NOTSET").decode()}, n))
    return convs, skipped


def _ir_convs(site: InterpSite) -> tuple[list[_Conv], list[str]]:
    op = site.ref
    convs, skipped = [], []
    for target in op.output(0).get_target_inputs():
        n = target.get_node()
        t = n.get_type_name()
        if t not in ("Convolution", "GroupConvolution") or target.get_index() != 0:
            skipped.append(f"{n.get_friendly_name()} ({t}) is not a conv reading it")
            continue
        w = ir_const(n.input_value(1).get_node())
        if w is None or not np.issubdtype(w.dtype, np.floating):
            skipped.append(f"{n.get_friendly_name()}: weights are not a float constant (quantized or computed)")
            continue
        groups = 1
        if t == "GroupConvolution":  # G x Cout/G x Cin/G x kh x kw → Cout x Cin/G x kh x kw
            groups = w.shape[0]
            w = w.reshape(-1, *w.shape[2:])
        if w.ndim != 4:
            skipped.append(f"{n.get_friendly_name()}: not a 2-D conv")
            continue
        a = n.get_attributes()
        bias, out_tap = None, f"{n.get_friendly_name()}:0"
        users = list(n.output(0).get_target_inputs())
        if len(users) == 1 and users[0].get_node().get_type_name() == "Add":
            add = users[0].get_node()
            bv = ir_const(add.input_value(1 - users[0].get_index()).get_node())
            if bv is not None and bv.size == w.shape[0]:
                bias, out_tap = bv.reshape(-1).astype(np.float32), f"{add.get_friendly_name()}:0"
        convs.append(_Conv(n.get_friendly_name(), f"{op.get_friendly_name()}:0", out_tap, w.astype(np.float32),
                           bias, False, groups,
                           {"kernel": w.shape[2:], "strides": a.get("strides"), "dilations": a.get("dilations"),
                            "pads": [*a.get("pads_begin", [0, 0]), *a.get("pads_end", [0, 0])],
                            "auto_pad": str(a.get("auto_pad", "explicit"))}, n))
    return convs, skipped


def _write_onnx(model: onnx.ModelProto, conv: _Conv, w: np.ndarray, b: np.ndarray | None) -> None:
    node = conv.ref
    inits = {i.name: i for i in model.graph.initializer}
    uses: dict[str, int] = {}
    for n in model.graph.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1

    def put(slot: int, value: np.ndarray, suffix: str) -> None:
        old = node.input[slot] if len(node.input) > slot else ""
        dtype = numpy_helper.to_array(inits[old]).dtype if old in inits else np.float32
        if old and old in inits and uses.get(old, 0) == 1:  # sole user: overwrite in place
            inits[old].CopyFrom(numpy_helper.from_array(value.astype(dtype), old))
            return
        name = f"{conv.name}/{suffix}"
        model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = name

    put(1, w, "weight_refit")
    if b is not None:
        put(2, b, "bias_refit")


def _write_ir(conv: _Conv, w: np.ndarray, b: np.ndarray | None) -> None:
    import openvino.opset13 as ops

    node = conv.ref

    def replace_const(inp, value: np.ndarray) -> None:
        src = inp.get_source_output().get_node()
        if src.get_type_name() == "Convert":  # FP16-compressed: keep the f16 constant + Convert form
            const = src.input_value(0).get_node()
            new = ops.constant(value.reshape(const.get_output_shape(0)).astype(const.get_data().dtype))
            new.set_friendly_name(const.get_friendly_name())
            src.input(0).replace_source_output(new.output(0))
        else:
            new = ops.constant(value.reshape(src.get_output_shape(0)).astype(src.get_data().dtype))
            new.set_friendly_name(src.get_friendly_name())
            inp.replace_source_output(new.output(0))

    replace_const(node.input(1), w)
    if b is not None:
        add = next(iter(node.output(0).get_target_inputs()))
        replace_const(add.get_node().input(1 - add.get_index()), b)


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
        convs, skipped = _onnx_convs(after.onnx, site) if after.format == "onnx" else _ir_convs(site)
        plan.append((site, convs, skipped))
    conv_list = [c for _, cs, _ in plan for c in cs]
    if not conv_list:
        per_site = [{"site": s.name, "refit": [], "note": _no_conv_note(sk)} for s, _, sk in plan]
        return {"sites": per_site, "notes": notes + ["compensate: nothing to refit"], "refit_nodes": [],
                "images": len(feeds), "source": calib.source}
    # targets: every refit conv's output in the model before the pass, sampled at fixed positions
    targets = _sampled_outputs(Runner(before, "ov", taps=[c.out_tap for c in conv_list]), feeds, conv_list)
    reference = _flat_outputs(before, feeds)
    swapped_err = best_err = metrics.rel_l2(reference, _flat_outputs(after, feeds))
    refit_nodes = []
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
            fit = _validated_fit(patches_of[conv.name], y, image, conv, lam)
            rec = {"conv": conv.name, "rel_l2_without": round(fit["without"], 6),
                   "rel_l2_with": round(fit["with"], 6), "ridge": fit["ridge"], "validation": fit["validation"]}
            if fit["w"] is not None:
                _write(after, conv, fit["w"], fit["b"])
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
                    bias = conv.bias if conv.bias is not None or not conv.can_add_bias else \
                        np.zeros(conv.weight.shape[0], np.float32)
                    _write(after, conv, conv.weight, bias)
                    rec["kept_original"] = (f"refit raised the model output's error ({best_err:.4g} → "
                                            f"{err:.4g} rel L2): reverted")
        per_site.append(entry)
    after.tag(refit_nodes, pass_name)
    whole = {"without": round(swapped_err, 6), "with": round(best_err, 6)}
    notes.append(f"compensate: refit {len(refit_nodes)} conv(s) on {len(feeds)} {calib.source} input(s); "
                 f"output rel L2 vs before the pass {whole['without']:.4g} → {whole['with']:.4g}")
    return {"sites": per_site, "output_rel_l2": whole, "images": len(feeds), "source": calib.source,
            "notes": notes, "refit_nodes": refit_nodes}


def _write(model: ModelHandle, conv: _Conv, w: np.ndarray, b: np.ndarray | None) -> None:
    if model.format == "onnx":
        _write_onnx(model.onnx, conv, w, b)
    else:
        _write_ir(conv, w, b)
        model.ov.validate_nodes_and_infer_types()


def _no_conv_note(skipped: list[str]) -> str:
    why = f" ({'; '.join(skipped)})" if skipped else ""
    return f"no float conv consumes its output directly; not compensated{why}"


def _geometry(conv: _Conv, in_hw: tuple[int, int]) -> ConvGeometry:
    a = conv.attrs
    return ConvGeometry.from_attrs(a["kernel"], a["strides"], a["dilations"], a["pads"], a["auto_pad"], in_hw)


def _sampled_outputs(runner, feeds: list[dict], convs: list[_Conv]) -> dict[str, tuple[np.ndarray, list]]:
    """{conv: (P x Cout targets, per-feed positions)} at seeded positions, so memory stays bounded."""
    ys: dict[str, list] = {c.name: [] for c in convs}
    pos: dict[str, list] = {c.name: [] for c in convs}
    per_feed = -(-POSITIONS // max(len(feeds), 1))
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        for j, c in enumerate(convs):
            y = np.asarray(out[c.out_tap], np.float32)
            p = sample_positions(1, y.shape[2:], per_feed, seed=1000 * i + j)
            pos[c.name].append(p)
            ys[c.name].append(y[0][:, p[:, 1], p[:, 2]].T)
    return {k: (np.concatenate(v), pos[k]) for k, v in ys.items()}


def _sampled_patches(runner, feeds: list[dict], convs: list[_Conv],
                     positions: dict[str, list[np.ndarray]]) -> dict[str, np.ndarray]:
    """{conv: P x Cin x kh x kw input patches} at the positions its targets were sampled at (one run per feed)."""
    parts: dict[str, list] = {c.name: [] for c in convs}
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        for c in convs:
            x = np.asarray(out[c.in_tap], np.float32)
            g = _geometry(c, x.shape[2:])
            parts[c.name].append(im2col(x, g.kernel, g.stride, g.dilation, g.pads, positions[c.name][i]))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _validated_fit(patches: np.ndarray, y: np.ndarray, image: np.ndarray, conv: _Conv,
                   ridge: float | None) -> dict[str, Any]:
    """Refit ``conv`` and estimate its error on data it was not fit on.

    Rows are grouped by calibration image; each fold of images is predicted by a fit on the others
    (positions of one image when there is a single image). A refit on a few images can learn channel
    correlations that do not hold on other scenes, so the weights are kept only when the held-out error
    drops; ``ridge=None`` also picks the ridge strength on the held-out error.
    """
    use_bias = conv.bias is not None or conv.can_add_bias
    n_img = int(image.max()) + 1
    if n_img >= 2:
        fold, validation = image % min(n_img, MAX_FOLDS), f"leave-images-out ({min(n_img, MAX_FOLDS)} folds)"
    else:
        fold, validation = np.random.default_rng(0).permutation(len(y)) % MAX_FOLDS, "held-out positions"
    without = rel_l2(conv_on_patches(patches, conv.weight, conv.bias, conv.groups), y)
    best = None
    for lam in (RIDGE_GRID if ridge is None else (ridge,)):
        pred = np.zeros(y.shape, np.float64)
        for k in np.unique(fold):
            tr, te = fold != k, fold == k
            w, b = fit_conv_patches(patches[tr], y[tr], conv.weight.shape, conv.groups, lam, conv.weight, use_bias)
            pred[te] = conv_on_patches(patches[te], w, b, conv.groups)
        err = rel_l2(pred, y)
        if best is None or err < best[0]:
            best = (err, lam)
    err, lam = best
    out = {"without": without, "with": err, "ridge": lam, "validation": validation, "w": None, "b": None}
    if err < without:
        out["w"], out["b"] = fit_conv_patches(patches, y, conv.weight.shape, conv.groups, lam, conv.weight,
                                              use_bias)
    return out


def _flat_outputs(model: ModelHandle, feeds: list[dict]) -> np.ndarray:
    """Every output of the model on every feed, flattened into one vector (for a whole-model rel L2)."""
    from rewriter.runtime import run

    return np.concatenate([np.ravel(o[k]) for o in run(model, feeds) for k in sorted(o)])
