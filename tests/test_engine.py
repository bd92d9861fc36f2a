"""rewriter.engine: per-site selection, never slower, provenance (pass + site), f16 graphs, invalid graphs."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import FORMATS, feed, handle

from rewriter import RewriteError, engine
from rewriter.graph import view
from rewriter.manager import rewrite
from rewriter.passbase import KEEP, REGISTRY, Decision, Pass, PassContext, load_passes, register
from rewriter.runtime import run

PASSES = load_passes()
NO_COST = PassContext(targets=())


@pytest.fixture(params=FORMATS)
def fmt(request) -> str:
    return request.param


@pytest.fixture
def registry():
    """Passes registered inside a test are removed afterwards."""
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


def ids(h, kind: str) -> list[str]:
    return [n.id for n in view(h).of_kind(kind)]


def test_selection_takes_one_site_and_leaves_the_other(fmt):
    h = handle("head", fmt)
    up1, up2 = ids(h, "resize")
    p = PASSES["asym_interp"](from_modes="align_corners|half_pixel")
    plan = {d.site: d for d in engine.plan(h, p, NO_COST)}
    assert plan[up1].choices == (KEEP, "half_pixel", "asymmetric") and plan[up2].choices == (KEEP, "asymmetric")
    res = engine.apply_pass(h, p, NO_COST, selection={up1: "half_pixel", up2: KEEP})
    got = {d.site: d.choice for d in res.decisions}
    assert got == {up1: "half_pixel", up2: KEEP} and res.sites_changed == 1
    modes = {n.id: n.attrs["resize"].get().coordinate_mode for n in view(h).of_kind("resize")}
    assert modes == {up1: "half_pixel", up2: "half_pixel"}  # up2 was half_pixel already and stays
    assert h.site_tags() == {view(h).node(up1).name: up1}


def test_bad_site_or_choice_is_named(fmt):
    h = handle("head", fmt)
    up1 = ids(h, "resize")[0]
    p = PASSES["interp_deconv"]()
    with pytest.raises(RewriteError, match="has no site 'nope'"):
        engine.apply_pass(h, p, NO_COST, selection={"nope": "deconv"})
    with pytest.raises(RewriteError, match=f"site '{up1}' of interp_deconv cannot take choice 'deconv'"):
        engine.apply_pass(h, p, NO_COST, selection={up1: "deconv"})  # align_corners: only keep


def test_never_slower_skips_a_site_slower_on_every_target(fmt):
    h = handle("wide", fmt)  # 64x16x16 asymmetric x2 at full CMX residency: the resize is cheaper than Pad+deconv
    p = PASSES["interp_deconv"]()
    [d] = engine.plan(h, p, PassContext())
    assert d.choice == KEEP and d.reason.startswith("skip: predicted slower on kmb, mtl, cpu (+")
    lat = d.details["latency_us"]
    assert set(lat) == {"kmb", "mtl", "cpu"} and all(v["after"] > v["before"] for v in lat.values())
    assert engine.apply_pass(h, p, PassContext()).sites_changed == 0
    forced = engine.apply_pass(h, p, PassContext(), selection={d.site: "deconv"})  # the caller may force it
    assert forced.sites_changed == 1 and "latency_us" in forced.decisions[-1].details


def test_never_slower_keeps_a_site_faster_somewhere(fmt):
    h = handle("head", fmt)
    up2 = ids(h, "resize")[1]  # 4-channel half_pixel head: the small-channel DPU form wins on kmb, not on cpu
    res = engine.apply_pass(h, PASSES["interp_deconv"](), PassContext(targets=("kmb", "cpu")))
    [d] = [d for d in res.decisions if d.site == up2]
    lat = d.details["latency_us"]
    assert d.will_change and lat["kmb"]["after"] < lat["kmb"]["before"] and lat["cpu"]["after"] > lat["cpu"]["before"]


@pytest.mark.parametrize("precision", ["f16", "f16c"])
def test_f16_irs_get_f16_constants_and_compile(precision):
    h = handle("wide", "ir", precision)
    x = feed(h)
    y0 = run(h, [x])[0]["y"]
    conv, up = ids(h, "conv")[0], ids(h, "resize")[0]
    engine.apply_pass(h, PASSES["interp_deconv"](), NO_COST, selection={up: "deconv"})
    engine.apply_pass(h, PASSES["dwpw"](refit=False), NO_COST, selection={conv: "rank9"})  # exact at full rank
    new = [op for op in h.ov.get_ops() if op.get_type_name() == "Constant"
           and op.get_friendly_name().endswith(".weight")]
    want = "f16" if precision == "f16" else "f32"  # a compressed IR computes in f32 (f16 storage + Convert)
    assert len(new) == 3 and {op.get_output_element_type(0).get_type_name() for op in new} == {want}
    h.validate()  # compiles on CPU
    tol = 2e-2 if precision == "f16" else 1e-4
    y1 = run(h, [x])[0]["y"]
    assert np.abs(y1 - y0).max() <= tol * np.abs(y0).max()


def test_invalid_graph_is_its_own_error_and_fails_the_pass(registry, tmp_path):
    @register
    class _Broken(Pass):
        name = "_test_broken"
        description = "test-only: writes a weight of the wrong shape"

        def plan(self, view, ctx):
            return [Decision(n.id, self.name, n.kind, (KEEP, "break"), "break", "test")
                    for n in view.of_kind("conv")]

        def emit(self, decision, editor, ctx):
            editor.set_const(decision.site, 1, np.ones((2, 2, 3, 3), np.float32))

    from rewriter.errors import InvalidGraph

    with pytest.raises(InvalidGraph):
        engine.apply_pass(handle("wide"), _Broken(), NO_COST)
    _, rep = rewrite(handle("wide"), "_test_broken", targets=(), verify=False)
    assert rep["passes"][0]["status"] == "failed" and "invalid model" in rep["passes"][0]["error"]
    assert "_test_broken" in REGISTRY  # the fixture removes it afterwards
