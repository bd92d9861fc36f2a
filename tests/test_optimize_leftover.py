"""The search spends what INT8 leaves, tries INT8 first when it does not fit last, and selects robustly."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from rewriter.optimizer.executors import InProcessExecutor
from rewriter.optimizer.search import Evaluation, Point, Search, robust, scalar, usage
from rewriter.optimizer.synthetic import SiteSpec, SyntheticSpace

BUDGET = {"rel_l2": 0.05}


def _sites(n: int, err: float, mtl: float = 100.0) -> list[SiteSpec]:
    return [SiteSpec(f"s{i}", "rank1", err, (("mtl", mtl - i), ("cpu", mtl - i))) for i in range(n)]


def _search(space, budget=None, **kw) -> Search:
    return Search(space, budget or BUDGET, InProcessExecutor(space), **kw)


@dataclass
class SpreadSpace(SyntheticSpace):
    """Reports a standard error over images of ``spread`` x the mean, as a few scenes would."""

    spread: float = 0.5

    def evaluate(self, point: Point, split: str = "validation") -> Evaluation:
        ev = super().evaluate(point, split)
        ev.metrics["sem"] = {"rel_l2": self.spread * ev.metrics["mean"]["rel_l2"]}
        return ev


@dataclass
class Int8InteractsSpace(SyntheticSpace):
    """INT8 on top of float choices doubles the error (quantization ranges shift after a rewrite)."""

    def evaluate(self, point: Point, split: str = "validation") -> Evaluation:
        ev = super().evaluate(point, split)
        if point.quant is not None and point.choices:
            for agg in ("mean", "worst"):
                ev.metrics[agg]["rel_l2"] *= 2.0
        return ev


def test_robust_moves_means_by_their_standard_error():
    m = {"mean": {"rel_l2": 0.04, "delta1": 0.99}, "worst": {"rel_l2": 0.06},
         "sem": {"rel_l2": 0.01, "delta1": 0.005}}
    r = robust(m, 1.0)
    assert r["mean"]["rel_l2"] == pytest.approx(0.05) and r["mean"]["delta1"] == pytest.approx(0.985)
    assert r["worst"] == m["worst"]
    assert robust(m, 0.0)["mean"] == m["mean"]
    assert robust({"mean": {"rel_l2": 0.04}}, 1.0)["mean"]["rel_l2"] == 0.04  # no spread known: unchanged
    assert scalar(usage(r, BUDGET)) == pytest.approx(1.0)


def test_robust_selection_leaves_a_margin_for_the_spread():
    # ten sites at 0.01 each: the mean alone fits five; at mean + 1 sem (sem = 0.5 x mean) only three fit
    plain = _search(SpreadSpace(_sites(10, 0.01)), robust_z=0.0).run()
    safe = _search(SpreadSpace(_sites(10, 0.01))).run()
    assert len(plain.point.choices) == 5
    assert len(safe.point.choices) == 3
    assert safe.validation.metrics["mean"]["rel_l2"] == pytest.approx(0.03)
    assert scalar(usage(robust(safe.validation.metrics), BUDGET)) <= 1.0
    assert any(line.startswith("robust:") for line in safe.log)


def test_leftover_budget_after_int8_buys_more_float_choices():
    # floats add in quadrature (less than estimated): after INT8 the measured total leaves room for more
    space = SyntheticSpace(_sites(12, 0.01), combine="quadrature", quant_ops={"q0": 0.005, "q1": 0.005},
                           quant_saved_us={"mtl": 800.0, "cpu": 800.0})
    s = _search(space)
    sens = s.sensitivities(s.evaluate([Point()])[0], space.candidates())
    options = {}
    for v in sens.values():
        options.setdefault(v.site, []).append((v.key, v.usage, v.saved_us["mtl"]))
    q = dict(space.quant_options())
    setting = {k: v[0] for k, v in q.items()}
    start = Point.of(["s0:rank1"], setting)
    ev = s.evaluate([start])[0]
    point, final = s._spend_leftover(start, ev, options, sens)
    assert point.quant == start.quant  # INT8 kept as it was
    assert len(point.choices) > 1 and "s0:rank1" in point.choices
    assert final.latency_ms["mtl"] < ev.latency_ms["mtl"]
    assert scalar(usage(final.metrics, BUDGET)) <= 1.0
    assert any(line.startswith("leftover:") and "with int8" in line for line in s.log)


def test_int8_first_when_int8_last_does_not_fit():
    # INT8 saves far more than the float sites, but doubles the error of any float choice beside it:
    # INT8 last is rejected; INT8 first with fewer float choices is faster, and is what the search keeps
    space = Int8InteractsSpace(_sites(6, 0.006), quant_ops={"q0": 0.01, "q1": 0.01},
                               quant_saved_us={"mtl": 1500.0, "cpu": 1500.0})
    res = _search(space, robust_z=0.0).run()
    assert res.point.quant is not None
    assert any(line.startswith("int8 first:") and "faster" in line for line in res.log)
    assert scalar(usage(res.validation.metrics, BUDGET)) <= 1.0
    floats_only = [ev.latency_ms["mtl"] for p, ev in res.history
                   if p.quant is None and scalar(usage(ev.metrics, BUDGET)) <= 1.0]
    assert floats_only and res.validation.latency_ms["mtl"] < min(floats_only)
