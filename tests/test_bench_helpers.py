"""Pure helpers of the bench (tables, Pareto front, machine info, GT geometry, the matrix). Never runs the bench."""

from __future__ import annotations

import numpy as np
import pytest

from bench.images import resize_crop_disparity
from bench.machine import describe, parse_cpuinfo
from bench.matrix import MIDASNET_SETS, PASS_SETS, cells
from bench.tables import (
    cell_row,
    fmt,
    fmt_latency,
    fmt_passes,
    md_table,
    measured_speedup,
    pareto_front,
    render_markdown,
    speedup,
)
from rewriter.inputs import resize_crop

CPUINFO = """processor\t: 0
model name\t: Intel(R) Core(TM) Ultra 7 155H
flags\t\t: fpu sse avx avx2 fma avx_vnni
processor\t: 1
model name\t: other
flags\t\t: fpu
"""


def test_fmt_and_speedup():
    assert fmt(None) == "–"
    assert fmt(0.0) == "0"
    assert fmt(1.23456) == "1.23"
    assert speedup(10.0, 5.0) == 2.0
    assert speedup(None, 5.0) is None and speedup(10.0, 0.0) is None
    assert fmt_latency({"before_ms": 10.0, "after_ms": 4.0}) == "10→4 (2.5×)"
    assert fmt_latency(None) == "–"


def test_measured_speedup_prefers_pairwise_ratio():
    assert measured_speedup({"before_ms": 10.0, "after_ms": 8.0, "ratio": 0.5}) == 2.0
    assert measured_speedup({"before_ms": 10.0, "after_ms": 8.0}) == 1.25
    assert measured_speedup(None) is None


def test_md_table_escapes_pipes():
    t = md_table(("a", "b"), [["x|y", "1"]])
    assert t.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | 1 |"]


def test_fmt_passes_marks_non_applied():
    s = fmt_passes([{"name": "asym_interp", "sites_changed": 4, "status": "applied"},
                    {"name": "dwpw", "sites_changed": 18, "status": "kept_failed"},
                    {"name": "int8", "sites_changed": 0, "status": "rolled_back"}])
    assert s == "asym_interp:4, dwpw:18 gate✗, int8:0 rolled back"


def test_pareto_front():
    pts = [(1.0, 0.01), (2.0, 0.1), (1.5, 0.2), (0.9, 0.001), (None, 0.0), (2.0, 0.05)]
    # (1.5, 0.2) is dominated by (2.0, 0.1); (2.0, 0.1) by (2.0, 0.05); the None point is never on the front
    assert pareto_front(pts) == [3, 0, 5]
    assert pareto_front([]) == []


def test_parse_cpuinfo_first_block_and_vnni():
    info = parse_cpuinfo(CPUINFO)
    assert info["cpu_model"] == "Intel(R) Core(TM) Ultra 7 155H"
    assert info["flags"]["avx2"] and info["flags"]["avx_vnni"] and not info["flags"]["avx512_vnni"]
    line = describe({**info, "usable_cpus": 2, "memory_gb": 16})
    assert "avx2" in line and "no VNNI" not in line
    assert "no VNNI" in describe(parse_cpuinfo("model name : X\nflags : avx2\n"))


def test_gt_disparity_follows_image_geometry_and_keeps_invalid():
    # a horizontal ramp with an invalid column: resampled like the image, inf never blended into valid pixels
    ih, iw, h, w = 50, 80, 24, 24
    ramp = np.tile(np.arange(iw, dtype=np.float32), (ih, 1))
    ramp[:, 40] = np.inf
    out = resize_crop_disparity(ramp, h, w)
    assert out.shape == (h, w)
    finite = out[np.isfinite(out)]
    assert set(np.unique(finite)).issubset(set(range(iw)))  # nearest: only original values
    img = np.repeat(np.clip(np.tile(np.arange(iw), (ih, 1)) * 3, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    ref = resize_crop(img, h, w)[..., 0].astype(np.float64) / 3
    ok = np.isfinite(out)
    assert np.max(np.abs(out[ok] - ref[ok])) <= 1.5  # same crop window as the image (bilinear vs nearest)


def test_cells_restrict_midasnet_unless_sets_given():
    default = cells(["midasnet384"], list(PASS_SETS))
    assert [s.key for _, s in default] == list(MIDASNET_SETS)
    explicit = cells(["midasnet384"], ["dwpw-r2"], restrict=False)
    assert [s.key for _, s in explicit] == ["dwpw-r2"]
    with pytest.raises(KeyError):
        cells(["small256"], ["nope"])


def test_render_markdown_shows_every_cell_and_errors():
    cell_ok = {"model": "m", "pass_set": "asym", "passes_detail": [{"name": "asym_interp", "sites_changed": 4,
                                                                     "status": "applied"}],
               "predicted": {"kmb": {"before_ms": 10.0, "after_ms": 5.0}, "cpu": {"before_ms": 4.0, "after_ms": 2.0}},
               "measured": {"ratio": 0.8}, "fidelity": {"mean": {"rel_l2": 0.01, "absrel": 0.02, "delta1": 0.99},
                                                        "worst": {"rel_l2": 0.03, "absrel": 0.05, "delta1": 0.97}},
               "gt": {"after": {"absrel": 0.3, "delta1": 0.5}}, "tool": {"rewrite_s": 3.2, "peak_rss_mb": 812.0}}
    cell_err = {"model": "m", "pass_set": "int8", "error": "RewriteError: boom\nmore"}
    res = {"bench": {"date": "2025-01-01"}, "machine": {"flags": {}},
           "models": {"m": {"fixture": "f", "spec": {"weights": "seeded"}, "baseline": {"gt": {"absrel": 0.29}}}},
           "cells": [cell_ok, cell_err]}
    md = render_markdown(res)
    row = cell_row(cell_ok, {"absrel": 0.29, "delta1": 0.5})
    assert row[2] == "10→5 (2×)" and row[4] == "2" and row[5] == "1.25" and row[9] == "0.29→0.3"
    assert "| asym |" in md and "| int8 | ERROR: RewriteError: boom |" in md
    assert "2 / 1.25" in md  # CPU predicted / measured side by side


def test_split_row_puts_validation_and_test_side_by_side():
    from bench.tables import SPLIT_HEADER, split_row

    mean = lambda d1: {"mean": {"rel_l2": 0.1, "absrel": 0.05, "delta1": d1}, "names": ["a.png"]}  # noqa: E731
    cell = {"pass_set": "dwpw-r1", "passes_detail": [{"name": "dwpw", "gate_passed": False}],
            "split_fidelity": {"calibration": mean(0.99), "validation": mean(0.9), "test": mean(0.86)},
            "cumulative": {"passed": False, "dropped": ["dwpw"]}}
    row = split_row(cell)
    assert len(row) == len(SPLIT_HEADER)
    assert row[1] == "dwpw ✗" and row[2] == "0.99" and "0.9" in row[3] and "0.86" in row[4]
    assert row[5] == "0.04" and row[6] == "FAILED (dropped dwpw)"
