"""Metrics against hand-computed values, including degenerate (all-zero, constant, NaN) outputs."""

import math

import numpy as np
import pytest

from rewriter import metrics as M


def finite(d: dict) -> bool:
    return all(math.isfinite(v) for v in d.values())


def test_raw_metrics_hand_computed():
    ref = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    out = np.array([0.0, 1.0, 2.0, 4.0], np.float32)
    r = M.compare_arrays(ref, out, depth=False)
    assert r["max_abs"] == pytest.approx(1.0)
    assert r["rel_max"] == pytest.approx(1.0 / 3.0)  # max error / range (3 - 0)
    assert r["rel_l2"] == pytest.approx(1.0 / math.sqrt(14.0))
    assert r["cosine"] == pytest.approx(17.0 / math.sqrt(14.0 * 21.0))
    assert r["psnr"] == pytest.approx(20 * math.log10(3.0 / 0.5))  # rmse = sqrt(1/4)
    assert r["range"] == pytest.approx(3.0)


def test_identical_arrays():
    a = np.linspace(-1, 1, 50).reshape(5, 10)
    r = M.compare_arrays(a, a.copy())
    assert r["max_abs"] == 0 and r["rel_l2"] == 0 and r["rel_max"] == 0
    assert r["cosine"] == pytest.approx(1.0)
    assert r["psnr"] == M.PSNR_CAP
    assert r["absrel"] == pytest.approx(0.0, abs=1e-12) and r["delta1"] == 1.0


def test_all_zero_outputs_are_finite():
    z = np.zeros((1, 1, 8, 8), np.float32)
    r = M.compare_arrays(z, z)
    assert finite(r)
    assert r["rel_l2"] == 0 and r["rel_max"] == 0 and r["cosine"] == 1.0 and r["psnr"] == M.PSNR_CAP
    assert r["absrel"] == 0 and r["delta1"] == 1.0
    # zero reference, non-zero output: relative errors fall back to the output's norm/range
    o = np.ones_like(z)
    r = M.compare_arrays(z, o)
    assert finite(r)
    assert r["rel_l2"] == pytest.approx(1.0)
    assert r["cosine"] == 0.0
    assert r["rel_max"] == pytest.approx(1.0)
    # zero output against a real reference
    ref = np.arange(64, dtype=np.float32).reshape(z.shape)
    r = M.compare_arrays(ref, z)
    assert finite(r)
    assert r["rel_l2"] == pytest.approx(1.0) and r["cosine"] == 0.0


def test_constant_outputs_are_finite():
    ref = np.full((4, 4), 5.0)
    out = np.full((4, 4), 5.1)
    r = M.compare_arrays(ref, out)
    assert finite(r)
    assert r["rel_max"] == pytest.approx(0.1 / 5.0)  # range 0: the constant's magnitude stands in
    assert r["psnr"] == pytest.approx(20 * math.log10(5.0 / 0.1))
    # a constant output aligns to the reference mean (scale 0): identical constant depth
    assert r["absrel"] == pytest.approx(0.0) and r["delta1"] == 1.0
    # constant output against a varying reference: finite, and not a perfect score
    ref2 = np.arange(1.0, 17.0).reshape(4, 4)
    d = M.depth_metrics(ref2, out)
    assert finite(d) and d["scale"] == 0.0 and d["shift"] == pytest.approx(ref2.mean())
    assert d["absrel"] > 0.1


def test_nan_and_inf_never_leak():
    ref = np.array([1.0, 2.0, 3.0, 4.0])
    out = np.array([1.0, np.nan, np.inf, -np.inf])
    r = M.compare_arrays(ref, out)
    assert finite(r)
    assert r["rel_l2"] > 1.0


def test_scale_shift_alignment():
    ref = np.array([1.0, 2.0, 5.0, 7.0])
    out = 2.0 * ref + 3.0
    aligned, s, t = M.align_scale_shift(ref, out)
    assert s == pytest.approx(0.5) and t == pytest.approx(-1.5)
    np.testing.assert_allclose(aligned, ref, atol=1e-12)
    # masked: only the first three pixels count, the fourth is garbage
    out2 = out.copy()
    out2[3] = -100.0
    _, s2, t2 = M.align_scale_shift(ref, out2, mask=np.array([1, 1, 1, 0], bool))
    assert s2 == pytest.approx(0.5) and t2 == pytest.approx(-1.5)


def test_depth_metrics_hand_computed():
    ref = np.array([1.0, 2.0, 4.0, 8.0])  # depth 1, 0.5, 0.25, 0.125
    out = np.array([1.0, 2.0, 4.0, 4.0])  # last pixel twice as far
    d = M.depth_metrics(ref, out, align=False)
    assert d["absrel"] == pytest.approx(0.25)  # (0 + 0 + 0 + 1) / 4
    assert d["delta1"] == pytest.approx(0.75)  # ratio 2 ≥ 1.25 on one pixel of four
    assert d["floor"] == pytest.approx(0.08)  # 1% of the largest reference disparity
    # scale and shift of disparity are forgiven
    d2 = M.depth_metrics(ref, 3.0 * ref + 1.0)
    assert d2["absrel"] == pytest.approx(0.0, abs=1e-9) and d2["delta1"] == 1.0


def test_disparity_floor_stops_blow_up():
    ref = np.array([1.0, 0.02])  # depth 1 and 50
    out = np.array([1.0, 0.001])  # would be depth 1000 without the floor
    d = M.depth_metrics(ref, out, align=False)
    # floor 0.01: output depth capped at 100, so AbsRel = (0 + |100 - 50| / 50) / 2
    assert d["absrel"] == pytest.approx(0.5)
    # zero and negative disparities sit on the floor: identical to a reference at the floor
    d = M.depth_metrics(np.array([1.0, 0.0]), np.array([1.0, -3.0]), align=False)
    assert d["absrel"] == pytest.approx(0.0) and d["delta1"] == 1.0


def test_depth_mask_and_empty_mask():
    ref = np.array([1.0, 2.0, np.inf, 4.0])  # inf = invalid ground truth (Middlebury)
    out = np.array([1.0, 2.0, 123.0, 4.0])
    d = M.depth_metrics(ref, out)
    assert d["valid"] == 3 and d["absrel"] == pytest.approx(0.0, abs=1e-9)
    d = M.depth_metrics(ref, out, mask=np.zeros(4, bool))
    assert d["valid"] == 0 and finite(d)


def test_aggregate_mean_and_worst():
    rows = [{"rel_l2": 0.1, "delta1": 0.99}, {"rel_l2": 0.3, "delta1": 0.95}, {"rel_l2": 0.2, "delta1": 0.97}]
    agg = M.aggregate(rows)
    assert agg["mean"]["rel_l2"] == pytest.approx(0.2)
    assert agg["worst"]["rel_l2"] == pytest.approx(0.3) and agg["worst_index"]["rel_l2"] == 1
    assert agg["worst"]["delta1"] == pytest.approx(0.95)  # higher is better: the minimum
    assert agg["mean"]["delta1"] == pytest.approx(0.97)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="differ"):
        M.compare_arrays(np.zeros(4), np.zeros(5))
