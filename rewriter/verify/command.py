"""``rewrite verify BEFORE AFTER`` and its library form ``verify_models``: gate, locate, ground truth, render."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import RewriteError
from ..jsonable import jsonable
from . import locator
from .comparison import (
    RUNTIME_NAMES,
    as_handle,
    check_compatible,
    compare_runs,
    describe_inputs,
    pick_output,
    resolve_runtimes,
    verification_inputs,
)
from .gates import DEFAULT_TOL, gate, metrics_block, parse_budget, short
from .groundtruth import ground_truth


def verify_models(before: Any, after: Any, *, images: str | Path | None = None, runtime: str = "ov",
                  tol: float | None = None, budget: dict | str | None = None, locate: bool = False,
                  gt: list[str] | None = None, pictures: str | Path | None = None, seed: int = 0,
                  count: int | None = None) -> dict:
    """Compare any two models on the same inputs (the library form of ``rewrite verify``).

    Gate: float tolerance (``tol``, default ``DEFAULT_TOL``) unless a ``budget`` is given; both when both
    are given (both must hold). Returns the gate dict of ``check_pass`` plus ``"before"``, ``"after"``,
    ``"first_divergence"`` (when ``locate``), ``"ground_truth"`` (``gt``), ``"pictures"``
    (``pictures`` folder) and ``"exit_code"`` (0 match, 1 differ).
    """
    t0 = time.perf_counter()
    b, a = as_handle(before), as_handle(after)
    check_compatible(b, a)
    budget_d = parse_budget(budget) if budget else {}
    use_tol = tol is not None or not budget_d
    inputs = verification_inputs(b, images, exact=use_tol, seed=seed, count=count)
    runtimes, notes = resolve_runtimes(runtime, b, a)
    notes += inputs.notes
    results, arrays = {}, None
    for rt in runtimes:
        results[rt], rb, ra = compare_runs(b, a, inputs, rt)
        arrays = arrays or (rb, ra)  # pictures show the first runtime's outputs
    gates = []
    if use_tol:
        gates.append(gate(results, True, inputs.is_images, None, tol, notes))
    if budget_d:
        gates.append(gate(results, False, inputs.is_images, budget_d, None, notes))
    report: dict[str, Any] = {"before": b.name, "after": a.name, **gates[0]}
    if len(gates) > 1:
        report.update(passed=all(g["passed"] for g in gates), gate="tolerance+budget",
                      message="; ".join(g["message"] for g in gates),
                      needed={k: v for g in gates for k, v in g["needed"].items()}, budget=gates[1]["budget"])
    report.update(metrics=metrics_block(results, runtimes[0]), inputs=describe_inputs(inputs, seed),
                  images=list(inputs.names), runtime="+".join(runtimes), notes=notes)
    if len(runtimes) > 1:
        report["runtimes"] = {rt: {"mean": r["mean"], "worst": r["worst"]} for rt, r in results.items()}
    report["first_divergence"] = None
    if locate:
        limit = DEFAULT_TOL if tol is None else tol
        if max(r["worst"]["rel_max"] for r in results.values()) <= limit:
            notes.append("--locate: the outputs match to float tolerance; nothing to locate")
        else:
            report["first_divergence"] = locator.locate(b, a, inputs, tol=tol, runtime=runtimes[0], seed=seed)
    if gt:
        report["ground_truth"] = ground_truth(b, a, gt, runtimes[0])
    if pictures is not None:
        from ..pictures import save_worst_pictures

        rb, ra = arrays
        key = "delta1" if inputs.is_images else "rel_l2"
        worst_name = results[runtimes[0]]["worst_image"].get(key) or inputs.names[0]
        worst_name = worst_name.split(" (")[0]
        i = inputs.names.index(worst_name)
        nb, na = check_compatible(b, a)[0]
        report["pictures"] = save_worst_pictures(pick_output(rb[i], nb, 0), pick_output(ra[i], na, 0), pictures,
                                                 image=worst_name)
    report["exit_code"] = 0 if report["passed"] else 1
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def render_verify(rep: dict, quiet: bool = False) -> str:
    """Plain-text summary of a ``verify_models`` report."""
    verdict = "MATCH" if rep["passed"] else "DIFFER"
    lines = [f"{verdict}: {rep['message']}"]
    if quiet:
        return lines[0]
    where = " + ".join(RUNTIME_NAMES.get(r, r) for r in rep["runtime"].split("+"))
    lines.insert(0, f"verify {rep['before']} vs {rep['after']}: {rep['inputs']}, {where}")
    m, w = rep["metrics"]["mean"], rep["metrics"]["worst"]
    row = (f"  mean: rel L2 {short(m['rel_l2'])}, cosine {m['cosine']:.6f}, PSNR {m['psnr']:.1f} dB, "
           f"max error {short(m['rel_max'])} of scale")
    if "delta1" in m and any(not n.startswith("random") for n in rep.get("images", [])):
        row += f", AbsRel {short(m['absrel'])}, delta1 {m['delta1']:.4f}"
    lines.append(row)
    worst_rel = rep["metrics"]["worst_image"].get("rel_l2", "?")
    lines.append(f"  worst input: {worst_rel} (rel L2 {short(w['rel_l2'])}, max error {short(w['rel_max'])})")
    fd = rep.get("first_divergence")
    if fd:
        by = f", made by pass {fd['pass']}" if fd.get("pass") else ""
        lines.append(f"  first divergence: {fd['node']} ({fd['op']}{by}), error {short(fd['error'])} "
                     f"of scale at tensor {fd['tensor']}")
    gt = rep.get("ground_truth")
    if gt:
        lines.append(f"  ground truth: before AbsRel {short(gt['before']['absrel'])} delta1 "
                     f"{gt['before']['delta1']:.4f}; after AbsRel {short(gt['after']['absrel'])} delta1 "
                     f"{gt['after']['delta1']:.4f}")
    if rep.get("pictures"):
        lines.append(f"  pictures: {', '.join(str(v) for k, v in rep['pictures'].items() if k.endswith('png'))}")
    lines += [f"  note: {n}" for n in rep.get("notes", [])]
    return "\n".join(lines)


def run_verify(args: argparse.Namespace) -> int:
    """``rewrite verify`` (arguments: ``rewriter.cli.add_verify_arguments``): 0 match, 1 differ beyond
    tolerance/budget, 2 bad input."""
    try:
        rep = verify_models(args.before, args.after, images=getattr(args, "images", None),
                            runtime=getattr(args, "check_runtime", "ov") or "ov", tol=getattr(args, "tol", None),
                            budget=getattr(args, "budget", None),
                            locate=bool(getattr(args, "locate", False)), gt=getattr(args, "gt", None),
                            pictures=getattr(args, "pictures", None), seed=getattr(args, "seed", 0) or 0,
                            count=getattr(args, "count", None))
    except RewriteError as e:
        print(f"rewrite verify: error: {e}", file=sys.stderr)
        return e.exit_code
    print(render_verify(rep, quiet=bool(getattr(args, "quiet", False))))
    if getattr(args, "report", None):
        from ..report import write_json

        try:
            write_json(jsonable(rep), args.report)
        except RewriteError as e:
            print(f"rewrite verify: error: {e}", file=sys.stderr)
            return 2
    return rep["exit_code"]
