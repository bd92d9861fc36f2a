"""Bench cells for ``rewrite optimize``: the trained proxy at 288x512, per objective target and budget.

    python -m bench.optimize                                   # cpu, mtl, kmb x rel_l2 0.02 / 0.05 / 0.10
    python -m bench.optimize --targets cpu --budgets rel_l2=0.05 --runs 15 --workers 2
    python -m bench.optimize --model path/to/model.xml --reuse-fixtures

Each cell runs ``rewriter.optimize`` with the objective target first (the others follow, so the result is
never predicted slower on any of them), calibrating on natural scikit-image photos (``--calib``) and
splitting other photos into validation / test (``--images``). The bench then measures, on photos ``optimize``
never saw (the bench's EVAL_PHOTOS and the Middlebury ground-truth image): held-out fidelity vs the original
(relL2, AbsRel, δ1), accuracy against ground truth, and the interleaved A/B CPU latency ratio. It prints one
Markdown row per cell and writes every number to ``bench/results/<date>-optimize.json`` after each cell. Speed
figures are measured here, never asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .images import CALIB_PHOTOS, EVAL_PHOTOS, write_folder
from .tables import fmt, md_table

REPO = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "small_trained_ir_288x512"
TARGETS = ("cpu", "mtl", "kmb")
BUDGETS = ("rel_l2=0.02", "rel_l2=0.05", "rel_l2=0.1")
# photos optimize may use, none of them in EVAL_PHOTOS: refit and INT8 calibrate on the natural photos
# (calibrating on grayscale textures left whole-model INT8 at twice the budget); the rest are split into
# validation (4, where the search decides) and test (3, its headline)
SEARCH_PHOTOS = CALIB_PHOTOS
SPLIT_PHOTOS = ("rocket", "coins", "moon", "gravel", "brick", "grass", "page")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.optimize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"fixture name or model path (default {DEFAULT_MODEL})")
    p.add_argument("--targets", default=",".join(TARGETS), help="objective targets, one cell each (comma-separated)")
    p.add_argument("--budgets", nargs="+", default=list(BUDGETS), help="budgets, one cell each")
    p.add_argument("--runs", type=int, default=15, help="A/B runs per side for the measured CPU ratio")
    p.add_argument("--workers", type=int, default=0, help="optimize --workers")
    p.add_argument("--passes", default=None, help="passes searched (default: all)")
    p.add_argument("--work", default=None, help="scratch folder (default: $TMPDIR/midas-bench-optimize)")
    p.add_argument("--out", default=None, help="results JSON (default bench/results/<date>-optimize.json)")
    p.add_argument("--reuse-fixtures", action="store_true", help="use the newest cached build of the fixture")
    return p


def _model_path(name: str, reuse: bool) -> Path:
    if Path(name).suffix in (".onnx", ".xml") and Path(name).exists():
        return Path(name)
    from .run import fixture

    path, note = fixture(name, reuse)
    if note:
        print(f"bench.optimize: {note}", flush=True)
    return path


def run_cell(path: Path, objective: str, budget: str, args: argparse.Namespace, folder: Path, work: Path,
             held: dict, images: Path | None = None) -> dict:
    """One optimize run and its held-out measurements; failures are recorded, not raised."""
    from rewriter import optimize
    from rewriter.model import ModelHandle

    from .measure import fidelity, gt_accuracy, measure_ab, run_outputs

    targets = (objective,) + tuple(t for t in TARGETS if t != objective)
    cell: dict = {"objective": objective, "targets": list(targets), "budget": budget, "error": None}
    out = work / f"opt_{objective}_{budget.replace('=', '')}{'.xml' if path.suffix == '.xml' else '.onnx'}"
    t0 = time.perf_counter()
    try:
        model, rep = optimize(str(path), targets=targets, budget=budget, passes=args.passes, calib=str(folder),
                              images=str(images) if images is not None else None,
                              output=out, report=work / f"{out.stem}.json", workers=args.workers,
                              progress=lambda m: (sys.stderr.write(m), sys.stderr.flush()))
        cell["seconds"] = round(time.perf_counter() - t0, 1)
        cell["predicted_speedup"] = {t: rep.speedup(t) for t in targets}
        cell["validation"] = rep.fidelity.get("validation")
        cell["test"] = rep.fidelity.get("test")
        cell["sites_taken"] = sum(s.selected for s in rep.sites)
        cell["int8"] = rep.int8
        cell["pareto_points"] = len(rep.pareto)
        cell["evaluations"] = rep.search.get("evaluations")
        outs = run_outputs(model, held["eval"].feeds)
        cell["held_out"] = fidelity(held["ref"][:-1], outs[:-1], held["eval"].names[:-1])
        cell["gt"] = {"before": held["gt"], "after": gt_accuracy(held["eval"].gt, outs[-1])}
        cell["measured"] = measure_ab(held["original"], ModelHandle.load(out), args.runs, 3)
    except Exception as e:  # a failed cell must not lose the others: record it and go on
        cell["error"] = f"{type(e).__name__}: {e}"
        cell["traceback"] = traceback.format_exc(limit=8)
    return cell


def _row(c: dict) -> list[str]:
    if c.get("error"):
        return [c["objective"], c["budget"], "error: " + c["error"][:60], "", "", "", "", ""]
    m = c.get("measured") or {}
    ratio = m.get("ratio")
    pred = c.get("predicted_speedup", {})
    held = c.get("held_out", {}).get("mean", {})
    worst = c.get("held_out", {}).get("worst", {})
    test = (c.get("test") or {}).get("metrics", {}).get("mean", {})
    return [c["objective"], c["budget"], " / ".join(f"{t} {fmt(pred.get(t), 3)}x" for t in c["targets"]),
            f"{fmt(1 / ratio, 3)}x" if ratio else "–", f"{fmt(test.get('rel_l2'), 3)}",
            f"{fmt(held.get('rel_l2'), 3)} (worst {fmt(worst.get('rel_l2'), 3)})",
            f"{fmt(held.get('delta1'), 3)}", f"{c.get('sites_taken')} sites, int8 "
            + ("on" if (c.get("int8") or {}).get("enabled") else "off")]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import tempfile

    from rewriter.model import ModelHandle

    from .measure import eval_set, gt_accuracy, run_outputs

    work = Path(args.work or Path(tempfile.gettempdir()) / "midas-bench-optimize")
    work.mkdir(parents=True, exist_ok=True)
    folder = write_folder(work / "calib", SEARCH_PHOTOS)
    images = write_folder(work / "split", SPLIT_PHOTOS)
    path = _model_path(args.model, args.reuse_fixtures)
    original = ModelHandle.load(path)
    ev = eval_set(original, list(EVAL_PHOTOS))
    ref = run_outputs(original, ev.feeds)
    held = {"original": original, "eval": ev, "ref": ref, "gt": gt_accuracy(ev.gt, ref[-1])}
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    out = Path(args.out) if args.out else REPO / "bench" / "results" / f"{stamp}-optimize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "path": str(path), "search_photos": list(SEARCH_PHOTOS),
               "split_photos": list(SPLIT_PHOTOS),
               "held_out_photos": ev.names, "runs": args.runs, "workers": args.workers, "cells": []}
    from .machine import machine_info

    results["machine"] = machine_info(REPO)
    for objective in [t.strip() for t in args.targets.split(",") if t.strip()]:
        for budget in args.budgets:
            print(f"bench.optimize: {objective} {budget} ...", flush=True)
            cell = run_cell(path, objective, budget, args, folder, work, held, images)
            results["cells"].append(cell)
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
            print(md_table(HEADER, [_row(cell)]), flush=True)
    print("\n" + md_table(HEADER, [_row(c) for c in results["cells"]]))
    print(f"\nbench.optimize: results in {out}")
    return 0 if all(not c.get("error") for c in results["cells"]) else 1


HEADER = ("objective", "budget", "predicted speedup", "measured CPU", "test relL2 (search)",
          "held-out relL2", "held-out δ1", "choices")


if __name__ == "__main__":
    sys.exit(main())
