"""The optimize report: typed fields, JSON round trip, renderings by rewriter.report; CLI input errors."""

from __future__ import annotations

import json

import pytest

from rewriter.optimizer import OptimizeReport, ParetoPoint, _fidelity, _site_rows
from rewriter.optimizer.executors import InProcessExecutor
from rewriter.optimizer.search import Search
from rewriter.optimizer.synthetic import SiteSpec, SyntheticSpace
from rewriter.report import decision_table, render_html, render_text, write_html, write_json, write_markdown

BUDGET = {"rel_l2": 0.05}


def _report() -> OptimizeReport:
    sites = [SiteSpec(f"conv{i}", "rank1", 0.004 * (i + 1), (("mtl", 100.0), ("cpu", 40.0))) for i in range(4)]
    sites.append(SiteSpec("head", "rank1", 0.3, (("mtl", 500.0), ("cpu", 200.0))))
    space = SyntheticSpace(sites)
    res = Search(space, BUDGET, InProcessExecutor(space)).run()
    lat = {t: {"before_ms": res.base.latency_ms[t], "after_ms": res.validation.latency_ms[t],
               "speedup": round(res.base.latency_ms[t] / res.validation.latency_ms[t], 4)} for t in space.targets}
    return OptimizeReport(
        input="synthetic", format="onnx", targets=list(space.targets), objective="mtl", budget=BUDGET,
        passes=["dwpw"], sites=_site_rows(res, space), pareto=[ParetoPoint(**p) for p in res.pareto()],
        fidelity={"validation": _fidelity(res.validation, "validation", BUDGET),
                  "test": _fidelity(res.test, "test", BUDGET)},
        latency=lat, inputs={"calibration": ["a"], "validation": ["b"], "test": ["c"]},
        search={"evaluations": len(res.history), "log": res.log})


def test_report_fields_and_round_trip():
    rep = _report()
    d = rep.to_json()
    text = json.dumps(d)  # plain JSON
    back = OptimizeReport.from_json(json.loads(text))
    assert back == rep
    assert d["pareto"] and {"latency_ms", "metrics", "choices"} <= set(d["pareto"][0])
    chosen = [s for s in d["sites"] if s["selected"]]
    assert {s["site"] for s in chosen} == {"conv0", "conv1", "conv2", "conv3"}
    head = next(s for s in d["sites"] if s["site"] == "head")
    assert not head["selected"] and "over budget" in head["reason"]
    assert set(chosen[0]["saved_us"]) == {"mtl", "cpu"} and chosen[0]["budget_used"] > 0
    assert d["fidelity"]["validation"]["split"] == "validation" and d["fidelity"]["test"]["split"] == "test"
    assert d["fidelity"]["validation"]["passed"] is True
    assert d["latency"]["mtl"]["after_ms"] < d["latency"]["mtl"]["before_ms"]


def test_renderings(tmp_path):
    """One renderer (rewriter.report) draws the optimize report: headline, decisions, Pareto plot."""
    rep = _report()
    text = render_text(rep)
    assert text.splitlines()[0].startswith("MTL (NPU 2.7): ") and "head" not in text
    verbose = render_text(rep, verbose=True)
    assert "conv0" in verbose and "head   conv  not taken: alone over budget" in verbose
    assert all(len(line) <= 100 for line in text.splitlines())
    html = render_html(rep)
    assert "<h2>Pareto front (optimize)</h2>" in html and '<svg id="pareto-svg"' in html
    rows = decision_table(rep).rows
    assert [r[0] for r in rows] == ["conv0", "conv1", "conv2", "conv3"]  # the taken sites, their error shares
    assert all(r[-1].endswith("% of budget") for r in rows)
    write_json(rep, tmp_path / "r.json")
    write_html(rep, tmp_path / "r.html")
    write_markdown(rep, tmp_path / "r.md")
    assert OptimizeReport.from_json(json.loads((tmp_path / "r.json").read_text())) == rep
    assert (tmp_path / "r.md").read_text().startswith("# Optimize report\n\n- MTL (NPU 2.7): ")


@pytest.mark.parametrize("args, needle", [
    (["--target", "cpu", "--budget", "absrel=oops"], "absrel"),
    (["--passes", "dwpw,fold_bn"], "fold_bn"),
    (["--workers", "-1"], "--workers"),
])
def test_cli_bad_input_one_line_exit_2(tiny_onnx, capsys, args, needle):
    from rewriter.cli import main

    code = main(["optimize", str(tiny_onnx), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and needle in err[0]
    assert not tiny_onnx.with_name("tiny.optimized.onnx").exists()


def test_cli_missing_model(tmp_path, capsys):
    from rewriter.cli import main

    code = main(["optimize", str(tmp_path / "nope.onnx")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope.onnx" in err[0]


def test_library_export_is_a_function():
    import rewriter
    import rewriter.optimizer  # importing the subpackage must not shadow the function

    assert callable(rewriter.optimize) and rewriter.optimize.__module__ == "rewriter"
    with pytest.raises(rewriter.RewriteError, match="unknown target 'gpu'"):
        rewriter.optimize("unused.onnx", targets=("gpu",))
