"""refit's Prefix: the activations no site can change are captured once and the suffix alone runs after."""

from __future__ import annotations

import numpy as np
import pytest
from graphs import FORMATS, feed, handle

from rewriter.graph import view
from rewriter.refit import Prefix, capture, frontier


def _convs(v):
    return [n for n in v if n.op_type in ("Conv", "Convolution")]


@pytest.mark.parametrize("fmt", FORMATS)
def test_frontier_is_the_input_of_the_first_site(fmt):
    m = handle("head", fmt)
    v = view(m)
    c1, c2, c3 = _convs(v)
    assert frontier(v, [c2.id]) == [c2.inputs[0]]  # the upsample's output: everything before stays as it was
    assert frontier(v, [c2.id, c3.id]) == [c2.inputs[0]]  # c3 is downstream of c2: nothing more
    assert frontier(v, [c1.id]) == [v.inputs[0]]  # the graph input itself


@pytest.mark.parametrize("fmt", FORMATS)
def test_prefix_capture_equals_a_full_capture(fmt):
    m = handle("head", fmt)
    v = view(m)
    _, c2, c3 = _convs(v)
    feeds = [feed(m, seed=s) for s in (1, 2, 3)]
    taps = [c2.outputs[0], c3.outputs[0], c2.inputs[0]]  # two computed from the suffix, one cached directly
    full = capture(m, feeds, taps)
    prefix = Prefix(m, feeds, [c2.id, c3.id])
    assert prefix.acts is not None and len(prefix.acts) == 3
    got: dict[str, list] = {t: [] for t in taps}
    prefix.capture(m, taps, reduce=lambda t, k, a: got[t].append((k, a)) or np.empty(0))
    for t in taps:
        assert [k for k, _ in got[t]] == [0, 1, 2]
        np.testing.assert_allclose(np.concatenate([a for _, a in got[t]]), full[t], rtol=1e-5, atol=1e-5)


def test_staged_capture_equals_one_run_of_the_cut_model():
    from rewriter.refit import staged_capture, stages

    m = handle("head")
    v = view(m)
    _, c2, c3 = _convs(v)
    taps = [c3.inputs[0], c2.inputs[0]]  # a late tensor and an earlier one another stage still needs
    parts = stages(m.proto, taps, budget=1)  # every weighted node closes a stage
    assert len(parts) >= 3
    assert all(t in {x for made, _ in parts for x in made} for t in taps)
    feeds = [feed(m, seed=s) for s in (1, 2)]
    got = staged_capture(m, feeds, taps, budget=1)
    full = capture(m, feeds, taps)
    for t in taps:
        np.testing.assert_allclose(np.concatenate([g[t] for g in got]), full[t], rtol=1e-5, atol=1e-5)


def test_cutting_a_lazy_clone_does_not_copy_its_source():
    from rewriter.refit import truncated

    m = handle("head")
    c = m.clone()
    cut = truncated(c, [_convs(view(m))[1].outputs[0]])
    assert c.shared  # read through ``proto``: the clone still shares its source's weights
    assert len(cut.proto.graph.node) < len(m.proto.graph.node)


@pytest.mark.parametrize("fmt", FORMATS)
def test_borrowed_outputs_give_the_same_reductions(fmt):
    m = handle("head", fmt)
    _, c2, c3 = _convs(view(m))
    feeds = [feed(m, seed=s) for s in (1, 2, 3)]
    taps = [c2.outputs[0], c3.outputs[0]]
    take = lambda t, k, a: a[:, :2, 1:3, 1:3].copy()  # noqa: E731 (a reduce must copy what it keeps)
    kept = capture(m, feeds, taps, reduce=take)
    borrowed = capture(m, feeds, taps, reduce=take, borrow=True)
    for t in taps:
        assert borrowed[t].shape[0] == 3 and borrowed[t].size > 3
        np.testing.assert_array_equal(borrowed[t], kept[t])
