"""``rewrite optimize`` on real graphs through the per-site engine (active once rewriter.engine is merged)."""

from __future__ import annotations

import importlib.util
import json

import onnx
import pytest

from rewriter.model import ModelHandle


def _has_engine() -> bool:
    import rewriter.inputs

    return importlib.util.find_spec("rewriter.engine") is not None and hasattr(rewriter.inputs, "split_inputs")


pytestmark = pytest.mark.skipif(not _has_engine(), reason="needs rewriter.engine (graph-layer branch)")


def _coord_modes(path) -> dict[str, str]:
    m = onnx.load(str(path))
    return {n.name: next((a.s.decode() for a in n.attribute if a.name == "coordinate_transformation_mode"), "")
            for n in m.graph.node if n.op_type == "Resize"}


def test_cli_optimize_tiny_cpu(tiny_onnx, tmp_path, capsys):
    """What the conformance check (check_next_optimize) asks for."""
    from rewriter.cli import main

    out, rep = tmp_path / "opt.onnx", tmp_path / "opt.json"
    code = main(["optimize", str(tiny_onnx), "--target", "cpu", "-o", str(out), "--report", str(rep), "-q"])
    assert code == 0, capsys.readouterr().err
    assert out.exists() and capsys.readouterr().out.strip() == str(out)
    j = json.loads(rep.read_text())
    assert isinstance(j["pareto"], list) and j["pareto"]
    assert {"latency_ms", "metrics", "choices"} <= set(j["pareto"][0])
    lat = j["latency"]["cpu"]
    assert lat["after_ms"] <= lat["before_ms"] * 1.001
    assert j["fidelity"]["validation"]["passed"] and j["fidelity"]["test"]["split"] == "test"
    names = j["inputs"]
    assert not set(names["validation"]) & set(names["test"]) and not set(names["calibration"]) & set(names["test"])
    assert not tmp_path.joinpath("opt.pareto.png").exists()  # the Pareto plot is in the HTML report only


def test_default_output_beside_the_input(tiny_onnx):
    from rewriter.cli import main

    assert main(["optimize", str(tiny_onnx), "--target", "cpu", "--passes", "asym_interp,dwpw", "-q"]) == 0
    assert tiny_onnx.with_name("tiny.optimized.onnx").exists()


def test_candidates_are_engine_choices(tiny_onnx):
    from rewriter.engine import plan
    from rewriter.optimizer.space import PassSpace

    space = PassSpace(ModelHandle.load(tiny_onnx), targets=("cpu", "mtl"),
                      passes=("asym_interp", "interp_deconv", "dwpw"))
    cands = space.candidates()
    kinds = {(c.pass_name, c.op) for c in cands}
    assert ("asym_interp", "resize") in kinds
    assert any(c.pass_name == "dwpw" for c in cands)
    asym = {d.site: d for d in plan(space.original, space.pass_obj("asym_interp"), space.ctx)}
    for c in cands:
        if c.steps[0][0] == "asym_interp":
            assert c.steps[0][1] in asym[c.site].choices
    assert all(c.choice != "keep" for c in cands)


def test_one_choice_alone_changes_only_its_site(tiny_onnx, tmp_path):
    from rewriter.optimizer.search import Point
    from rewriter.optimizer.space import PassSpace

    space = PassSpace(ModelHandle.load(tiny_onnx), targets=("mtl",), passes=("asym_interp", "dwpw"))
    c = next(c for c in space.candidates() if c.steps == (("asym_interp", "half_pixel"),))
    m = space.build_model(Point.of([c.key]))
    m.save(tmp_path / "one.onnx")
    assert _coord_modes(tmp_path / "one.onnx") == {"resize1": "half_pixel"}
    assert m.op_types() == space.original.op_types()  # no conv was factored
    ev = space.evaluate(Point.of([c.key]))
    assert ev.ok and 0 < ev.metrics["mean"]["rel_l2"] < 1
    assert space.evaluate(Point()).metrics["mean"]["rel_l2"] == pytest.approx(0.0, abs=1e-6)


def test_never_slower_on_any_target_and_within_budget(tiny_onnx):
    from rewriter.optimizer import optimize

    _, rep = optimize(tiny_onnx, targets=("mtl", "kmb", "cpu"), passes="asym_interp,interp_deconv,dwpw",
                      budget="rel_l2=0.3")
    for t in ("mtl", "kmb", "cpu"):
        assert rep.latency[t]["after_ms"] <= rep.latency[t]["before_ms"] * (1 + 1e-6)
    assert rep.fidelity["validation"]["passed"]
    assert rep.fidelity["validation"]["metrics"]["mean"]["rel_l2"] <= 0.3
    assert all(s.saved_us.get("mtl", 0) > 0 for s in rep.sites if s.selected)


def test_tight_budget_returns_the_input(tiny_onnx):
    from rewriter.optimizer import optimize

    m, rep = optimize(tiny_onnx, targets=("cpu",), passes="asym_interp,dwpw", budget="rel_l2=1e-9")
    assert not [s for s in rep.sites if s.selected]
    assert rep.latency["cpu"]["after_ms"] == rep.latency["cpu"]["before_ms"]
    assert m.op_types() == ModelHandle.load(tiny_onnx).op_types()


def test_workers_give_the_same_choice(tiny_onnx):
    from rewriter.optimizer import optimize

    _, a = optimize(tiny_onnx, targets=("cpu",), passes="asym_interp,dwpw", budget="rel_l2=0.5")
    _, b = optimize(tiny_onnx, targets=("cpu",), passes="asym_interp,dwpw", budget="rel_l2=0.5", workers=2)
    assert a.search["point"] == b.search["point"]
    assert b.search["executor"] == "processes"


@pytest.mark.parametrize("name", ["small_ts17_256x256", "small_ir_256x256",
                                  pytest.param("small_ts11_256x256", marks=pytest.mark.slow)])  # sizes by Shape
def test_float_candidates_run_only_below_the_shared_cut(name, monkeypatch):
    """A float-only candidate is evaluated from the original's activations at the cut above every site (the
    encoder runs once per split), and gives the metrics a whole-model run gives; dwpw's refit reuses the cut."""
    fx = pytest.importorskip("fixtures")
    pytest.importorskip("torch")
    import numpy as np

    import rewriter.refit as refit
    from rewriter.optimizer.search import Point
    from rewriter.optimizer.space import PassSpace
    from rewriter.runtime import Runner

    space = PassSpace(ModelHandle.load(fx.fixture_path(name)), targets=("mtl",), passes=("asym_interp", "dwpw"))
    cands = space.candidates()
    dw = next(c for c in cands if c.pass_name == "dwpw")
    asym = next(c for c in cands if c.pass_name == "asym_interp")
    built = []
    monkeypatch.setattr(refit, "Prefix", lambda *a, _P=refit.Prefix: built.append(a[2]) or _P(*a))
    point = Point.of([dw.key, asym.key])
    ev = space.evaluate(point)
    pre = space.shared_prefix(space.splits.validation.feeds, [])
    assert pre is not None and pre.acts is not None
    assert len(pre.acts[0]) < 8 and space.original.inputs()[0][0] not in pre.acts[0]  # a cut inside the net
    assert len(built) == 2  # one cut for the validation split, one for the calibration split the refit fits on
    assert sorted(built[0]) == sorted(built[1]) == sorted({c.site for c in cands})
    model = space.build(point)[0]
    runner = Runner(model)
    whole = [list(runner.run(f).values()) for f in space.splits.validation.feeds]
    from rewriter.metrics import compare_arrays

    rel = [compare_arrays(r[0], w[0], depth=True)["rel_l2"] for r, w in zip(space.reference("validation"), whole)]
    assert ev.metrics["mean"]["rel_l2"] == pytest.approx(float(np.mean(rel)), rel=1e-4, abs=1e-6)
    assert ev.metrics["mean"]["rel_l2"] > 1e-4  # the candidate did change the output
