"""Fidelity metrics on output arrays (pure numpy, float64 internally, always finite).

Two kinds of comparison:

* **Raw** (`compare_arrays`): max abs error, max error relative to the reference's scale (max of range and peak),
  relative L2,
  cosine similarity and PSNR over the reference's range. These gate exact passes.
* **Depth** (`depth_metrics`): MiDaS outputs are relative inverse depth (disparity) defined up to scale and
  shift, so the output is first aligned to the reference by least-squares scale+shift *on disparity*
  (the MiDaS evaluation protocol), then both are turned into depth = 1 / max(disparity, floor) and compared
  with AbsRel and delta1 (fraction of pixels with max(d/d_ref, d_ref/d) < 1.25).

  The **disparity floor** is ``DISPARITY_FLOOR_FRACTION`` (1%) of the reference's largest valid disparity
  (and at least ``ABS_FLOOR``), i.e. depth is capped at 100x the nearest point of the reference. It stops
  zero / near-zero / negative disparities (sky, a ReLU-clamped region, a misaligned shift) from producing
  infinite depth and blowing AbsRel up, the way MiDaS evaluations cap depth (10 m on NYU, 80 m on KITTI).

Degenerate inputs (all-zero, constant, empty mask) give finite numbers, never NaN or inf:
  relative errors fall back to the other array's norm when the reference is zero (both zero → 0);
  cosine of two zero arrays is 1, of one zero array 0; PSNR is capped at ``PSNR_CAP`` dB;
  an output with no variance is aligned to the reference's mean (scale 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

DISPARITY_FLOOR_FRACTION = 0.01  # depth capped at 100x the nearest reference point
ABS_FLOOR = 1e-8  # floor when the reference has no positive disparity at all
PSNR_CAP = 200.0  # dB; identical arrays report this instead of inf
DELTA1_THRESHOLD = 1.25
_TINY = 1e-30

# Direction of each metric: True when larger is better (used for "worst image" and for budgets).
HIGHER_IS_BETTER = {"cosine": True, "psnr": True, "delta1": True,
                    "max_abs": False, "rel_max": False, "rel_l2": False, "absrel": False}


def _f64(a: np.ndarray) -> np.ndarray:
    # non-finite values (a NaN from a broken model) become large finite numbers so metrics stay finite
    return np.nan_to_num(np.asarray(a, dtype=np.float64), nan=0.0, posinf=1e30, neginf=-1e30).ravel()


def max_abs(ref: np.ndarray, out: np.ndarray) -> float:
    """Largest absolute elementwise difference."""
    r, o = _f64(ref), _f64(out)
    return float(np.max(np.abs(o - r))) if r.size else 0.0


def peak(a: np.ndarray) -> float:
    """Largest absolute value (the "output magnitude" tolerances are scaled by)."""
    x = _f64(a)
    return float(np.max(np.abs(x))) if x.size else 0.0


def span(a: np.ndarray) -> float:
    """The range max - min; for a constant array its peak |value| (0 only for an all-zero array)."""
    x = _f64(a)
    if not x.size:
        return 0.0
    return float(x.max() - x.min()) or peak(x)


def scale(a: np.ndarray) -> float:
    """The magnitude errors are measured against: max(range, peak |value|).

    The range for outputs centred on zero; the peak for outputs riding on an offset, where fp32 rounding
    noise scales with the values, not with their spread.
    """
    return max(span(a), peak(a))


def rel_max(ref: np.ndarray, out: np.ndarray) -> float:
    """max |out - ref| / scale(ref) — the float-tolerance measure (``scale``: max of range and peak).

    Falls back to ``scale(out)`` when the reference is all zero; both zero → 0.
    """
    d = max_abs(ref, out)
    den = scale(ref) or scale(out)
    return d / den if den > _TINY else 0.0


def rel_l2(ref: np.ndarray, out: np.ndarray) -> float:
    """||out - ref|| / ||ref|| (falls back to ||out|| when the reference is zero; both zero → 0)."""
    r, o = _f64(ref), _f64(out)
    d = float(np.linalg.norm(o - r))
    den = float(np.linalg.norm(r)) or float(np.linalg.norm(o))
    return d / den if den > _TINY else 0.0


def cosine(ref: np.ndarray, out: np.ndarray) -> float:
    """Cosine similarity; 1 when both are zero, 0 when exactly one is."""
    r, o = _f64(ref), _f64(out)
    nr, no = float(np.linalg.norm(r)), float(np.linalg.norm(o))
    if nr <= _TINY and no <= _TINY:
        return 1.0
    if nr <= _TINY or no <= _TINY:
        return 0.0
    return float(np.clip(np.dot(r, o) / (nr * no), -1.0, 1.0))


def psnr(ref: np.ndarray, out: np.ndarray) -> float:
    """PSNR in dB over the reference's range (max - min; else its peak; else the output's peak; else 1).

    Capped at ``PSNR_CAP`` so identical arrays give a finite number.
    """
    r, o = _f64(ref), _f64(out)
    if not r.size:
        return PSNR_CAP
    rmse = float(np.sqrt(np.mean((o - r) ** 2)))
    rng = span(r) or peak(o) or 1.0
    if rmse <= _TINY:
        return PSNR_CAP
    return float(min(PSNR_CAP, 20.0 * math.log10(rng / rmse)))


def align_scale_shift(ref: np.ndarray, out: np.ndarray, mask: np.ndarray | None = None
                      ) -> tuple[np.ndarray, float, float]:
    """Least-squares ``s, t`` minimising ||s*out + t - ref||² over ``mask``; returns (s*out + t, s, t).

    An output with no variance on the mask is aligned to the reference's mean (s = 0).
    """
    r, o = _f64(ref), _f64(out)
    m = np.ones_like(r, dtype=bool) if mask is None else np.asarray(mask, dtype=bool).ravel()
    if not m.any():
        return o.reshape(np.shape(out)), 1.0, 0.0
    rm, om = r[m], o[m]
    mo, mr = om.mean(), rm.mean()
    var = float(np.mean((om - mo) ** 2))
    if var <= _TINY * max(1.0, mo * mo):
        s, t = 0.0, float(mr)
    else:
        s = float(np.mean((om - mo) * (rm - mr)) / var)
        t = float(mr - s * mo)
    return (s * o + t).reshape(np.shape(out)), s, t


def disparity_floor(ref_disparity: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The floor depth metrics clamp disparity to: 1% of the reference's largest valid disparity."""
    r = _f64(ref_disparity)
    if mask is not None:
        r = r[np.asarray(mask, dtype=bool).ravel()]
    top = float(r.max()) if r.size else 0.0
    return max(DISPARITY_FLOOR_FRACTION * top, ABS_FLOOR)


def depth_metrics(reference: np.ndarray, output: np.ndarray, mask: np.ndarray | None = None,
                  align: bool = True) -> dict[str, float]:
    """AbsRel and delta1 of ``output`` against ``reference``, both disparity (inverse depth).

    ``output`` is aligned to ``reference`` by least-squares scale+shift on disparity (``align=False`` skips
    it), then depth = 1 / max(disparity, floor) with the floor of ``disparity_floor``. ``mask`` selects the
    valid pixels (e.g. finite ground truth); non-finite reference pixels are always excluded.
    Returns ``{"absrel", "delta1", "scale", "shift", "floor", "valid"}``; with no valid pixel, absrel 0,
    delta1 1 and valid 0.
    """
    ref_raw = np.asarray(reference, dtype=np.float64)
    out_raw = np.asarray(output, dtype=np.float64)
    if ref_raw.size != out_raw.size:
        raise ValueError(f"depth_metrics: reference has {ref_raw.size} values, output {out_raw.size}")
    valid = np.isfinite(ref_raw).ravel() & np.isfinite(out_raw).ravel()
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool).ravel()
    ref, out = _f64(ref_raw), _f64(out_raw)
    if not valid.any():
        return {"absrel": 0.0, "delta1": 1.0, "scale": 1.0, "shift": 0.0, "floor": ABS_FLOOR, "valid": 0}
    if align:
        aligned, s, t = align_scale_shift(ref, out, valid)
        aligned = aligned.ravel()
    else:
        aligned, s, t = out, 1.0, 0.0
    floor = disparity_floor(ref, valid)
    d_ref = 1.0 / np.maximum(ref[valid], floor)
    d_out = 1.0 / np.maximum(aligned[valid], floor)
    absrel = float(np.mean(np.abs(d_out - d_ref) / d_ref))
    ratio = np.maximum(d_out / d_ref, d_ref / d_out)
    delta1 = float(np.mean(ratio < DELTA1_THRESHOLD))
    return {"absrel": absrel, "delta1": delta1, "scale": s, "shift": t, "floor": floor,
            "valid": int(valid.sum())}


def compare_arrays(ref: np.ndarray, out: np.ndarray, depth: bool = True) -> dict[str, float]:
    """All metrics of ``out`` against ``ref``: max_abs, rel_max, rel_l2, cosine, psnr (+ absrel, delta1).

    Shapes must hold the same number of values (a leading batch/channel of 1 may differ).
    """
    r, o = np.asarray(ref), np.asarray(out)
    if r.size != o.size:
        raise ValueError(f"compare_arrays: shapes {list(r.shape)} and {list(o.shape)} differ")
    res = {"max_abs": max_abs(r, o), "rel_max": rel_max(r, o), "rel_l2": rel_l2(r, o),
           "cosine": cosine(r, o), "psnr": psnr(r, o), "range": span(r)}
    if depth:
        dm = depth_metrics(r, o)
        res["absrel"], res["delta1"] = dm["absrel"], dm["delta1"]
    return res


def worst_of(name: str, values: Iterable[float]) -> float:
    """The worst of ``values`` for metric ``name`` (min for higher-is-better metrics, else max)."""
    vals = list(values)
    return (min if HIGHER_IS_BETTER.get(name, False) else max)(vals)


def aggregate(per_image: list[dict[str, float]], names: list[str] | None = None) -> dict:
    """Mean and worst image over per-image metric dicts.

    Returns ``{"mean": {m: v}, "worst": {m: v}, "worst_index": {m: i}}`` for every metric in
    ``HIGHER_IS_BETTER`` present in the dicts (or ``names``). ``max_abs``'s "mean" is the mean of per-image
    maxima; the tolerance gate uses its worst.
    """
    if not per_image:
        return {"mean": {}, "worst": {}, "worst_index": {}}
    keys = names or [k for k in HIGHER_IS_BETTER if k in per_image[0]]
    mean, worst, idx = {}, {}, {}
    for k in keys:
        vals = [float(d[k]) for d in per_image]
        mean[k] = float(np.mean(vals))
        w = worst_of(k, vals)
        worst[k] = w
        idx[k] = vals.index(w)
    return {"mean": mean, "worst": worst, "worst_index": idx}
