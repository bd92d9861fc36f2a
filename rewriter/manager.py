"""Pass manager: load → passes (each: match → check → rewrite) → validate → verify → cost → report → save.

Each pass runs on the current model; the manager validates the result, gates it numerically against the
model before the pass (rolling back, stopping or keeping on failure), predicts latency before/after per target,
and collects everything into one JSON-able report dict (schema in the README).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import GateFailed, RewriteError
from .jsonable import jsonable as _jsonable
from .model import ModelHandle
from .passbase import Pass, PassContext, build_passes, check_order

ON_FAIL = ("rollback", "stop", "keep")
TARGETS = ("kmb", "mtl", "cpu")


def _resolve_passes(passes: str | list, opts: dict | None) -> list[Pass]:
    if isinstance(passes, str):
        passes = [p.strip() for p in passes.split(",") if p.strip()]
    if not passes:
        raise RewriteError("no passes given (e.g. --passes asym_interp,dwpw); see --list-passes")
    if all(isinstance(p, Pass) for p in passes):
        if opts:
            raise RewriteError("options go to the pass constructors when passing Pass instances")
        check_order(list(passes))
        return list(passes)
    if any(isinstance(p, Pass) for p in passes):
        raise RewriteError("give pass names or Pass instances, not a mix")
    return build_passes(list(passes), opts)


def explain(model: Any, passes: str | list, *, opts: dict | None = None, calib: str | None = None,
            targets: tuple[str, ...] = TARGETS, seed: int = 0) -> dict:
    """Dry run: every candidate site of every pass and why it would or would not change. Writes nothing.

    Later passes are matched on the model as the earlier ones would leave it (applied to a copy,
    without verification); a quantizing pass is only matched.
    """
    from .preflight import preflight

    pre = preflight(model, passes, opts=opts, targets=tuple(targets), calib=calib)
    handle, plist = pre.handle, pre.passes
    ctx = PassContext(calib_dir=calib, targets=tuple(targets), seed=seed, original=handle)
    current = handle.clone()
    out = {"input": handle.name, "format": handle.format, "passes": [], "notes": pre.notes}
    for i, p in enumerate(plist):
        _check_format(p, current)
        sites = p.match(current, ctx)
        out["passes"].append({"name": p.name, "exact": p.is_exact(), "options": p.opts,
                              "sites": [s.to_json() for s in sites],
                              "sites_to_change": sum(s.will_change for s in sites)})
        if i < len(plist) - 1 and not p.quantizes and any(s.will_change for s in sites):
            p.apply(current, ctx)
    return out


def rewrite(model: Any, passes: str | list, *, opts: dict | None = None, output: str | Path | None = None,
            to: str | None = None, calib: str | None = None, images: str | None = None,
            targets: tuple[str, ...] | list[str] = TARGETS, verify: bool = True, on_fail: str = "rollback",
            budget: dict | str | None = None, tol: float | None = None, check_runtime: str = "ov",
            measure: bool = False, seed: int = 0, compress_to_fp16: bool = False, verbosity: int = 0,
            locate: bool = True, progress: Callable[[str], None] | None = None) -> tuple[ModelHandle, dict]:
    """Apply ``passes`` in order to ``model`` (path, ModelProto, openvino.Model or ModelHandle).

    Returns ``(final model, report dict)``; saves to ``output`` when given. Raises ``RewriteError`` for bad
    input/usage and ``GateFailed`` when a gate fails under ``on_fail="stop"`` (nothing is saved then; the
    exception carries the report).
    """
    if on_fail not in ON_FAIL:
        raise RewriteError(f"--on-fail {on_fail!r}: use one of {', '.join(ON_FAIL)}")
    targets = tuple(targets)
    for t in targets:
        if t not in TARGETS:
            raise RewriteError(f"unknown target '{t}' (use {', '.join(TARGETS)})")
    say = progress or (lambda _msg: None)
    from .preflight import preflight

    pre = preflight(model, passes, opts=opts, output=output, to=to, targets=targets, budget=budget,
                    calib=calib, images=images)  # everything refusable is refused before any pass runs
    original, plist = pre.handle, pre.passes
    for note in pre.notes:
        say(note)
    if isinstance(budget, str):
        from .verify import parse_budget

        budget = parse_budget(budget)
    ctx = PassContext(calib_dir=calib, images_dir=images or calib, targets=targets, seed=seed,
                      original=original, verbosity=verbosity)
    report: dict[str, Any] = {"input": original.name, "output": None, "format": original.format,
                              "output_format": to or original.format, "passes": [], "notes": list(pre.notes),
                              "targets": list(targets)}
    current = original.clone()
    cost_cache: dict[tuple, tuple] = {}
    for p in plist:
        _check_format(p, current)
        say(f"[{p.name}] matching and rewriting ...")
        entry = _run_pass(p, current, ctx, verify, on_fail, budget, tol, check_runtime, locate, say)
        before, after = entry.pop("_before"), entry.pop("_after")
        if entry["status"] in ("applied", "kept_failed"):
            current = after
        else:
            current = before
        entry["latency"] = _pass_latency(before, after if entry["status"] != "no_change" else before,
                                         targets, cost_cache)
        report["passes"].append(entry)
        if entry["status"] in ("rolled_back", "failed") and on_fail == "stop":
            report["exit_code"] = 1
            raise GateFailed(f"pass {p.name} failed its check: {entry['fidelity'].get('message') or entry.get('error')}"
                             " (--on-fail stop: nothing written)", report)
    report["latency"] = _latency(original, current, targets)
    report["op_counts"] = _op_counts(original, current)
    if measure:
        say("measuring CPU latency (interleaved A/B) ...")
        from .cost import measure_ab

        report["measured"] = measure_ab(original, current)
    else:
        report["measured"] = None
    if output is not None:
        out = current.save(output, to=to, compress_to_fp16=compress_to_fp16)
        report["output"] = str(out)
    report["exit_code"] = 0
    return current, report


def _check_format(p: Pass, model: ModelHandle) -> None:
    if model.format not in p.formats:
        raise RewriteError(f"pass {p.name} does not support {model.format.upper()} models "
                           f"(supports: {', '.join(p.formats)})")


def _run_pass(p: Pass, current: ModelHandle, ctx: PassContext, verify: bool, on_fail: str,
              budget: dict | None, tol: float | None, runtime: str, locate_failures: bool,
              say: Callable[[str], None]) -> dict:
    before = current
    after = current.clone()
    entry: dict[str, Any] = {"name": p.name, "exact": p.is_exact(), "options": _jsonable(p.opts),
                             "sites_changed": 0, "sites": [], "status": "no_change", "fidelity": {},
                             "first_divergence": None, "notes": [], "extra": {}}
    t0 = time.perf_counter()
    try:
        result = p.apply(after, ctx)
        entry.update(sites_changed=result.sites_changed, sites=[s.to_json() for s in result.sites],
                     notes=list(result.notes), extra=_jsonable(result.extra),
                     exact=p.is_exact())  # exactness may depend on what apply chose (e.g. dwpw at full rank)
        if result.sites_changed:
            after.validate()
            entry["status"] = "applied"
    except RewriteError as e:
        if "invalid" in str(e) or "cannot compile" in str(e):  # the pass produced a broken graph
            entry.update(status="failed", error=f"pass {p.name} produced an invalid model: {e}")
        else:
            raise
    except Exception as e:  # a bug in a pass must not lose the user's run: report it and roll back
        entry.update(status="failed", error=f"pass {p.name} crashed: {type(e).__name__}: {e}",
                     traceback=traceback.format_exc(limit=5))
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    if entry["status"] == "failed":
        entry["sites_changed"] = 0
        say(f"[{p.name}] FAILED: {entry['error']}")
        return {**entry, "_before": before, "_after": before}
    if entry["status"] == "applied" and verify:
        say(f"[{p.name}] {entry['sites_changed']} site(s) changed; verifying ...")
        from .verify import check_pass

        t1 = time.perf_counter()
        gate = check_pass(before, after, exact=p.is_exact(), images=ctx.images_dir, budget=budget, tol=tol,
                          runtime=runtime, seed=ctx.seed)
        entry["fidelity"] = _jsonable(gate)
        entry["verify_seconds"] = round(time.perf_counter() - t1, 3)
        if not gate.get("passed", False) and locate_failures:
            from .verify import locate

            try:
                entry["first_divergence"] = locate(before, after, tags=after.tags())
            except Exception as e:  # the locator is a diagnosis aid: its failure must not hide the gate result
                entry["notes"].append(f"first-divergence locator failed: {e}")
        if not gate.get("passed", False):
            if on_fail == "keep":
                entry["status"] = "kept_failed"
                say(f"[{p.name}] gate FAILED, kept (--on-fail keep): {gate.get('message', '')}")
            else:
                entry["status"] = "rolled_back"
                say(f"[{p.name}] gate FAILED, rolled back: {gate.get('message', '')}")
                return {**entry, "_before": before, "_after": before}
    elif entry["status"] == "applied":
        entry["fidelity"] = {"skipped": "--no-verify"}
    return {**entry, "_before": before, "_after": after}


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
