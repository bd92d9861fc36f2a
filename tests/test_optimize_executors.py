"""Executors: in-process, local processes and Ray give the same evaluations and the same search result."""

from __future__ import annotations

import importlib.util

import pytest

from rewriter.errors import RewriteError
from rewriter.optimizer.executors import InProcessExecutor, ProcessExecutor, make_executor, safe_evaluate
from rewriter.optimizer.search import Evaluation, Point, Search
from rewriter.optimizer.synthetic import SiteSpec, SyntheticSpace

BUDGET = {"rel_l2": 0.05}


def _space() -> SyntheticSpace:
    sites = [SiteSpec(f"c{i}", "rank1", 0.004 * (i + 1), (("mtl", 100.0 + i), ("cpu", 50.0))) for i in range(5)]
    return SyntheticSpace(sites, quant_ops={"q0": 0.003, "q1": 0.05}, quant_saved_us={"mtl": 300.0, "cpu": 900.0})


def _points() -> list[Point]:
    return [Point(), Point.of(["c0:rank1"]), Point.of(["c1:rank1", "c3:rank1"]),
            Point.of(["c2:rank1"], {"overflow_fix": "enable"}, ["q1"])]


def test_process_executor_matches_in_process():
    space = _space()
    want = InProcessExecutor(space).map(_points())
    with ProcessExecutor(space, 2) as ex:
        got = ex.map(_points())
    assert [g.metrics for g in got] == [w.metrics for w in want]
    assert [g.latency_ms for g in got] == [w.latency_ms for w in want]


def test_search_result_same_with_workers():
    a = Search(_space(), BUDGET, InProcessExecutor(_space()), quant_groups=2).run()
    with make_executor(_space(), workers=2) as ex:
        b = Search(_space(), BUDGET, ex, quant_groups=2).run()
    assert a.point == b.point
    assert a.validation.metrics == b.validation.metrics
    assert a.pareto() == b.pareto()


def test_failed_candidate_becomes_an_error_evaluation():
    class Broken(SyntheticSpace):
        def evaluate(self, point, split="validation"):
            if point.choices:
                raise RewriteError("conv c0: pass produced an invalid model")
            return super().evaluate(point, split)

    space = Broken(_space().choices)
    ev = safe_evaluate(space, Point.of(["c0:rank1"]), "validation")
    assert isinstance(ev, Evaluation) and not ev.ok and "c0" in ev.error
    res = Search(space, BUDGET, InProcessExecutor(space)).run()
    assert res.point == Point()  # nothing buildable: the input
    assert res.sensitivity["c0:rank1"].reason.startswith("failed")


def test_bad_worker_count():
    with pytest.raises(RewriteError, match="--workers"):
        ProcessExecutor(_space(), 0)


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (extra: ray)")
def test_ray_executor_on_a_local_instance():
    import ray

    from rewriter.optimizer.executors import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # the local instance this test owns
    try:
        space = _space()
        want = InProcessExecutor(space).map(_points())
        ex = RayExecutor(space, address="auto", workers=2)
        try:
            got = ex.map(_points())
            res = Search(_space(), BUDGET, ex, quant_groups=2).run()
        finally:
            ex.close()
        assert [g.metrics for g in got] == [w.metrics for w in want]
        ref = Search(_space(), BUDGET, InProcessExecutor(_space()), quant_groups=2).run()
        assert res.point == ref.point
    finally:
        ray.shutdown()
    assert not ray.is_initialized()
