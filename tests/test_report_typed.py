"""Typed reports and the one renderer, on real runs: a ``rewrite`` and a ``rewrite optimize`` of the tiny graph.

- the schema round trip (to_json → from_json → to_json) of a RewriteReport and an OptimizeReport, and the keys
  ``conformance.py`` reads;
- every rendering (terminal, Markdown, HTML) of a rewrite, an optimize run, a failed pass and a diff;
- the optimize HTML in headless Chromium at laptop size (1366x768): headline, the three depth pictures and the
  Pareto plot inside the first screen;
- progress: counts advance through ``rewriter.progress``, and ``-q`` prints nothing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny
from PIL import Image

from rewriter.cli import main
from rewriter.diff import diff
from rewriter.manager import rewrite
from rewriter.optimizer import OptimizeReport
from rewriter.passbase import REGISTRY, Pass, register
from rewriter.report import decision_table, headline, render_html, render_markdown, render_text
from rewriter.results import Gate, PassEntry, RewriteReport, SiteDecision

VIEWPORT = (1366, 768)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    import onnx

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    onnx.save(make_tiny(), str(path))
    return path


@pytest.fixture(scope="module")
def optimized(tiny: Path) -> dict[str, Path]:
    """One real ``rewrite optimize`` of the tiny graph with every report file (about 20 s)."""
    d = tiny.parent
    files = {"json": d / "opt.json", "html": d / "opt.html", "md": d / "opt.md", "out": d / "opt.onnx"}
    code = main(["optimize", str(tiny), "--target", "cpu", "--target", "mtl", "--passes", "asym_interp,dwpw",
                 "--budget", "rel_l2=0.9", "-o", str(files["out"]), "--report", str(files["json"]),
                 "--html", str(files["html"]), "--md", str(files["md"]), "-q"])
    assert code == 0
    return files


# ---- typed results -----------------------------------------------------------------------------------------
def test_rewrite_report_round_trips_and_keeps_its_json_keys(tiny):
    _, rep = rewrite(tiny, "asym_interp,dwpw", targets=("kmb", "cpu"), on_fail="keep")
    assert isinstance(rep, RewriteReport) and all(isinstance(p, PassEntry) for p in rep.passes)
    assert isinstance(rep.cumulative, Gate) and isinstance(rep.passes[0].sites[0], SiteDecision)
    assert rep.passes[0].kept and rep.passes[0].sites_changed == 1
    d = rep.to_json()
    text = json.dumps(d)  # plain JSON: no model handle or numpy value travels in the report
    back = RewriteReport.from_json(json.loads(text))
    assert back.to_json() == d
    # the keys users and conformance.py read
    assert set(d) == {"input", "output", "format", "output_format", "passes", "notes", "targets", "inputs",
                      "default_gates", "cumulative", "latency", "op_counts", "measured", "exit_code"}
    p = d["passes"][0]
    assert {"name", "sites_changed", "exact", "status", "sites", "fidelity", "latency", "first_divergence"} <= set(p)
    assert {"passed", "gate", "message", "split", "metrics"} <= set(p["fidelity"])
    assert {"passed", "split", "message", "dropped", "passes"} <= set(d["cumulative"])
    assert {"calibration", "validation", "test"} <= set(d["inputs"])
    assert all(k in d["latency"]["kmb"] for k in ("before_ms", "after_ms"))
    # the former dict reads still work on the typed report
    assert rep["passes"][0]["status"] == rep.passes[0].status and rep["cumulative"].get("split") == "test"
    assert "measured" in rep and "pictures" not in rep and rep.passes[0].fidelity["runtime"]


def test_optimize_report_round_trips_and_keeps_its_json_keys(optimized):
    d = json.loads(optimized["json"].read_text())
    back = OptimizeReport.from_json(d)
    assert back.to_json() == d
    assert isinstance(d["pareto"], list) and d["pareto"]
    assert {"latency_ms", "metrics", "choices"} <= set(d["pareto"][0])
    lat = d["latency"]["cpu"]
    assert lat["after_ms"] <= lat["before_ms"] * 1.001
    assert {"site", "pass_name", "choice", "saved_us", "budget_used", "selected"} <= set(d["sites"][0])
    assert d["fidelity"]["test"]["split"] == "test" and "within budget" in d["fidelity"]["test"]["message"]
    assert "pictures" not in d


def test_gate_keeps_unknown_and_none_keys():
    raw = {"passed": True, "gate": "budget", "runtime": "ov", "seconds": 0.5, "needed": None}
    g = Gate.from_json(raw)
    assert g.to_json() == raw and g["runtime"] == "ov" and g.passed is True
    assert not Gate() and Gate().get("passed", True) is True


# ---- every rendering ---------------------------------------------------------------------------------------
class _Crash(Pass):
    name = "_test_report_crash"
    description = "test-only: crashes while planning"
    exact = True

    def plan(self, view, ctx):
        raise ValueError("calibration dataset is empty (give --calib DIR)")


@pytest.fixture
def crash_pass():
    register(_Crash)
    yield _Crash.name
    REGISTRY.pop(_Crash.name, None)


def _headline_of(text: str) -> list[str]:
    return text.split("\n(details:")[0].splitlines()


def test_every_rendering_of_a_rewrite_a_failed_pass_and_a_diff(tiny, crash_pass, tmp_path):
    _, rep = rewrite(tiny, f"asym_interp,{crash_pass}", targets=("kmb", "cpu"), output=tmp_path / "o.onnx")
    assert rep.passes[1].status == "failed" and "Traceback" in rep.passes[1].traceback
    lines = _headline_of(render_text(rep))
    assert len(lines) <= 8 and lines == headline(rep)
    assert lines[0].startswith("KMB (VPU 2.0): ") and " fps (" in lines[0]
    assert any(line.startswith("fidelity on the held-out test split: within budget — cosine ") for line in lines)
    assert "kept: asym_interp (1 site(s))" in lines
    assert f"dropped {crash_pass}: crashed: ValueError: calibration dataset is empty (give --calib DIR)" in lines
    md = render_markdown(rep)
    assert md.startswith("# Rewrite report\n\n- KMB (VPU 2.0)") and "## Per-site decisions" in md
    assert "Traceback" not in md
    page = render_html(rep)
    assert page.index('id="headline"') < page.index('class="err"') < page.index('id="decisions"') < \
        page.index("<h2>Details</h2>")
    tb = page.index("Traceback (most recent call last)")
    assert "</details>" not in page[page.rindex("<details>", 0, tb):tb]  # the traceback is collapsed
    # the decision table: the resize, its engines on the objective target, µs saved per target, error "–"
    t = decision_table(rep)
    assert t.headers[3:] == ["engine before → after (KMB (VPU 2.0))", "µs saved, KMB (VPU 2.0)", "µs saved, CPU",
                             "error contribution"]
    assert t.rows == [["resize1", "asym_interp", "asymmetric", "shave → shave", "0", "0", "–"]]

    drep = diff(make_tiny(), make_tiny("asymmetric"))
    assert render_text(drep).startswith("? → ?: 0 op(s) added, 0 removed, 1 changed") or \
        "0 op(s) added, 0 removed, 1 changed" in render_text(drep).splitlines()[0]
    assert render_markdown(drep).startswith("# Diff report")
    assert "<h1>Diff report</h1>" in render_html(drep)


def test_every_rendering_of_an_optimize_run(optimized):
    rep = OptimizeReport.from_json(json.loads(optimized["json"].read_text()))
    lines = _headline_of(render_text(rep))
    assert len(lines) <= 8 and lines[0].startswith("CPU: ") and lines[1].startswith("MTL (NPU 2.7): ")
    assert lines[2].startswith("fidelity on 4 held-out test images: within budget — rel_l2 ")
    assert any(line.startswith("optimize: ") and "Pareto point(s)" in line for line in lines)
    assert "Search (optimize)" in render_text(rep, verbose=True)
    md = optimized["md"].read_text()
    assert md.startswith("# Optimize report\n\n- CPU: ") and "## Search (optimize)" in md
    page = optimized["html"].read_text()
    order = [page.index(k) for k in ('id="headline"', 'id="pictures"', 'id="pareto"', "<details>")]
    assert order == sorted(order)
    # worst and typical test image: before, after, |error|, with a depth and an |error| colour bar each
    assert page.count('src="data:image/png;base64,') == 6 and page.count('class="cbar"') == 4
    assert re.search(r"worst image: random2\d+", page)
    svg = page[page.index('<svg id="pareto-svg"'):]
    svg = svg[:svg.index("</svg>")]
    assert svg.count('fill="#2f6fb3"') == len(json.loads(optimized["json"].read_text())["pareto"])
    assert "share of the fidelity budget used (validation)" in svg and ">budget</text>" in svg
    assert not re.search(r'(src|href)="(?!data:)', page)  # self-contained


def test_optimize_site_rows_become_decisions_with_error_contribution():
    from rewriter.optimizer.report import ParetoPoint, SiteRow

    rep = OptimizeReport(
        input="m.onnx", format="onnx", targets=["mtl", "cpu"], objective="mtl", budget={"rel_l2": 0.05},
        passes=["dwpw", "asym_interp", "interp_deconv"],
        sites=[SiteRow("conv1", "dwpw", "conv", "rank2", {"mtl": 40.0, "cpu": 12.5}, {"rel_l2": 0.3}, 0.3,
                       {"engine_before": {"mtl": {"engine": "dpu"}}, "engine_after": {"mtl": {"engine": "dpu"}}}),
               SiteRow("resize1", "asym_interp", "resize", "asymmetric", {"mtl": 0.0}, {}, 0.0,
                       selected=False, reason="skip: no predicted saving on mtl"),
               SiteRow("up2", "asym_interp+interp_deconv", "resize", "half_pixel+deconv", {"mtl": 5.0, "cpu": -1.0},
                       {"rel_l2": 0.1}, 0.1)],
        pareto=[ParetoPoint(2.0, {"mean": {"rel_l2": 0.0}}, {}), ParetoPoint(1.9, {"mean": {"rel_l2": 0.01}}, {})],
        fidelity={"validation": {"passed": True, "budget_used": 0.3},
                  "test": {"passed": True, "metrics": {"mean": {"rel_l2": 0.016}},
                           "message": "test split: within budget: rel_l2 0.016 ≤ 0.05"}},
        latency={"mtl": {"before_ms": 2.0, "after_ms": 1.96}, "cpu": {"before_ms": 9.0, "after_ms": 8.98}},
        inputs={"test": ["a", "b"]})
    t = decision_table(rep)
    assert t.rows == [["conv1", "dwpw", "rank2", "dpu → dpu", "40", "12.5", "30.0 % of budget"],
                      ["up2", "asym_interp+interp_deconv", "half_pixel+deconv", "–", "5", "-1", "10.0 % of budget"]]
    lines = headline(rep)
    assert lines[2] == "fidelity on 2 held-out test images: within budget — rel_l2 0.016 ≤ 0.05"
    # a combined choice counts for both of its passes
    assert "kept: dwpw (1 site(s)), asym_interp (1 site(s)), interp_deconv (1 site(s))" in lines
    assert "optimize: 2 Pareto point(s); chosen 2 site choice(s)" in lines
    rep.sites = rep.sites[:2]
    assert "dropped asym_interp: no site taken: skip: no predicted saving on mtl (1 site(s))" in headline(rep)
    from rewriter.report import optimize_view

    kinds = {p["name"]: p["exact"] for p in optimize_view(rep)["passes"]}
    assert kinds == {"dwpw": False, "asym_interp": False, "interp_deconv": True}  # from each pass's class


# ---- the first screen in headless Chromium -------------------------------------------------------------------
def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


CHROME = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--hide-scrollbars"]
BOXES_JS = """<script>
const box = e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const row = document.querySelector('#pictures .pics');
document.body.setAttribute('data-boxes', JSON.stringify({
  headline: box(document.querySelector('#headline')),
  pictures: row ? [...row.querySelectorAll('img')].map(box) : [],
  pareto: box(document.querySelector('#pareto-svg')),
  viewport: [window.innerWidth, window.innerHeight]}));
</script>"""


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (apt-get install -y chromium)")
def test_optimize_first_screen_in_chromium_at_laptop_size(optimized, tmp_path):
    page = tmp_path / "opt.html"
    page.write_text(optimized["html"].read_text().replace("</body>", BOXES_JS + "</body>"))
    common = [_chromium(), *CHROME, f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={VIEWPORT[0]},"
              f"{VIEWPORT[1]}"]
    dom = subprocess.run([*common, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180)
    found = re.search(r'data-boxes="([^"]+)"', dom.stdout)
    assert found, f"no layout from chromium: {dom.stderr[-300:]}"
    boxes = json.loads(found.group(1).replace("&quot;", '"'))
    # the dumped window is as wide as the screenshot (its height is less the window frame); the layout has no
    # viewport-height units, so the boxes are where the 1366x768 screenshot shows them
    assert boxes["viewport"][0] == VIEWPORT[0]
    inside = lambda b: b[2] > b[0] and b[3] > b[1] and b[0] >= 0 and b[1] >= 0 and b[2] <= VIEWPORT[0] \
        and b[3] <= VIEWPORT[1]  # noqa: E731
    assert inside(boxes["headline"]), boxes["headline"]
    assert len(boxes["pictures"]) == 3 and all(map(inside, boxes["pictures"])), boxes["pictures"]
    assert inside(boxes["pareto"]), boxes["pareto"]
    # and a screenshot of that first screen shows them: not blank, depth colours, the blue Pareto points
    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", optimized["html"].as_uri()], capture_output=True, timeout=180)
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (VIEWPORT[1], VIEWPORT[0]) and img.std() > 20
    blue = np.abs(img - np.array((47, 111, 179))).sum(axis=2) < 30
    assert blue.sum() > 100, "Pareto points not in the first screen"
    warm = (img[..., 0] > 150) & (img[..., 2] < 120) & (img[..., 1] > 40)  # inferno's orange/yellow
    assert warm.sum() > 2000, "depth pictures not in the first screen"


# ---- progress ------------------------------------------------------------------------------------------------
def test_progress_counts_advance_and_quiet_prints_nothing(tiny, capsys):
    import io

    from rewriter.inputs import split_inputs
    from rewriter.model import ModelHandle
    from rewriter.progress import RunProgress, count
    from rewriter.verify import check_pass

    h = ModelHandle.load(tiny)
    test = split_inputs(h, None, None).test
    stream = io.StringIO()
    with RunProgress(2, mode="bar", stream=stream) as bar:
        check_pass(h, h.clone(), exact=True, inputs=test, split="test")
        count("optimize: candidates", 1, 3)
        count("optimize: candidates", 3, 3)
    run = [(d, t) for phase, d, t in bar.counts if phase.startswith("running ")]
    n = len(test.feeds)
    assert run[:n] == [(i, n) for i in range(1, n + 1)]  # one count per image compared
    assert bar.counts[-2:] == [("optimize: candidates", 1, 3), ("optimize: candidates", 3, 3)]
    count("after the bar", 1, 1)  # no active progress: nothing happens
    assert bar.counts[-1][0] == "optimize: candidates"
    # plain lines (no TTY, -v): one line per finished phase
    lines = io.StringIO()
    with RunProgress(1, mode="lines", stream=lines):
        count("measuring (interleaved A/B runs)", 1, 2)
        count("measuring (interleaved A/B runs)", 2, 2)
    assert lines.getvalue() == "measuring (interleaved A/B runs): 2/2\n"
    quiet = io.StringIO()
    with RunProgress(1, mode="quiet", stream=quiet) as q:
        check_pass(h, h.clone(), exact=True, inputs=test, split="test")
    assert quiet.getvalue() == "" and q.counts == []
    capsys.readouterr()
    assert main(["--passes", "asym_interp", str(tiny), "-o", str(tiny.parent / "q.onnx"), "-q"]) == 0
    out = capsys.readouterr()
    assert out.err == "" and out.out.strip() == str(tiny.parent / "q.onnx")


def test_nncf_bars_become_our_counts():
    pytest.importorskip("nncf")
    from nncf.common.logging import track_progress

    from rewriter.progress import RunProgress, nncf_into

    original = track_progress.track
    with RunProgress(1, mode="lines", stream=__import__("io").StringIO()) as bar, nncf_into(bar, False):
        import nncf.common.tensor_statistics.aggregator as agg

        assert agg.track is not original
        assert list(agg.track(range(3), description="Statistics collection")) == [0, 1, 2]
    assert [c for c in bar.counts if "Statistics" in c[0]] == [("nncf: Statistics collection", i, 3)
                                                               for i in (1, 2, 3)]
    assert agg.track is original and track_progress.track is original


def test_optimize_quiet_prints_only_the_output_path(tiny, capfd):
    out = tiny.parent / "quiet.onnx"
    capfd.readouterr()
    assert main(["optimize", str(tiny), "--target", "cpu", "--passes", "asym_interp,int8", "-o", str(out), "-q"]) == 0
    got = capfd.readouterr()  # file descriptors: NNCF's own bars would write there
    assert got.err == "" and got.out.strip() == str(out)


def test_dwpw_refit_counts_each_site(tiny):
    import io

    from rewriter.progress import RunProgress

    with RunProgress(1, mode="bar", stream=io.StringIO()) as bar:
        _, rep = rewrite(tiny, "dwpw", targets=("cpu",), verify=False)
    refit = [(d, t) for phase, d, t in bar.counts if phase.startswith("refitting ")]
    changed = rep.passes[0].sites_changed
    assert changed > 0 and refit == [(i, changed) for i in range(1, changed + 1)]


def test_worker_processes_print_nothing_of_nncf():
    """What an optimize worker runs first: NNCF's bars draw nothing and its logger keeps errors only."""
    import subprocess
    import sys

    pytest.importorskip("nncf")
    code = ("from rewriter.progress import silence_nncf; silence_nncf()\n"
            "import logging, nncf.common.tensor_statistics.aggregator as agg\n"
            "from nncf.common.logging.logger import nncf_logger\n"
            "assert list(agg.track(range(3), description='Statistics collection')) == [0, 1, 2]\n"
            "nncf_logger.warning('hidden'); assert nncf_logger.level == logging.ERROR\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Statistics" not in r.stdout + r.stderr and "hidden" not in r.stdout + r.stderr
