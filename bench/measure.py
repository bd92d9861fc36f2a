"""Parent-side measurements of one cell: fidelity vs the original, accuracy vs ground truth, CPU A/B latency.

Inputs are preprocessed exactly as the tool does (``rewriter.inputs``), metrics come from
``rewriter.metrics`` (the verification component's), and the measured ratio from ``rewriter.cost.measure_ab``
(interleaved A/B, medians) with a local interleaved fallback while that component is missing.
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rewriter.inputs import detect_preprocess, image_input, resize_crop, to_tensor
from rewriter.metrics import aggregate, compare_arrays, depth_metrics
from rewriter.model import ModelHandle
from rewriter.runtime import Runner

from .images import GT_NAME, gt_disparity, photo, resize_crop_disparity

FIDELITY_KEYS = ("rel_l2", "absrel", "delta1")


@dataclass
class EvalSet:
    """Feeds for one model: held-out photos plus the GT image (last), and the GT disparity at model size."""

    feeds: list[dict[str, np.ndarray]]
    names: list[str]
    gt: np.ndarray  # HxW disparity, inf where unknown


def eval_set(model: ModelHandle, photos: list[str]) -> EvalSet:
    """Preprocess ``photos`` + the motorcycle left view for ``model`` the way the tool does."""
    spec = image_input(model)
    if spec is None:
        raise ValueError(f"{model.name}: the bench needs a single 3-channel image input")
    name, h, w, layout = spec
    pre = detect_preprocess(model)
    left, disp = gt_disparity()
    imgs = [(p, photo(p)) for p in photos] + [(GT_NAME, left)]
    feeds = [{name: to_tensor(resize_crop(img, h, w), pre, layout)} for _, img in imgs]
    return EvalSet(feeds, [n for n, _ in imgs], resize_crop_disparity(disp, h, w))


def run_outputs(model: ModelHandle, feeds: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
    """First output of ``model`` for every feed (OpenVINO CPU, f32 precision hint)."""
    r = Runner(model, "ov")
    return [np.asarray(next(iter(r.run(f).values())), dtype=np.float32) for f in feeds]


def fidelity(ref: list[np.ndarray], out: list[np.ndarray], names: list[str]) -> dict:
    """relL2, AbsRel, δ1 of ``out`` vs ``ref`` (after scale+shift alignment for the depth ones): mean and worst."""
    per = [compare_arrays(r, o) for r, o in zip(ref, out)]
    agg = aggregate(per, list(FIDELITY_KEYS))
    return {"mean": agg["mean"], "worst": agg["worst"],
            "worst_image": {k: names[i] for k, i in agg["worst_index"].items()}, "images": len(per)}


def gt_accuracy(gt: np.ndarray, out: np.ndarray) -> dict:
    """AbsRel and δ1 of a prediction against ground-truth disparity (invalid pixels masked, aligned)."""
    mask = np.isfinite(gt) & (gt > 0)
    d = depth_metrics(gt, np.reshape(out, gt.shape), mask=mask)
    return {"absrel": d["absrel"], "delta1": d["delta1"], "valid": d["valid"]}


def measure_ab(before: ModelHandle, after: ModelHandle, runs: int, warmup: int) -> dict:
    """Interleaved A/B CPU latency through ``rewriter.cost.measure_ab`` (local fallback if it is missing)."""
    try:
        from rewriter.cost import measure_ab as cost_measure_ab
    except ImportError:
        res = local_measure_ab(before, after, runs, warmup)
        res["source"] = "bench fallback (rewriter.cost.measure_ab missing)"
        return res
    params = inspect.signature(cost_measure_ab).parameters
    kw = {}
    for name in ("runs", "n_runs", "repeats"):
        if name in params:
            kw[name] = runs
            break
    for name in ("warmup", "warmups", "n_warmup"):
        if name in params:
            kw[name] = warmup
            break
    res = dict(cost_measure_ab(before, after, **kw))
    res["source"] = "rewriter.cost.measure_ab" + (f"({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else "")
    return res


def local_measure_ab(before: ModelHandle, after: ModelHandle, runs: int, warmup: int) -> dict:
    """Interleaved A/B: warm-up, then A,B,A,B...; medians and the median of per-pair ratios."""
    feed = _zero_feed(before)
    ra, rb = Runner(before, "ov"), Runner(after, "ov")
    for _ in range(warmup):
        ra.run(feed)
        rb.run(feed)
    ta, tb = [], []
    for i in range(runs):
        order = (ra, rb) if i % 2 == 0 else (rb, ra)  # alternate who goes first: drift hits both equally
        for r in order:
            t0 = time.perf_counter()
            r.run(feed)
            (ta if r is ra else tb).append((time.perf_counter() - t0) * 1e3)
    return {"before_ms": statistics.median(ta), "after_ms": statistics.median(tb),
            "ratio": statistics.median(b / a for a, b in zip(ta, tb)), "runs": runs}


def _zero_feed(model: ModelHandle) -> dict[str, np.ndarray]:
    feed = {}
    for name, shape, _dtype in model.inputs():
        dims = [d if d is not None else 1 for d in shape]
        feed[name] = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    return feed


def predicted(report: dict) -> dict:
    """Per target {before_ms, after_ms, ratio} for the whole pipeline, from the report's ``latency``."""
    out = {}
    for t, d in (report.get("latency") or {}).items():
        b, a = d.get("before_ms"), d.get("after_ms")
        out[t] = {"before_ms": b, "after_ms": a, "ratio": (a / b) if b and a is not None else None}
    return out


def per_pass(report: dict) -> list[dict]:
    """Per pass of the report: status, sites changed, gate verdict, and predicted per-target before/after ms."""
    rows = []
    for p in report.get("passes", []):
        fid = p.get("fidelity") or {}
        rows.append({"name": p.get("name"), "status": p.get("status"), "sites_changed": p.get("sites_changed"),
                     "gate_passed": fid.get("passed"), "gate_message": fid.get("message"),
                     "seconds": p.get("seconds"), "verify_seconds": p.get("verify_seconds"),
                     "error": p.get("error"), "latency": p.get("latency") or {},
                     "notes": (p.get("notes") or [])[:5]})
    return rows


def model_size_mb(path: Path) -> float:
    """On-disk size of an ONNX file (with external data beside it) or an IR .xml + .bin."""
    p = Path(path)
    files = [p] + ([p.with_suffix(".bin")] if p.suffix == ".xml" else [])
    files += [f for f in p.parent.glob(p.name + ".data")]
    return round(sum(f.stat().st_size for f in files if f.exists()) / 2**20, 2)
