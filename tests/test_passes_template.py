"""One test body per pass, run on ONNX and OpenVINO IR (NNCF cross-framework style), plus the example pass.

Each case: the sites that fire, the op census after, the numerics against the model before (exact passes to
float tolerance), provenance tags (pass + site) and idempotence (a second run changes nothing).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from graphs import FORMATS, feed, handle

from rewriter import engine
from rewriter.graph import view
from rewriter.passbase import REGISTRY, PassContext, load_passes
from rewriter.runtime import run

NO_COST = PassContext(targets=())  # what emit writes, not what the cost model prefers
CASES = {  # pass: (graph, options, sites changed, exact, op kinds that appear)
    "asym_interp": ("head", {}, 1, False, set()),
    "interp_deconv": ("wide", {}, 1, True, {"deconv", "pad"}),
    "dwpw": ("wide", {"rank": 9, "refit": False, "min_gain": "none"}, 1, True, {"depthwise", "pointwise"}),
    "nearest_upsample": ("head", {}, 2, False, set()),
}


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    return request.param


@pytest.fixture
def passes():
    """The registry with the example pass loaded; restored afterwards."""
    saved = dict(load_passes())
    example = importlib.import_module("rewriter.passes._example")
    out = {**saved, "nearest_upsample": example.NearestUpsample}
    yield out
    REGISTRY.clear()
    REGISTRY.update(saved)


@pytest.mark.parametrize("name", list(CASES))
def test_pass_on_both_formats(name, fmt, passes):
    graph, opts, n_sites, exact, new_kinds = CASES[name]
    h = handle(graph, fmt)
    before = h.clone()
    kinds_before = {n.kind for n in view(h)}
    res = engine.apply_pass(h, passes[name](**opts), NO_COST)
    assert res.sites_changed == n_sites and res.exact == exact
    assert new_kinds <= {n.kind for n in view(h)} - kinds_before
    sites = {d.site for d in res.decisions if d.will_change}
    assert set(h.site_tags().values()) == sites and set(h.tags().values()) == {name}
    x = feed(h)
    y0, y1 = run(before, [x])[0]["y"], run(h, [x])[0]["y"]
    err = np.abs(y1 - y0).max() / np.abs(y0).max()
    assert err <= 1e-5 if exact else 1e-6 < err < 1.0
    assert engine.apply_pass(h, passes[name](**opts), NO_COST).sites_changed == 0  # idempotent


def test_example_pass_explains_every_site(fmt, passes):
    h = handle("head", fmt)
    p = passes["nearest_upsample"](max_scale=2)
    decisions = engine.plan(h, p, NO_COST)
    assert [d.choice for d in decisions] == ["nearest", "nearest"]
    assert all(d.reason and d.choices == ("keep", "nearest") for d in decisions)
    assert engine.plan(h, p, PassContext())  # with costs too
