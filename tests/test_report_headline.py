"""The answer first: the ≤ 8-line headline (text, Markdown), the HTML's order (cards, depth pictures, Pareto,
decisions, collapsed details), failed passes (one sentence, traceback collapsed), optimize and diff reports,
and the first screen in headless Chromium at laptop size."""

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
from rewriter.pictures import save_worst_pictures, worst_and_typical
from rewriter.report import headline, render_html, render_markdown, render_text, write_html

TRACEBACK = ('Traceback (most recent call last):\n  File "passes/int8.py", line 88, in apply\n'
             "    q = nncf.quantize(m, ds)\nValueError: calibration dataset is empty")


def _pictures(folder: Path, role: str, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    before = rng.random((1, 1, 64, 64)).astype(np.float32) * 3
    d = save_worst_pictures(before, before + 0.05 * rng.random(before.shape), folder, image=f"{role}_img{seed}")
    d["role"], d["image"] = role, f"img{seed}"
    return d


def _rewrite(tmp_path: Path, failed: bool = False) -> dict:
    sites = [{"node": f"/refinenet{i}/Resize", "op": "Resize", "decision": "will change", "will_change": True,
              "choice": "asymmetric", "details": {"latency_us": {"kmb": {"before": 130.0, "after": 9.0}}}}
             for i in range(1, 5)]
    passes = [
        {"name": "asym_interp", "exact": False, "status": "applied", "sites_changed": 4, "sites": sites,
         "fidelity": {"passed": True, "gate": "budget", "message": "validation split: within budget: delta1 0.99"},
         "notes": [], "latency": {"kmb": {"before_ms": 9.5, "after_ms": 9.0}}},
        {"name": "dwpw", "exact": False, "status": "rolled_back", "sites_changed": 20, "sites": [],
         "fidelity": {"passed": False, "gate": "budget",
                      "message": "validation split: over budget: delta1 0.808 < 0.98; would pass with --budget x"},
         "notes": []},
    ]
    if failed:
        passes.append({"name": "int8", "exact": False, "status": "failed", "sites_changed": 0, "sites": [],
                       "error": "int8: calibration dataset is empty (give --calib DIR)\nmore detail",
                       "traceback": TRACEBACK, "notes": []})
    return {
        "input": "small.onnx", "output": None, "format": "onnx", "output_format": "onnx",
        "targets": ["kmb", "mtl", "cpu"], "passes": passes,
        "inputs": {"calibration": ["a"], "validation": ["b"], "test": ["c", "d"], "overlap": False},
        "cumulative": {"passed": True, "gate": "budget", "split": "test", "inputs": 2,
                       "message": "final vs original, test split: within budget: delta1 0.991 ≥ 0.98, "
                                  "absrel 0.012 ≤ 0.03", "dropped": []},
        "latency": {"kmb": {"before_ms": 9.518, "after_ms": 9.0, "fps_before": 105.1, "fps_after": 111.1},
                    "mtl": {"before_ms": 9.1, "after_ms": 8.2,
                            "alongside": {"total_ms": 17.2, "fits": False, "others_ms": 9.0}},
                    "cpu": {"before_ms": 89.6, "after_ms": 88.0}},
        "pictures": [_pictures(tmp_path, "worst", 1), _pictures(tmp_path, "typical", 2)],
        "op_counts": {"Resize": [5, 5]}, "notes": [], "exit_code": 0}


def _optimize(tmp_path: Path) -> dict:
    rep = _rewrite(tmp_path)
    rep["pareto"] = [{"latency_ms": 9.5 - i, "metrics": {"delta1": 0.999 - 0.01 * i * i},
                      "choices": {"asym_interp": i > 0, "dwpw.rank": i}} for i in range(5)]
    rep["chosen"] = "asym_interp,dwpw.rank=2"
    return rep


def _text_headline(text: str) -> list[str]:
    return text.split("\n(details:")[0].splitlines()


def test_headline_names_fps_per_target_fit_fidelity_and_decisions(tmp_path):
    rep = _rewrite(tmp_path)
    lines = _text_headline(render_text(rep))
    assert len(lines) <= 8 and lines == headline(rep) and max(map(len, lines)) <= 100
    assert lines[0] == ("KMB (VPU 2.0): 105 → 111 fps (9.518 → 9.000 ms, 54 % of the 16.67 ms frame; "
                        "fits 60 fps)")
    assert lines[1] == ("MTL (NPU 2.7): 110 → 122 fps (9.100 → 8.200 ms; with others 17.20 of 16.67 ms, "
                        "does NOT fit 60 fps)")
    assert "CPU: 11.2 → 11.4 fps" in lines[2] and "does NOT fit 60 fps" in lines[2]
    assert lines[3] == "fidelity on 2 held-out test images: within budget — delta1 0.991 ≥ 0.98, absrel 0.012 ≤ 0.03"
    assert lines[4] == "kept: asym_interp (4 site(s))"
    assert lines[5] == "dropped dwpw: rolled back, over budget (delta1 0.808 < 0.98)"
    # details only with -v
    assert "Passes" not in render_text(rep) and "Passes\n======" in render_text(rep, verbose=True)
    md = render_markdown(rep)
    assert md.startswith("# Rewrite report\n\n- KMB (VPU 2.0): 105 → 111 fps")


def test_headline_stays_within_8_lines_with_many_dropped_passes(tmp_path):
    rep = _optimize(tmp_path)
    rep["output"] = "out.onnx"
    rep["passes"] += [{"name": f"p{i}", "status": "no_change", "sites": []} for i in range(4)]
    lines = headline(rep)
    assert len(lines) == 8
    assert lines[5].startswith("dropped: dwpw: rolled back") and "p3: no site changed" in lines[5]
    assert lines[6] == "optimize: 5 Pareto point(s); chosen asym_interp,dwpw.rank=2"
    assert lines[7] == "written: out.onnx"


def test_html_order_answer_first(tmp_path):
    page = render_html(_rewrite(tmp_path), base=tmp_path)
    pos = [page.index(k) for k in ('id="headline"', 'id="pictures"', 'id="decisions"', "<details>")]
    assert pos == sorted(pos)
    assert page.count('src="data:image/png;base64,') == 6  # worst and typical: before, after, |error|
    assert "worst image: img1" in page and "typical image: img2" in page
    assert page.count('class="cbar"') == 4  # one depth and one |error| colour bar per row
    # the decision table: site, pass, choice, µs saved on the objective target (kmb: 130 - 9)
    assert re.search(r"<td>/refinenet1/Resize</td><td>asym_interp</td><td>asymmetric</td><td>–</td>"
                     r"<td class=n>121</td>", page)
    assert not re.search(r'(src|href)="(?!data:)', page)


def test_failed_pass_is_one_sentence_and_its_traceback_is_collapsed(tmp_path):
    rep = _rewrite(tmp_path, failed=True)
    page = render_html(rep, base=tmp_path)
    assert "Pass int8 failed: int8: calibration dataset is empty (give --calib DIR)</p>" in page
    tb = page.index("Traceback (most recent call last)")
    start = page.rindex("<details>", 0, tb)
    assert "</details>" not in page[start:tb]  # inside a collapsed block
    assert page.index('id="headline"') < page.index('class="err"') < start
    lines = _text_headline(render_text(rep))
    assert "dropped int8: crashed: int8: calibration dataset is empty (give --calib DIR)" in lines
    assert "Traceback" not in render_text(rep) and "Traceback" not in render_markdown(rep)


def test_optimize_report_draws_the_pareto_front(tmp_path):
    page = render_html(_optimize(tmp_path), base=tmp_path)
    assert page.index('id="pictures"') < page.index('id="pareto"') < page.index('id="decisions"')
    svg = page[page.index('<svg id="pareto-svg"'):]
    assert svg[:svg.index("</svg>")].count("<circle") == 5
    # a PNG from rewrite optimize is embedded instead of the SVG when given
    rep = _optimize(tmp_path)
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "pareto.png")
    rep["pareto_plot"] = "pareto.png"
    page = render_html(rep, base=tmp_path)
    assert 'id="pareto-svg"' not in page and 'alt="Pareto front' in page


def test_diff_headline_and_report():
    rep = diff(make_tiny(), make_tiny("asymmetric"))
    lines = _text_headline(render_text(rep))
    assert 1 <= len(lines) <= 8
    assert "0 op(s) added, 0 removed, 1 changed" in lines[0]
    page = render_html(rep)
    assert page.index('id="headline"') < page.index("<details>")


def test_worst_and_typical_pick_the_largest_and_the_median_error():
    base = [np.ones((1, 1, 4, 4)) for _ in range(5)]
    after = [b * (1 + e) for b, e in zip(base, (0.3, 0.01, 0.2, 0.05, 0.1))]
    assert worst_and_typical(base, after, list("abcde")) == [("worst", 0), ("typical", 4)]
    assert worst_and_typical(base[:1], after[:1], ["a"]) == [("worst", 0)]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_first_screen_in_chromium_shows_headline_pictures_and_pareto(tmp_path):
    page = write_html(_optimize(tmp_path), tmp_path / "opt.html")
    html = page.read_text()
    # what keeps the first screen: cards and pictures have fixed maximum heights, nothing precedes them
    assert re.search(r"\.card\{[^}]*max-height:150px", html)
    assert re.search(r"\.pics figure img\{[^}]*max-height:170px", html)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", f"--user-data-dir={tmp_path / 'profile'}",
                    "--hide-scrollbars", "--window-size=1280,800", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=180)
    assert shot.exists(), "chromium wrote no screenshot"
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (800, 1280)
    assert img.std() > 20  # not blank
    # the depth pictures (inferno: dark purple to yellow) and the Pareto points (#2f6fb3) are on screen
    blue = (np.abs(img - np.array((47, 111, 179))).sum(axis=2) < 30)
    assert blue.sum() > 5 * 40, "Pareto points not in the first screen"
    warm = (img[..., 0] > 150) & (img[..., 2] < 120) & (img[..., 1] > 40)  # inferno's orange/yellow
    assert warm.sum() > 3000, "depth pictures not in the first screen"
    green = (np.abs(img - np.array((46, 139, 87))).sum(axis=2) < 30)  # the headline cards' "fits" edge
    assert green[:300].sum() > 200


@pytest.mark.parametrize("use_dot", [True, False])
def test_diff_subgraph_is_drawn_with_dot_or_matplotlib(tmp_path, monkeypatch, use_dot):
    from rewriter.pictures import diff_graphs, draw_diff

    if use_dot and shutil.which("dot") is None:
        pytest.skip("graphviz dot not installed")
    if not use_dot:
        monkeypatch.setattr(shutil, "which", lambda _name: None)
    a, b = make_tiny(), make_tiny("asymmetric")
    rep = diff(a, b)
    g = diff_graphs(a, b, rep)
    assert {s for _, s in g["after"]["nodes"].values()} == {"changed", "context"}
    assert [label for label, s in g["after"]["nodes"].values() if s == "changed"] == ["resize1\nResize"]
    assert g["after"]["edges"]  # the changed Resize is drawn with its neighbours
    tool = draw_diff(g, tmp_path / "sub.png")
    assert tool == ("dot" if use_dot else "matplotlib")
    img = np.asarray(Image.open(tmp_path / "sub.png").convert("RGB")).astype(int)
    orange = (np.abs(img - np.array((0xF3, 0xC9, 0x7A))).sum(axis=2) < 30)
    assert orange.sum() > 100  # the changed node is filled
    page = render_html({**rep, "diff_picture": str(tmp_path / "sub.png")})
    assert page.index('id="headline"') < page.index('id="subgraph"') < page.index("<details>")


def test_two_test_images_give_a_worst_and_a_typical_row():
    base = [np.ones((1, 1, 4, 4)), np.ones((1, 1, 4, 4))]
    assert worst_and_typical(base, [base[0] * 1.1, base[1] * 1.01], ["a", "b"]) == [("worst", 0), ("typical", 1)]


def test_pass_dropped_at_the_final_check_names_the_test_split_budget(tmp_path):
    rep = _rewrite(tmp_path)
    rep["passes"][0]["status"] = "rolled_back_cumulative"
    rep["cumulative"] = {"passed": True, "gate": "none", "split": "test",
                         "message": "test split: no pass changed the model; the output is the original",
                         "dropped": [{"pass": "asym_interp", "reason": "…", "failed": {
                             "message": "final vs original, test split: over budget: delta1 0.929 < 0.95; "
                                        "would pass with --budget delta1=0.92"}}]}
    lines = headline(rep)
    assert "dropped asym_interp: dropped at the final check on the test split, over budget (delta1 0.929 < 0.95)" \
        in lines
    assert "fidelity: unchanged (no pass changed the model; the output is the original)" in lines
