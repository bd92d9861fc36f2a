"""Pass manager: load → split inputs → passes (each: match → check → rewrite) → validate → verify → cumulative
gate → cost → report → save.

Inputs are split into calibration / validation / test (``rewriter.inputs.split_inputs``). Each pass runs on the
current model; the manager validates the result, gates it numerically against the model before the pass on the
validation split (rolling back, stopping or keeping on failure), then gates the final model against the
original on the test split, predicts latency before/after per target, and collects everything into one
JSON-able report dict (schema in the README).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import engine
from .errors import GateFailed, InvalidGraph, RewriteError
from .jsonable import jsonable as _jsonable
from .model import ModelHandle
from .passbase import Pass, PassContext
from .results import Gate, PassEntry, RewriteReport, SiteDecision

if TYPE_CHECKING:
    from .preflight import Checked

ON_FAIL = ("rollback", "stop", "keep")
TARGETS = ("kmb", "mtl", "cpu")
SLOWER_EPS = 1e-6  # predicted latencies are deterministic: any increase beyond rounding is "slower"
MEASURE_NOISE = 0.02  # a measured CPU after/before ratio within 2% of 1 is noise on a shared machine


def explain(model: Any, passes: str | list, *, opts: dict | None = None, calib: str | None = None,
            targets: tuple[str, ...] = TARGETS, seed: int = 0,
            input_shape: str | dict[str, list[int]] | None = None) -> dict:
    """Dry run: every candidate site of every pass and why it would or would not change. Writes nothing.

    Later passes are matched on the model as the earlier ones would leave it (applied to a copy,
    without verification); a quantizing pass is only matched.
    """
    from .graph import parse_input_shape
    from .preflight import preflight

    pre = preflight(model, passes, opts=opts, targets=tuple(targets), calib=calib)
    handle, plist = pre.handle, pre.passes
    ctx = PassContext(calib_dir=calib, targets=tuple(targets), seed=seed, original=handle,
                      input_shape=parse_input_shape(input_shape, handle))
    current = handle.clone()
    out = {"input": handle.name, "format": handle.format, "passes": [], "notes": pre.notes}
    for i, p in enumerate(plist):
        _check_format(p, current)
        sites = engine.plan(current, p, ctx)
        out["passes"].append({"name": p.name, "exact": p.exact_for([s for s in sites if s.will_change])
                              if any(s.will_change for s in sites) else p.is_exact(), "options": p.opts,
                              "sites": [s.to_json() for s in sites],
                              "sites_to_change": sum(s.will_change for s in sites)})
        if i < len(plist) - 1 and not p.quantizes and any(s.will_change for s in sites):
            engine.apply_pass(current, p, replace(ctx, dry_run=True))
    return out


def rewrite(model: Any, passes: str | list, *, opts: dict | None = None, output: str | Path | None = None,
            to: str | None = None, calib: str | None = None, images: str | None = None,
            targets: tuple[str, ...] | list[str] = TARGETS, verify: bool = True, on_fail: str = "rollback",
            budget: dict | str | None = None, tol: float | None = None, check_runtime: str = "ov",
            measure: bool = False, seed: int = 0, compress_to_fp16: bool = False, verbosity: int = 0,
            locate: bool = True, progress: Callable[[str], None] | None = None,
            input_shape: str | dict[str, list[int]] | None = None, alongside: list | None = None,
            alongside_ms: float | None = None, allow_overlap: bool = False,
            checked: Checked | None = None) -> tuple[ModelHandle, RewriteReport]:
    """Apply ``passes`` in order to ``model`` (path, ModelProto, openvino.Model or ModelHandle).

    Inputs are split three ways (``rewriter.inputs.split_inputs``): passes fit on the calibration split,
    each pass is gated against the model before it on the validation split, and the final model against
    the original on the test split (the cumulative gate, ``report["cumulative"]``). Under ``on_fail=
    "rollback"`` a failed cumulative gate drops approximate passes, the last one first, until it passes.

    Returns ``(final model, RewriteReport)`` (``rewriter.results``; ``.to_json()`` is the JSON report); saves
    to ``output`` when given. Raises ``RewriteError`` for bad
    input/usage and ``GateFailed`` when a gate (per pass or cumulative) fails under ``on_fail="stop"``
    (nothing is saved then; the exception carries the report). ``alongside`` (models) / ``alongside_ms`` add
    each target's shared-frame figures as ``latency[target]["alongside"]``. ``checked``: the
    ``rewriter.preflight.Checked`` of this very request when the caller already ran ``preflight`` (the CLI
    does, to refuse report paths too); the checks then run once, not twice.
    """
    if on_fail not in ON_FAIL:
        raise RewriteError(f"--on-fail {on_fail!r}: use one of {', '.join(ON_FAIL)}")
    targets = tuple(targets)
    for t in targets:
        if t not in TARGETS:
            raise RewriteError(f"unknown target '{t}' (use {', '.join(TARGETS)})")
    say = progress or (lambda _msg: None)
    from .preflight import preflight

    pre = checked or preflight(model, passes, opts=opts, output=output, to=to, targets=targets, budget=budget,
                               calib=calib, images=images)  # everything refusable is refused before any pass runs
    original, plist = pre.handle, pre.passes
    if not verify and not measure:  # nothing reads the original's weights again: the first edit takes them
        original.donate_weights()
    for note in pre.notes:
        say(note)
    if isinstance(budget, str):
        from .verify import parse_budget

        budget = parse_budget(budget)
    from .graph import parse_input_shape
    from .inputs import split_inputs

    splits = split_inputs(original, calib, images, seed=seed, allow_overlap=allow_overlap)
    ctx = PassContext(calib_dir=calib, images_dir=images, targets=targets, seed=seed, original=original,
                      verbosity=verbosity, splits=splits, input_shape=parse_input_shape(input_shape, original))
    report = RewriteReport(input=original.name, format=original.format, output_format=to or original.format,
                           notes=list(pre.notes), targets=list(targets),
                           inputs={**splits.names(), "overlap": splits.overlap, "source": splits.source},
                           default_gates=_default_gates())
    if splits.overlap:
        report.notes.append("--allow-overlap: calibration, validation and test share images; the gates and "
                               "the headline fidelity are not held out")
    run = _Runner(ctx, verify, on_fail, budget, tol, check_runtime, locate, say, targets)
    chain = run.chain(plist, original.clone(), report)
    current = chain[-1].after if chain else original
    report.passes = [st.entry for st in chain]
    if verify:
        cum, chain = _cumulative(run, original, plist, chain, splits, report)
        current = chain[-1].after if chain else original
        report.passes = [st.entry for st in chain]
        report.cumulative = Gate.from_json(_jsonable(cum))
        if not cum.get("passed", True) and on_fail == "stop":
            report.exit_code = 1
            raise GateFailed(f"cumulative gate failed: {cum.get('message')} (--on-fail stop: nothing written)",
                             report)
    else:
        report.cumulative = Gate(skipped="--no-verify", split="test")
    report.latency = _latency(original, current, targets)
    if alongside or alongside_ms is not None:  # the frame shared with other workloads, per target
        from .cost.command import attach_alongside

        attach_alongside(report.latency, alongside, alongside_ms)
    report.op_counts = _op_counts(original, current)
    if measure:
        say("measuring CPU latency (interleaved A/B) ...")
        from .cost import measure_ab

        report.measured = measure_ab(original, current)
    _flag_slower(report)
    if output is not None:
        out = current.save(output, to=to, compress_to_fp16=compress_to_fp16)
        report.output = str(out)
    report.exit_code = 0
    return current, report


def _default_gates() -> dict[str, str]:
    from .verify import DEFAULT_GATES

    return dict(DEFAULT_GATES)


@dataclass
class _Step:
    """One pass of the chain: its report entry, the model before it and the model after it."""

    p: Pass
    entry: PassEntry
    before: ModelHandle
    after: ModelHandle


class _Runner:
    """Runs passes one after the other with their per-pass gates (validation split)."""

    def __init__(self, ctx: PassContext, verify: bool, on_fail: str, budget: dict | None, tol: float | None,
                 runtime: str, locate: bool, say: Callable[[str], None], targets: tuple[str, ...]):
        self.ctx, self.verify, self.on_fail, self.budget, self.tol = ctx, verify, on_fail, budget, tol
        self.runtime, self.locate, self.say, self.targets = runtime, locate, say, targets
        self.cost_cache: dict[tuple, tuple] = {}

    def chain(self, plist: list[Pass], current: ModelHandle, report: RewriteReport) -> list[_Step]:
        """Run ``plist`` from ``current``, one step per pass."""
        steps: list[_Step] = []
        for p in plist:
            _check_format(p, current)
            self.say(f"[{p.name}] matching and rewriting ...")
            entry, before, after = _run_pass(p, current, self.ctx, self.verify, self.on_fail, self.budget, self.tol,
                                             self.runtime, self.locate, self.say)
            current = after if entry.kept else before
            entry.latency = _pass_latency(before, current, self.targets, self.cost_cache)
            steps.append(_Step(p, entry, before, current))
            if entry.status in ("rolled_back", "failed") and self.on_fail == "stop":
                report.passes = [st.entry for st in steps]
                report.exit_code = 1
                raise GateFailed(f"pass {p.name} failed its check: "
                                 f"{entry.fidelity.message or entry.error}"
                                 " (--on-fail stop: nothing written)", report)
        return steps


def _changed(chain: list[_Step]) -> list[_Step]:
    return [st for st in chain if st.entry.kept]


def _final_gate(run: _Runner, original: ModelHandle, chain: list[_Step], splits: Any) -> dict:
    """The final model vs the original on the test split, with the gate of its least exact pass."""
    changed = _changed(chain)
    if not changed:
        return {"passed": True, "gate": "none", "split": "test",
                "message": "test split: no pass changed the model; the output is the original"}
    from .verify import check_pass

    exact = all(st.entry.exact for st in changed)
    run.say(f"cumulative gate: final model vs the original on the test split ({len(splits.test.feeds)} inputs) ...")
    gate = check_pass(original, chain[-1].after, exact=exact, inputs=splits.test, split="test",
                      budget=run.budget, tol=run.tol, runtime=run.runtime, seed=run.ctx.seed)
    gate["message"] = "final vs original, " + gate["message"]
    gate["passes"] = [st.p.name for st in changed]
    return gate


def _cumulative(run: _Runner, original: ModelHandle, plist: list[Pass], chain: list[_Step], splits: Any,
                report: RewriteReport) -> tuple[dict, list[_Step]]:
    """Cumulative gate; under rollback, drop approximate passes (last first) and re-run the later ones."""
    gate = _final_gate(run, original, chain, splits)
    dropped: list[dict] = []
    while not gate["passed"] and run.on_fail == "rollback":
        approx = [i for i, st in enumerate(chain) if st.entry.kept and not st.entry.exact]
        if not approx:
            break
        k = approx[-1]
        st = chain[k]
        reason = (f"the final model was over budget against the original ({gate['message']}); {st.p.name} is "
                  "the last approximate pass applied, so it was dropped")
        run.say(f"[{st.p.name}] rolled back at the cumulative gate")
        st.entry.status = "rolled_back_cumulative"
        st.entry.sites_changed_before_rollback = st.entry.sites_changed
        st.entry.notes.append(reason)
        st.entry.latency = _pass_latency(st.before, st.before, run.targets, run.cost_cache)
        dropped.append({"pass": st.p.name, "reason": reason, "failed": _jsonable(
            {k2: gate.get(k2) for k2 in ("message", "needed", "metrics")})})
        current = st.before
        rebuilt = chain[:k] + [_Step(st.p, st.entry, current, current)]
        for s2 in chain[k + 1:]:
            if s2.entry.status == "rolled_back_cumulative":  # dropped earlier: stays dropped
                s2.entry.latency = _pass_latency(current, current, run.targets, run.cost_cache)
                rebuilt.append(_Step(s2.p, s2.entry, current, current))
                continue
            run.say(f"re-running {s2.p.name} without {st.p.name} ...")
            (new,) = run.chain([s2.p], current, report)
            new.entry.notes.append(f"re-run after {st.p.name} was dropped at the cumulative gate")
            rebuilt.append(new)
            current = new.after
        chain = rebuilt
        gate = _final_gate(run, original, chain, splits)
    gate["dropped"] = dropped
    return gate, chain


def _flag_slower(report: RewriteReport | dict) -> None:
    """Never slower, report side: flag targets predicted slower than the input, and a measured CPU slowdown."""
    applied = [p["name"] for p in report["passes"] if p.get("status") in ("applied", "kept_failed")]
    for t, v in (report.get("latency") or {}).items():
        if not isinstance(v, dict) or v.get("before_ms") is None or v.get("after_ms") is None:
            continue
        v["slower"] = v["after_ms"] > v["before_ms"] * (1 + SLOWER_EPS)
        if v["slower"]:
            culprits = [p["name"] for p in report["passes"]
                        if ((p.get("latency") or {}).get(t) or {}).get("after_ms", 0) >
                        ((p.get("latency") or {}).get(t) or {}).get("before_ms", 0) * (1 + SLOWER_EPS)]
            report["notes"].append(f"WARNING: the result is predicted slower than the input on {t}: "
                                   f"{v['before_ms']:.4g} → {v['after_ms']:.4g} ms (passes applied: "
                                   f"{', '.join(applied) or 'none'}; predicted slower by: "
                                   f"{', '.join(culprits) or 'their combination'})")
    m = report.get("measured")
    if isinstance(m, dict) and m.get("ratio") is not None:
        low = (m.get("ratio_p10_p90") or [m["ratio"]])[0]
        m["slower"] = bool(m["ratio"] > 1 + MEASURE_NOISE and low > 1.0)
        if m["slower"]:
            report["notes"].append(f"WARNING: measured CPU slowdown beyond noise: after/before time ratio "
                                   f"{m['ratio']:.3f} (p10 {low:.3f} > 1, {m.get('runs', '?')} interleaved runs); "
                                   f"passes applied: {', '.join(applied) or 'none'}")


def _check_format(p: Pass, model: ModelHandle) -> None:
    if model.format not in p.formats:
        raise RewriteError(f"pass {p.name} does not support {model.format.upper()} models "
                           f"(supports: {', '.join(p.formats)})")


def _run_pass(p: Pass, current: ModelHandle, ctx: PassContext, verify: bool, on_fail: str,
              budget: dict | None, tol: float | None, runtime: str, locate_failures: bool,
              say: Callable[[str], None]) -> tuple[PassEntry, ModelHandle, ModelHandle]:
    """Run one pass on a copy of ``current``: (its report entry, the model before, the model after it)."""
    before = current
    after = current.clone()
    entry = PassEntry(name=p.name, exact=p.is_exact(), options=_jsonable(p.opts))
    t0 = time.perf_counter()
    try:
        result = engine.apply_pass(after, p, ctx)  # validates what it changed
        entry.sites_changed, entry.notes = result.sites_changed, list(result.notes)
        entry.extra = _jsonable(result.extra)
        entry.sites = [SiteDecision.from_decision(s) for s in result.decisions]
        entry.exact = result.exact  # exactness may depend on what the pass chose (e.g. dwpw at full rank)
        if result.sites_changed:
            entry.status = "applied"
    except InvalidGraph as e:  # the pass produced a broken graph
        entry.status, entry.error = "failed", f"pass {p.name} produced an invalid model: {e}"
    except Exception as e:  # a bug in a pass must not lose the user's run: report it and roll back
        entry.status, entry.error = "failed", f"pass {p.name} crashed: {type(e).__name__}: {e}"
        entry.traceback = traceback.format_exc(limit=5)
    entry.seconds = round(time.perf_counter() - t0, 3)
    if entry.status == "failed":
        entry.sites_changed = 0
        say(f"[{p.name}] FAILED: {entry.error}")
        return entry, before, before
    if entry.status == "applied" and verify:
        say(f"[{p.name}] {entry.sites_changed} site(s) changed; verifying ...")
        from .verify import check_pass

        t1 = time.perf_counter()
        gate = check_pass(before, after, exact=entry.exact, inputs=ctx.splits.validation if ctx.splits else None,
                          split="validation", images=ctx.images_dir, budget=budget, tol=tol, runtime=runtime,
                          seed=ctx.seed)
        entry.fidelity = Gate.from_json(_jsonable(gate))
        entry.verify_seconds = round(time.perf_counter() - t1, 3)
        if not gate.get("passed", False) and locate_failures:
            from .verify import locate

            try:
                entry.first_divergence = locate(before, after, tags=after.tags())
            except Exception as e:  # the locator is a diagnosis aid: its failure must not hide the gate result
                entry.notes.append(f"first-divergence locator failed: {e}")
        if not gate.get("passed", False):
            if on_fail == "keep":
                entry.status = "kept_failed"
                say(f"[{p.name}] gate FAILED, kept (--on-fail keep): {gate.get('message', '')}")
            else:
                entry.status = "rolled_back"
                say(f"[{p.name}] gate FAILED, rolled back: {gate.get('message', '')}")
                return entry, before, before
    elif entry.status == "applied":
        entry.fidelity = Gate(skipped="--no-verify")
    return entry, before, after


def _predicted_ms(model: ModelHandle, target: str, cache: dict) -> float | None:
    from .cost import predict

    key = (id(model), target)
    if key not in cache:  # the model is kept in the entry so its id cannot be reused while cached
        cache[key] = (model, round(predict(model, target).total_ms, 4))
    return cache[key][1]


def _pass_latency(before: ModelHandle, after: ModelHandle, targets: tuple[str, ...], cache: dict) -> dict:
    return {t: {"before_ms": _predicted_ms(before, t, cache), "after_ms": _predicted_ms(after, t, cache)}
            for t in targets}


def _latency(original: ModelHandle, final: ModelHandle, targets: tuple[str, ...]) -> dict:
    from .cost import compare

    return {t: _jsonable(compare(original, final, t)) for t in targets}


def _op_counts(a: ModelHandle, b: ModelHandle) -> dict[str, list[int]]:
    ca, cb = a.op_types(), b.op_types()
    return {op: [ca.get(op, 0), cb.get(op, 0)] for op in sorted(set(ca) | set(cb))}
