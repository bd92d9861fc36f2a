"""Compensation for ``asym_interp``: refit the convs that consume each changed resize on calibration data.

Sites are refit in graph order on the already-rewritten model, so each refit also absorbs what the earlier
sites changed; a refit is kept only when its held-out error drops and the whole output gets closer to the
model before the pass. Per-site errors and the whole-output relative L2 both ways are returned for the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import metrics
from .convs import ConvInfo, conv_info, write_conv
from .graph import CONV_KINDS, view
from .model import ModelHandle
from .refit import conv_on_patches, cross_validate_conv, fit_conv_patches, im2col, rel_l2, sample_positions

POSITIONS = 8000  # sampled output positions per conv, spread evenly over the calibration images
RIDGE_GRID = (1e-2, 1e-1, 1.0, 10.0)  # ridge strengths tried when the option leaves it to validation
MAX_FOLDS = 4  # images are split into at most this many folds for leave-images-out validation


def consumer_convs(model: ModelHandle, site: str) -> tuple[list[ConvInfo], list[str]]:
    """The float 2-D convs reading resize ``site``'s output as their data input (weights/bias as float32),
    and why each other consumer is not one."""
    v = view(model)
    out = v.node(site).outputs[0]
    convs, skipped = [], []
    for node, idx in v.users(out):
        if node.kind not in CONV_KINDS or idx != 0:
            skipped.append(f"{node.id} ({node.op_type}) is not a conv reading it")
            continue
        c = conv_info(v, node)
        if c.weight is None or not np.issubdtype(c.weight.dtype, np.floating):
            skipped.append(f"{c.name}: weights are not a float constant (quantized or computed)")
        elif c.weight.ndim != 4:
            skipped.append(f"{c.name}: not a 2-D conv")
        elif c.bias_dynamic:
            skipped.append(f"{c.name}: bias is computed at run time")
        else:
            c.weight = c.weight.astype(np.float32)  # fit in float32; write_conv restores the storage type
            c.bias = None if c.bias is None else c.bias.astype(np.float32)
            convs.append(c)
    return convs, skipped


def compensate(before: ModelHandle, after: ModelHandle, sites: list[str], ctx: Any, count: int,
               lam: float | None) -> dict[str, Any]:
    """Refit the convs consuming each changed site, site by site in graph order (see module docstring)."""
    from .runtime import Runner

    calib = ctx.calibration(before)
    feeds = calib.feeds[:count]
    notes = list(calib.notes)
    if not calib.is_images:
        notes.append("compensate: fitted on random inputs (the model input is not an image)")
    per_site, plan = [], []
    for site in sites:
        plan.append((site, *consumer_convs(after, site)))
    conv_list = [c for _, cs, _ in plan for c in cs]
    if not conv_list:
        per_site = [{"site": s, "refit": [], "note": _no_conv_note(sk)} for s, _, sk in plan]
        return {"sites": per_site, "notes": notes + ["compensate: nothing to refit"], "refit_nodes": [],
                "images": len(feeds), "source": calib.source}
    # targets: every refit conv's output in the model before the pass, sampled at fixed positions
    # one run of each model gives both the sampled conv outputs/patches and the model's outputs
    targets, reference = _sampled_outputs(Runner(before, "ov", taps=[c.biased_tap for c in conv_list]), feeds,
                                          conv_list)
    if reference is None:
        reference = _flat_outputs(before, feeds)
    swapped_err = best_err = None
    refit_nodes = []
    for site, convs, skipped in plan:
        if not convs:
            per_site.append({"site": site, "refit": [], "note": _no_conv_note(skipped)})
            continue
        runner = Runner(after, "ov", taps=list(dict.fromkeys(c.in_tap for c in convs)))
        patches_of, flat = _sampled_patches(runner, feeds, convs, {c.name: targets[c.name][1] for c in convs})
        if swapped_err is None:  # the first site with convs runs the model as swapped, before any refit
            flat = flat if flat is not None else _flat_outputs(after, feeds)
            swapped_err = best_err = metrics.rel_l2(reference, flat)
        entry: dict[str, Any] = {"site": site, "refit": []}
        written = []
        for conv in convs:
            y, positions = targets[conv.name]
            image = np.repeat(np.arange(len(positions)), [len(p) for p in positions])
            fit = _validated_fit(patches_of[conv.name], y, image, conv, lam, conv.can_take_bias)
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
                    bias = conv.bias if conv.bias is not None or not conv.can_take_bias else \
                        np.zeros(conv.weight.shape[0], np.float32)
                    write_conv(after, conv, conv.weight, bias)
                    rec["kept_original"] = (f"refit raised the model output's error ({best_err:.4g} → "
                                            f"{err:.4g} rel L2): reverted")
        per_site.append(entry)
    whole = {"without": round(swapped_err, 6), "with": round(best_err, 6)}
    notes.append(f"compensate: refit {len(refit_nodes)} conv(s) on {len(feeds)} {calib.source} input(s); "
                 f"output rel L2 vs before the pass {whole['without']:.4g} → {whole['with']:.4g}")
    return {"sites": per_site, "output_rel_l2": whole, "images": len(feeds), "source": calib.source,
            "notes": notes, "refit_nodes": refit_nodes}


def _no_conv_note(skipped: list[str]) -> str:
    why = f" ({'; '.join(skipped)})" if skipped else ""
    return f"no float conv consumes its output directly; not compensated{why}"


def _model_outputs(runner, out: dict[str, np.ndarray]) -> np.ndarray | None:
    """The model's own outputs (not the taps) of one run, flattened in name order (as :func:`_flat_outputs`);
    None when a tap is itself a model output (the runner then cannot tell them apart)."""
    names = runner.names[: len(runner.names) - len(runner.taps)]
    return np.concatenate([np.ravel(out[k]) for k in sorted(names)]) if names else None


def _sampled_outputs(runner, feeds: list[dict], convs: list[ConvInfo]
                     ) -> tuple[dict[str, tuple[np.ndarray, list]], np.ndarray]:
    """({conv: (P x Cout targets, per-feed positions)} at seeded positions, so memory stays bounded; the
    model's outputs flattened over the feeds)."""
    ys: dict[str, list] = {c.name: [] for c in convs}
    pos: dict[str, list] = {c.name: [] for c in convs}
    flat = []
    per_feed = -(-POSITIONS // max(len(feeds), 1))
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        flat.append(_model_outputs(runner, out))
        for j, c in enumerate(convs):
            y = np.asarray(out[c.biased_tap], np.float32)
            p = sample_positions(1, y.shape[2:], per_feed, seed=1000 * i + j)
            pos[c.name].append(p)
            ys[c.name].append(y[0][:, p[:, 1], p[:, 2]].T)
    return {k: (np.concatenate(v), pos[k]) for k, v in ys.items()}, _joined(flat)


def _sampled_patches(runner, feeds: list[dict], convs: list[ConvInfo],
                     positions: dict[str, list[np.ndarray]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({conv: P x Cin x kh x kw input patches} at the positions its targets were sampled at, the model's outputs
    flattened over the feeds), one run per feed."""
    parts: dict[str, list] = {c.name: [] for c in convs}
    flat = []
    for i, feed in enumerate(feeds):
        out = runner.run(feed)
        flat.append(_model_outputs(runner, out))
        for c in convs:
            x = np.asarray(out[c.in_tap], np.float32)
            g = c.geometry(x.shape[2:])
            parts[c.name].append(im2col(x, g.kernel, g.stride, g.dilation, g.pads, positions[c.name][i]))
    return {k: np.concatenate(v) for k, v in parts.items()}, _joined(flat)


def _joined(flat: list[np.ndarray | None]) -> np.ndarray | None:
    return None if any(f is None for f in flat) else np.concatenate(flat)


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
    from .runtime import run

    return np.concatenate([np.ravel(o[k]) for o in run(model, feeds) for k in sorted(o)])
