"""``rewrite optimize --alongside/--alongside-ms/--objective fit-frame/--input-shape``: the JSON fields."""

from __future__ import annotations

import json

import pytest

from rewriter.cli import main


def _run(tiny_onnx, tmp_path, *extra: str) -> tuple[int, dict]:
    out, rep = tmp_path / "opt.onnx", tmp_path / "opt.json"
    code = main(["optimize", str(tiny_onnx), "--target", "cpu", "--passes", "asym_interp,dwpw", "-o", str(out),
                 "--report", str(rep), "-q", *extra])
    return code, (json.loads(rep.read_text()) if rep.exists() else {})


def test_fit_frame_input_already_fits(tiny_onnx, tmp_path):
    code, j = _run(tiny_onnx, tmp_path, "--objective", "fit-frame", "--alongside-ms", "5",
                   "--input-shape", "1,8,16,16")
    assert code == 0
    a = j["latency"]["cpu"]["alongside"]
    assert a["others_ms"] == 5 and a["frame_ms"] == pytest.approx(16.67, abs=0.01)
    assert a["total_ms"] == pytest.approx(a["model_ms"] + 5, abs=1e-3) and a["fits"] is True
    f = j["frame"]
    assert j["objective_kind"] == "fit-frame" and f["fits"] is True and f["selected"] == "input (already fits)"
    assert f["budget_used"] == 0.0 and j["search"]["point"]["choices"] == []
    # the input already fits: nothing rewritten, so no fidelity spent (and the test split says so)
    assert j["fidelity"]["test"]["passed"] and j["fidelity"]["test"]["split"] == "test"
    assert j["latency"]["cpu"]["after_ms"] == pytest.approx(j["latency"]["cpu"]["before_ms"])


def test_fit_frame_nothing_fits_keeps_the_fastest(tiny_onnx, tmp_path):
    code, j = _run(tiny_onnx, tmp_path, "--objective", "fit-frame", "--alongside-ms", "100")
    assert code == 0
    f, a = j["frame"], j["latency"]["cpu"]["alongside"]
    assert f["fits"] is False and a["fits"] is False and a["headroom_ms"] < 0
    assert f["selected"].startswith("fastest within budget")


def test_alongside_model_and_bad_inputs(tiny_onnx, tmp_path):
    code, j = _run(tiny_onnx, tmp_path, "--alongside", str(tiny_onnx))
    assert code == 0 and j["objective_kind"] == "latency"
    a = j["latency"]["cpu"]["alongside"]
    assert len(a["others"]) == 1 and a["others_ms"] > 0 and a["fits"] is True
    assert j["frame"]["objective"] == "latency" and j["frame"]["others_ms"] == pytest.approx(a["others_ms"], abs=1e-3)
    assert _run(tiny_onnx, tmp_path, "--alongside", str(tmp_path / "nope.onnx"))[0] == 2
    assert _run(tiny_onnx, tmp_path, "--alongside-ms", "-1")[0] == 2


def test_fit_frame_picks_the_least_fidelity_cost_that_fits():
    """Synthetic space (mtl base 10 ms): 'cheap' saves 2 ms at rel_l2 0.001, 'big' 5 ms at 0.03."""
    from rewriter.optimizer import _fit_frame
    from rewriter.optimizer.executors import InProcessExecutor
    from rewriter.optimizer.search import Point, Search
    from rewriter.optimizer.synthetic import SiteSpec, SyntheticSpace

    sites = [SiteSpec("cheap", "rank1", 0.001, (("mtl", 2000.0), ("cpu", 2000.0))),
             SiteSpec("big", "rank1", 0.03, (("mtl", 5000.0), ("cpu", 5000.0)))]

    def search_and_run():
        space = SyntheticSpace(sites)
        search = Search(space, {"rel_l2": 0.05}, InProcessExecutor(space))
        return search, search.run()

    search, res = search_and_run()
    assert len(res.point.choices) == 2  # the latency objective takes both (3 ms on mtl)
    # 7.5 ms of others: the input (17.5 ms) does not fit, 'cheap' alone (8 + 7.5) does at the least error
    info = _fit_frame(search, res, 7.5, select=True)
    assert info["selected"] == "least fidelity cost that fits" and 0 < info["budget_used"] < 0.1
    assert [search.space._spec_of(k).site for k in res.point.choices] == ["cheap"]
    assert res.validation.latency_ms["mtl"] == pytest.approx(8.0) and res.test is not None
    # 6 ms of others: the input (16 ms) already fits, nothing is changed
    search, res = search_and_run()
    assert _fit_frame(search, res, 6.0, select=True)["selected"] == "input (already fits)"
    assert res.point == Point()
    # 12 ms: only both (3 + 12) fits
    search, res = search_and_run()
    _fit_frame(search, res, 12.0, select=True)
    assert len(res.point.choices) == 2
