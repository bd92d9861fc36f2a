"""The engine: plan a pass on the graph view, select per site, emit through an editor, tag, validate.

Data flows one way: ``view(model)`` → ``pass.plan`` (one :class:`Decision` per site) → selection (the caller's
``{site: choice}`` over the defaults) → never-slower check → ``pass.emit`` per site (or ``emit_all``) →
``finish`` (refits) → provenance tags (pass + site) → validation → :class:`PassResult`.

Never slower: the changed sites are emitted on a clone (``ctx.dry_run``: no refit, no NNCF), both models are
costed per target with ``rewriter.cost.predict`` and each site's cost is the cost of the nodes it made
against the nodes it replaced. A site predicted slower on every requested target becomes KEEP with reason
``"skip: predicted slower on kmb, mtl, cpu (+x µs)"`` unless the selection forces it; the pass is then emitted
again without it on a fresh copy. Per-site figures go to ``details["latency_us"]``.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from dataclasses import replace

from .errors import RewriteError
from .graph import Editor, editor, view
from .model import ModelHandle
from .passbase import KEEP, Decision, Outcome, Pass, PassContext, PassResult


def plan(model: ModelHandle, p: Pass, ctx: PassContext) -> list[Decision]:
    """Every candidate site of ``p`` on ``model`` and what it would do there (never edits ``model``)."""
    decisions = p.plan(view(model, ctx.input_shape), ctx)
    if _costed(p, ctx) and any(d.will_change for d in decisions):
        decisions, _ = _never_slower(model, p, ctx, decisions, forced=set())
    return decisions


def apply_pass(model: ModelHandle, p: Pass, ctx: PassContext,
               selection: Mapping[str, str] | None = None) -> PassResult:
    """Apply ``p`` to ``model`` in place; ``selection`` maps site id → choice over the pass's defaults."""
    decisions = select(p.plan(view(model, ctx.input_shape), ctx), selection)
    forced = set(selection or {})
    if p.emit_all is not None:
        return _apply_whole(model, p, ctx, decisions)
    trial = None
    if _costed(p, ctx) and any(d.will_change for d in decisions):
        decisions, trial = _never_slower(model, p, ctx, decisions, forced)
    changed = [d for d in decisions if d.will_change]
    if not changed:
        return PassResult(decisions, exact=p.exact_for([]))
    if trial is not None and not ctx.dry_run and p.needs_reference(changed, ctx):
        trial = None  # the data-dependent finish must run on the real model
        gc.collect()  # the dropped trial (clone, editor, view cache: a cycle) holds a full copy of the weights
    if trial is not None:  # the clone the cost check emitted is the result: adopt its graph
        trial_model, ed = trial
        model.onnx, model.ov = trial_model.onnx, trial_model.ov
        model.touch()
        ed.handle = model
        outcome = None if ctx.dry_run else p.finish(changed, ed, ctx, None)
    else:
        reference = model.clone() if not ctx.dry_run and p.needs_reference(changed, ctx) else None
        ed = _emit(model, p, ctx, changed)
        outcome = None if ctx.dry_run else p.finish(changed, ed, ctx, reference)
    outcome = outcome or Outcome()
    if outcome.decisions is not None:
        decisions = outcome.decisions
    ed.commit()
    new_nodes = _tag(model, p, ed, outcome)
    if not ctx.dry_run:
        model.validate()
    return PassResult(decisions, new_nodes, [*ed.notes, *outcome.notes], outcome.extra,
                      exact=p.exact_for([d for d in decisions if d.will_change]))


def select(decisions: list[Decision], selection: Mapping[str, str] | None) -> list[Decision]:
    """Apply ``{site: choice}`` over the defaults; an unknown site or a choice it lacks raises RewriteError."""
    if not selection:
        return decisions
    by_site = {d.site: d for d in decisions}
    for site, choice in selection.items():
        d = by_site.get(site)
        if d is None:
            known = ", ".join(list(by_site)[:8]) + (" ..." if len(by_site) > 8 else "")
            name = decisions[0].pass_name if decisions else "the pass"
            raise RewriteError(f"selection: {name} has no site '{site}' (sites: {known or 'none'})")
        if choice not in d.choices:
            raise RewriteError(f"selection: site '{site}' of {d.pass_name} cannot take choice '{choice}' "
                               f"(choices: {', '.join(d.choices)})")
    return [d.with_choice(selection[d.site], "selected by the caller") if d.site in selection
            and selection[d.site] != d.choice else d for d in decisions]


# ---- emitting ------------------------------------------------------------------------------------------------
def _emit(model: ModelHandle, p: Pass, ctx: PassContext, changed: list[Decision], ed: Editor | None = None) -> Editor:
    ed = ed or editor(model, ctx.input_shape)
    for d in changed:
        ed.site = d.site
        p.emit(d, ed, ctx)
    ed.site = None
    ed.remove_dead()
    ed.commit()
    return ed


def _tag(model: ModelHandle, p: Pass, ed: Editor, outcome: Outcome) -> list[str]:
    new_nodes: list[str] = []
    for site, names in ed.made().items():
        model.tag(names, p.name, site or None)
        new_nodes += names
    extra = [n for n in outcome.modified if n not in new_nodes]
    if extra:
        model.tag(extra, p.name)
        new_nodes += extra
    return list(dict.fromkeys(new_nodes))


def _apply_whole(model: ModelHandle, p: Pass, ctx: PassContext, decisions: list[Decision]) -> PassResult:
    """A whole-model pass (NNCF): it edits the model itself; the engine tags, validates and assembles."""
    if ctx.dry_run or not any(d.will_change for d in decisions):
        return PassResult(decisions, exact=p.exact_for([]))
    outcome = p.emit_all(decisions, model, ctx)
    model.touch()
    decisions = outcome.decisions if outcome.decisions is not None else decisions
    if outcome.modified:
        model.tag(outcome.modified, p.name)
    model.validate()
    return PassResult(decisions, list(outcome.modified), outcome.notes, outcome.extra,
                      exact=p.exact_for([d for d in decisions if d.will_change]))


# ---- never slower ----------------------------------------------------------------------------------------------
def _costed(p: Pass, ctx: PassContext) -> bool:
    return p.emit_all is None and bool(ctx.targets)


def _never_slower(model: ModelHandle, p: Pass, ctx: PassContext, decisions: list[Decision],
                  forced: set[str]) -> tuple[list[Decision], tuple[ModelHandle, Editor] | None]:
    """Cost every changed site on a dry-run clone; turn sites slower on every target into KEEP.

    Returns the decisions and, when no site was turned, (the clone, its editor) for the caller to adopt.
    """
    from .cost import predict

    changed = [d for d in decisions if d.will_change]
    trial = model.clone()
    ed = editor(trial, ctx.input_shape)
    ed.name_nodes()  # every node under its view id, before and after, so costs attribute by name
    before = {t: _by_node(predict(trial, t, input_shape=ctx.input_shape).layers) for t in ctx.targets}
    _emit(trial, p, replace(ctx, dry_run=True), changed, ed)
    _tag(trial, p, ed, Outcome())  # tagged as the result will be: the cost model's cache then serves both
    made, replaced = ed.made(), ed.replaced()
    per_site: dict[str, dict[str, dict[str, float]]] = {d.site: {} for d in changed}
    for t in ctx.targets:
        after = _by_node(predict(trial, t, input_shape=ctx.input_shape).layers)
        for d in changed:
            b = sum(before[t].get(n, 0.0) for n in replaced.get(d.site, []))
            a = sum(after.get(n, 0.0) for n in made.get(d.site, []))
            per_site[d.site][t] = {"before": round(b, 3), "after": round(a, 3)}
    out, turned = [], False
    for d in decisions:
        if not d.will_change:
            out.append(d)
            continue
        lat = per_site[d.site]
        slower = all(v["after"] > v["before"] for v in lat.values())
        if slower and d.site not in forced:
            worst = min(v["after"] - v["before"] for v in lat.values())
            reason = f"skip: predicted slower on {', '.join(lat)} (+{worst:.3g} µs)"
            out.append(d.with_choice(KEEP, reason, latency_us=lat, would_choose=d.choice))
            turned = True
        else:
            out.append(d.with_choice(d.choice, d.reason, latency_us=lat))
    return out, None if turned else (trial, ed)


def _by_node(layers) -> dict[str, float]:
    out: dict[str, float] = {}
    for c in layers:
        out[c.node] = out.get(c.node, 0.0) + float(c.us)
    return out
