"""The optimize search on synthetic spaces: per-site selection, backoff, never slower, INT8 last, Pareto."""

from __future__ import annotations

import math

import pytest

from rewriter.optimizer.executors import InProcessExecutor
from rewriter.optimizer.search import Point, Search, pareto_front, scalar, usage, within
from rewriter.optimizer.synthetic import SiteSpec, SyntheticSpace

BUDGET = {"rel_l2": 0.05}


def _site(name: str, err: float, mtl: float, cpu: float | None = None, choice: str = "rank1",
          prior: bool = False) -> SiteSpec:
    return SiteSpec(name, choice, err, (("mtl", mtl), ("cpu", mtl if cpu is None else cpu)), prior=prior)


def _run(space: SyntheticSpace, budget: dict | None = None, **kw):
    return Search(space, budget or BUDGET, InProcessExecutor(space), **kw).run()


def test_usage_units():
    m = {"mean": {"rel_l2": 0.025, "delta1": 0.99, "psnr": 40.0, "absrel": 0.01}, "worst": {"rel_l2": 0.05}}
    u = usage(m, {"rel_l2": 0.05, "delta1": 0.98, "psnr": 40.0, "absrel": 0.02, "worst_rel_l2": 0.1})
    assert u["rel_l2"] == pytest.approx(0.5)
    assert u["delta1"] == pytest.approx(0.5)
    assert u["psnr"] == pytest.approx(1.0)
    assert usage({"mean": {"psnr": 46.0206}}, {"psnr": 40.0})["psnr"] == pytest.approx(0.5, rel=1e-4)
    assert u["absrel"] == pytest.approx(0.5)
    assert u["worst_rel_l2"] == pytest.approx(0.5)
    assert within(m, {"rel_l2": 0.05}) and not within(m, {"rel_l2": 0.02})
    assert scalar({}) == 0.0


def test_one_sensitive_site_others_kept():
    sites = [_site(f"conv{i}", 0.004, 100.0) for i in range(4)] + [_site("head", 0.2, 500.0)]
    res = _run(SyntheticSpace(sites))
    chosen = {k.split(":")[0] for k in res.point.choices}
    assert chosen == {"conv0", "conv1", "conv2", "conv3"}
    assert "over budget" in res.sensitivity["head:rank1"].reason
    assert res.validation.metrics["mean"]["rel_l2"] == pytest.approx(0.016)
    assert res.validation.latency_ms["mtl"] == pytest.approx(10.0 - 0.4)


def test_backoff_drops_the_worst_offender():
    # estimated 0.014 + 0.012 + 0.01 + 0.008 = 0.044 ≤ 0.05; the sites interact: 0.044 x 1.75 = 0.077 > 0.05
    sites = [_site("a", 0.014, 150.0), _site("b", 0.012, 400.0), _site("c", 0.010, 300.0), _site("d", 0.008, 200.0)]
    search = Search(SyntheticSpace(sites, combine="interacting"), BUDGET,
                    InProcessExecutor(SyntheticSpace(sites, combine="interacting")))
    keys, ev = search._backoff_float(["a:rank1", "b:rank1", "c:rank1", "d:rank1"], {
        k: s for k, s in search.sensitivities(search.evaluate([Point()])[0],
                                              SyntheticSpace(sites).candidates()).items()})
    assert any("dropped a:rank1" in line for line in search.log)  # the largest error alone goes first
    assert "a:rank1" not in keys and within(ev.metrics, BUDGET)


def test_recalibration_and_backoff_end_within_budget():
    # 12 equal sites: estimated 12 x 0.004 = 0.048, but interacting they measure 0.048 x 3.75 = 0.18
    sites = [_site(f"s{i:02d}", 0.004, 100.0 + i) for i in range(12)]
    res = _run(SyntheticSpace(sites, combine="interacting"))
    assert any(line.startswith("recalibrate:") for line in res.log)
    assert within(res.validation.metrics, BUDGET)
    n = len(res.point.choices)
    assert 2 <= n <= 5  # 5 sites: 0.02 x 2 = 0.04 fits; 6: 0.024 x 2.25 = 0.054 does not
    verifies = sum(1 for p, _ in res.history if len(p.choices) > 1)
    assert verifies <= 8  # not one verification per dropped site


def test_greedy_prefers_more_saving_per_error_and_upgrades_a_site():
    # one site, three ranks: rank1 saves most and fits, so the site ends at rank1, not at the first pick
    sites = [_site("s", 0.001, 50.0, choice="rank3"), _site("s", 0.01, 120.0, choice="rank2"),
             _site("s", 0.04, 300.0, choice="rank1")]
    res = _run(SyntheticSpace(sites))
    assert res.point.choices == ("s:rank1",)


def test_never_a_choice_slower_on_the_objective():
    sites = [_site("fast", 0.001, 100.0), _site("slow", 0.0, -20.0)]
    res = _run(SyntheticSpace(sites))
    assert res.point.choices == ("fast:rank1",)
    assert res.sensitivity["slow:rank1"].reason.startswith("skip: predicted slower on mtl")


def test_a_priori_slower_choice_is_not_built():
    space = SyntheticSpace([_site("fast", 0.001, 100.0), _site("slow", 0.0, -20.0, prior=True)])
    res = _run(space)
    assert res.point.choices == ("fast:rank1",)
    assert all("slow:rank1" not in p.choices for p, _ in res.history)


def test_final_model_never_slower_on_any_target():
    # faster on the objective (mtl) but slower on cpu, and together slower on cpu than the input
    sites = [_site("x", 0.001, 100.0, cpu=-80.0), _site("y", 0.001, 50.0, cpu=10.0)]
    res = _run(SyntheticSpace(sites))
    assert res.point.choices == ("y:rank1",)
    assert res.validation.latency_ms["cpu"] <= res.base.latency_ms["cpu"]
    assert any("never slower" in line and "x:rank1" in line for line in res.log)


def test_nothing_fits_returns_the_input():
    res = _run(SyntheticSpace([_site("a", 0.5, 100.0)]))
    assert res.point == Point()
    assert res.validation.latency_ms == res.base.latency_ms


def test_int8_last_keeps_the_sensitive_op_in_float():
    ops = {f"q{i}": 0.002 for i in range(6)}
    ops["q3"] = 0.1  # one op alone would blow the budget, even at the better setting
    space = SyntheticSpace([_site("a", 0.005, 100.0)], quant_ops=ops, quant_saved_us={"mtl": 500.0, "cpu": 2000.0},
                           quant_setting_error={"overflow_fix=enable": 0.5})
    res = _run(space, quant_groups=6)
    assert res.point.quant is not None
    assert dict(res.point.quant)["overflow_fix"] == "enable"  # the setting with less error wins
    assert "q3" in res.point.float_ops and len(res.point.float_ops) < len(ops)
    assert "a:rank1" in res.point.choices
    assert within(res.validation.metrics, BUDGET)
    assert res.test is not None and res.test.metrics["mean"]["rel_l2"] > res.validation.metrics["mean"]["rel_l2"]


def test_quick_effort_keeps_the_default_int8_setting():
    ops = {f"q{i}": 0.002 for i in range(6)}
    space = SyntheticSpace([_site("a", 0.005, 100.0)], quant_ops=ops, quant_saved_us={"mtl": 500.0, "cpu": 2000.0},
                           quant_setting_error={"overflow_fix=enable": 0.5})
    res = _run(space, quant_groups=3, quant_settings=False)
    assert [t["setting"] for t in res.quant["tried"]] == [{"overflow_fix": "disable", "fast_bias_correction": True}]
    assert res.point.quant is not None and dict(res.point.quant)["overflow_fix"] == "disable"
    assert len(res.quant["groups"]) == 3


def test_effort_auto_follows_the_weight_bytes(tiny_onnx, monkeypatch):
    import rewriter.optimizer as opt
    from rewriter.errors import RewriteError
    from rewriter.model import ModelHandle

    h = ModelHandle.load(tiny_onnx)
    assert opt._effort("auto", h)[0] == "full" and opt._effort("quick", h) == ("quick", "--effort")
    monkeypatch.setattr(opt, "QUICK_ABOVE_BYTES", opt._weight_bytes(h) - 1)
    level, why = opt._effort("auto", h)
    assert level == "quick" and "MiB of weights >" in why
    _, rep = opt.optimize(h, targets=("cpu",), passes="asym_interp", budget="rel_l2=0.05")
    assert rep.search["effort"]["level"] == "quick" and rep.search["effort"]["max_ranks"] == 1
    assert any(line.startswith("effort quick (auto:") for line in rep.search["log"])
    with pytest.raises(RewriteError, match="--effort fast: use one of auto, quick, full"):
        opt.optimize(h, targets=("cpu",), effort="fast")


def test_int8_off_when_it_does_not_fit():
    space = SyntheticSpace([_site("a", 0.005, 100.0)], quant_ops={"q0": 0.2, "q1": 0.2},
                           quant_saved_us={"mtl": 500.0, "cpu": 500.0})
    res = _run(space, quant_groups=2)
    assert res.point.quant is None
    assert res.point.choices == ("a:rank1",)


def test_pareto_front_is_non_dominated():
    sites = [_site(f"c{i}", 0.003 * (i + 1), 40.0 * (5 - i)) for i in range(5)]
    res = _run(SyntheticSpace(sites))
    front = res.pareto()
    assert len(front) >= 2
    lats = [p["latency_ms"] for p in front]
    errs = [p["budget_used"] for p in front]
    assert lats == sorted(lats)
    assert all(errs[i] > errs[i + 1] for i in range(len(errs) - 1))  # faster costs more fidelity
    evaluated = [(ev.latency_ms["mtl"], scalar(usage(ev.metrics, BUDGET))) for _, ev in res.history if ev.ok]
    for lat, err in zip(lats, errs):
        assert not any(a <= lat and b <= err and (a < lat or b < err) for a, b in evaluated)
    assert {"latency_ms", "metrics", "choices"} <= set(front[0])


def test_pareto_front_function():
    pts = [(3.0, 0.1, "a"), (1.0, 0.9, "b"), (2.0, 0.5, "c"), (2.5, 0.6, "dominated"), (1.0, 1.0, "dup")]
    assert [p[2] for p in pareto_front(pts)] == ["b", "c", "a"]


def test_evaluations_are_cached():
    space = SyntheticSpace([_site("a", 0.001, 100.0), _site("b", 0.001, 100.0)])
    _run(space)
    calls = space.calls
    search = Search(space, BUDGET, InProcessExecutor(space))
    search.evaluate([Point.of(["a:rank1"])] * 3)
    assert space.calls == calls + 1


def test_psnr_budget():
    sites = [_site("a", 0.001, 100.0), _site("b", 0.3, 300.0)]
    res = _run(SyntheticSpace(sites), budget={"psnr": 30.0})
    assert res.point.choices == ("a:rank1",)
    assert not math.isinf(res.validation.metrics["mean"]["psnr"])


def test_refill_spends_measured_slack():
    # estimated linearly, the truth adds in quadrature: 3 sites are estimated at the limit, but more fit
    sites = [_site(f"s{i}", 0.02, 100.0 - i) for i in range(6)]
    res = _run(SyntheticSpace(sites, combine="quadrature"), budget={"absrel": 0.03})
    assert len(res.point.choices) > 3
    assert any(line.startswith("refill: measured") for line in res.log)
    assert within(res.validation.metrics, {"absrel": 0.03})
