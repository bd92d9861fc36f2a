"""Report rendering: text at 100 columns with units, Markdown, self-contained HTML (checked in Chromium)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny
from PIL import Image

from rewriter.diff import diff
from rewriter.errors import RewriteError
from rewriter.report import render_markdown, render_text, write_html, write_markdown

RED = (230, 20, 20)


def _picture(path: Path, color=RED) -> Path:
    Image.fromarray(np.full((120, 160, 3), color, np.uint8)).save(path)
    return path


def _rewrite_report(pictures: list[str]) -> dict:
    """A report shaped like rewriter.manager's, with every optional section filled."""
    return {
        "input": "midas_small.onnx", "output": "midas_small.rewritten.onnx", "format": "onnx",
        "output_format": "onnx", "targets": ["kmb", "mtl"],
        "passes": [
            {"name": "asym_interp", "exact": False, "options": {"mode": "asymmetric"}, "sites_changed": 4,
             "sites": [{"node": f"/refinenet{i}/Resize", "op": "Resize", "decision": "will change",
                        "details": {"from": "align_corners"}, "will_change": True} for i in range(1, 5)],
             "status": "applied",
             "fidelity": {"passed": True, "gate": "budget", "message": "within budget",
                          "metrics": {"delta1": 0.991, "absrel": 0.012, "max_abs": 0.31, "psnr": 38.2},
                          "needed": {"delta1": 0.991}, "inputs": "8 photos", "pictures": pictures},
             "first_divergence": None, "notes": [], "extra": {}, "seconds": 1.4,
             "latency": {"kmb": {"before_ms": 8.1, "after_ms": 7.2}, "mtl": {"before_ms": 3.3, "after_ms": 3.0}}},
            {"name": "dwpw", "exact": False, "options": {"rank": 1}, "sites_changed": 20, "sites": [],
             "status": "rolled_back", "fidelity": {"passed": False, "gate": "budget", "metrics": {"delta1": 0.71},
                                                   "message": "delta1 0.71 < 0.98"},
             "first_divergence": {"node": "/layer1_rn/Conv/dw", "op": "Conv", "pass": "dwpw", "error": 0.4},
             "notes": ["refit on 8 images"], "extra": {}, "seconds": 12.0,
             "latency": {"kmb": {"before_ms": 7.2, "after_ms": 5.0}, "mtl": {"before_ms": 3.0, "after_ms": 2.7}}}],
        "latency": {
            "kmb": {"before_ms": 8.1, "after_ms": 7.2, "fps_before": 123.4, "fps_after": 138.9,
                    "frame_share_before": 0.49, "frame_share_after": 0.43,
                    "top_changed": [{"node": f"/refinenet{i}/Resize", "op": "Resize", "before_ms": 0.4 * i,
                                     "after_ms": 0.18 * i} for i in range(1, 5)]},
            "mtl": {"before_ms": 3.3, "after_ms": 3.0}},
        "measured": {"before_ms": 140.2, "after_ms": 131.0, "ratio": 0.934, "before_p90_ms": 150.0,
                     "after_p90_ms": 139.0, "runs": 20},
        "op_counts": {"Conv": [97, 97], "Resize": [5, 5]}, "notes": ["verification on 8 images"], "exit_code": 0}


def test_text_fits_100_columns_and_states_units():
    text = render_text(_rewrite_report([]), verbose=True)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "asym_interp" in text and "rolled_back" in text and "FAILED (budget)" in text
    assert "KMB (VPU 2.0)" in text and "MTL (NPU 2.7)" in text  # predictions name their target profile
    assert "8.100 ms" in text and "1.12×" in text and "fraction of pixels" in text and "dB" in text
    assert "first divergence: node /layer1_rn/Conv/dw" in text
    assert "/refinenet4/Resize (Resize)" in text  # per-layer bars
    assert "refit on 8 images" in text


@pytest.mark.parametrize("report", [
    {"input": "m.onnx", "passes": []},
    {"input": "m.onnx", "format": "onnx", "passes": [{"name": "asym_interp", "status": "no_change"}],
     "latency": {}, "measured": None, "op_counts": {}},
    {"input": "m.onnx", "passes": [{"name": "x", "status": "applied", "fidelity": {"skipped": "--no-verify"},
                                    "latency": {"cpu": {"before_ms": None, "after_ms": 2.0}}}],
     "latency": {"cpu": {"before_ms": 1.0}}},
    {"op_counts": {"Conv": [1, 1]}, "added": [], "removed": [], "changed": []},
])
def test_partial_reports_render_in_every_format(report, tmp_path):
    text = render_text(report)
    assert text.strip()
    write_markdown(report, tmp_path / "r.md")
    write_html(report, tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")


def test_diff_report_text_and_markdown():
    rep = diff(make_tiny(), make_tiny("asymmetric"))
    text = render_text(rep, verbose=True)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "coordinate_transformation_mode: align_corners → asymmetric" in " ".join(text.split())
    assert "221 kMAC" in text and "648 parameters" in text
    md = render_markdown(rep)
    assert "| resize1 | Resize | coordinate_transformation_mode: align_corners → asymmetric | – |" in md


def test_html_is_self_contained(tmp_path):
    pic = _picture(tmp_path / "depth.png")
    page = tmp_path / "r.html"
    write_html(_rewrite_report([str(pic), str(tmp_path / "gone.png")]), page)
    html = page.read_text()
    assert html.count('src="data:image/png;base64,') == 1
    assert "picture not found" in html and "gone.png" in html
    assert "<svg" in html and "Per-layer predicted latency, target profile KMB (VPU 2.0)" in html
    assert not re.search(r'(src|href)="(?!data:)', html)  # nothing fetched from outside the file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_verification_picture_dict_is_embedded_with_captions(tmp_path):
    # the shape rewriter.pictures.save_worst_pictures returns; relative paths resolve beside the report
    pics = {"image": "retina", "range": [0.1, 2.3], "error_max": 0.58,
            "before_png": _picture(tmp_path / "b.png").name, "after_png": _picture(tmp_path / "a.png").name,
            "error_png": _picture(tmp_path / "e.png").name}
    rep = {"op_counts": {}, "added": [], "removed": [], "changed": [],
           "fidelity": {"passed": False, "gate": "tolerance", "pictures": pics,
                        "metrics": {"mean": {"max_abs": 0.4}, "worst": {"max_abs": 0.8},
                                    "worst_image": {"max_abs": "retina"}}}}
    html = write_html(rep, tmp_path / "d.html").read_text()
    assert html.count('src="data:image/png;base64,') == 3
    # shown once, at the top: one row (before | after | |error|) with a depth and an |error| colour bar
    assert "worst image: retina" in html and "|after − before|" in html
    assert html.count('class="cbar"') == 2 and ">0.58</text>" in html and ">2.3</text>" in html
    text = render_text(rep, verbose=True)
    assert "max_abs" in text and "output units" in text and "retina" in text


def test_write_into_missing_folder_names_the_path(tmp_path):
    with pytest.raises(RewriteError, match="nofolder"):
        write_html({"passes": []}, tmp_path / "nofolder" / "r.html")


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium_with_pictures(tmp_path):
    page = tmp_path / "report.html"
    rep = _rewrite_report([])
    red = str(_picture(tmp_path / "depth.png"))
    rep["cumulative"] = {"passed": True, "split": "test", "message": "within budget: delta1 0.99 ≥ 0.98",
                         "pictures": {"image": "x", "range": [0, 1], "error_max": 0.1, "before_png": red,
                                      "after_png": red, "error_png": red}}
    write_html(rep, page)
    shot = tmp_path / "shot.png"
    common = [_chromium(), *CHROME_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([*common, "--window-size=1200,2400", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=180)
    assert shot.exists(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the embedded picture is pure red: find a solid block of it in the page
    red = (np.abs(img - np.array(RED)).sum(axis=2) < 30)
    assert red.sum() > 3 * 0.8 * 120 * 160, f"embedded pictures not visible ({red.sum()} red pixels)"
    # the headline cards' green "fits / within budget" edge (#2e8b57) is drawn too
    green = (np.abs(img - np.array((46, 139, 87))).sum(axis=2) < 30)
    assert green.sum() > 200
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', dom.stdout)) == 3
    assert "<svg" in dom.stdout
