"""The bench: build fixtures, run the matrix of models × pass sets, write JSON, RESULTS.md and scatter PNGs.

    python -m bench [--quick] [--models small288-trained ...] [--sets asym dwpw-r1 ...] [--out bench/results]

Each rewrite runs in a child process (``python -m bench.cell``) so its wall time and peak memory are the
tool's own; the parent then measures fidelity vs the original, accuracy vs ground truth and the interleaved
CPU A/B ratio. A cell that fails is recorded with its error and the run goes on. Results are rewritten after
every cell, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, replace
from pathlib import Path

from .images import CALIB_PHOTOS, EVAL_PHOTOS, GT_NAME, HELDOUT_PHOTOS, write_folder
from .matrix import MODELS, PASS_SETS, QUICK_IMAGES, QUICK_MODELS, QUICK_RUNS, QUICK_SETS, ModelSpec, PassSet, cells

REPO = Path(__file__).resolve().parent.parent
SEED = 0
TARGETS = ("kmb", "mtl", "cpu")
# optimize cells: "opt-<objective>-<rel_l2 budget>", run on the trained models in the full matrix (any model
# when named with --sets); the other two targets follow the objective so the result is never slower on them
OPT_PREFIX = "opt-"
OPT_SETS = tuple(f"opt-{t}-{b}" for t in ("cpu", "mtl", "kmb") for b in ("0.05", "0.1"))


def opt_set(key: str):
    """The PassSet standing for an optimize cell ``opt-<target>-<rel_l2>`` (KeyError naming the key if bad)."""
    from .matrix import PassSet

    parts = key.split("-")
    if len(parts) != 3 or parts[1] not in TARGETS:
        raise KeyError(f"optimize set '{key}': use opt-<{'|'.join(TARGETS)}>-<rel_l2 budget>, e.g. opt-mtl-0.05")
    try:
        float(parts[2])
    except ValueError:
        raise KeyError(f"optimize set '{key}': the budget '{parts[2]}' is not a number") from None
    targets = [parts[1]] + [t for t in TARGETS if t != parts[1]]
    return PassSet(key, "optimize", {"optimize": {"targets": targets, "budget": f"rel_l2={parts[2]}"}},
                   note=f"rewrite optimize --target {' --target '.join(targets)} --budget rel_l2={parts[2]}")


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m bench``."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help=f"subset: models {', '.join(QUICK_MODELS)}, sets {', '.join(QUICK_SETS)}, "
                        f"{QUICK_RUNS} A/B runs (< 10 min)")
    p.add_argument("--models", nargs="+", metavar="M",
                   help=f"model keys ({', '.join(MODELS)}) or any fixture name (default: all keys)")
    p.add_argument("--sets", nargs="+", metavar="S",
                   help=f"pass sets ({', '.join(PASS_SETS)}) and optimize cells (opt-<target>-<rel_l2>, "
                        f"e.g. {OPT_SETS[2]}; the full matrix runs {', '.join(OPT_SETS)} on trained models); "
                        "default: all")
    p.add_argument("--workers", type=int, default=0, help="optimize cells: rewrite optimize --workers N")
    p.add_argument("--out", default=str(REPO / "bench" / "results"), help="results folder (JSON, PNGs)")
    p.add_argument("--md", help="Markdown table path (default: bench/RESULTS.md; --quick: OUT/DATE-quick.md)")
    p.add_argument("--runs", type=int, help="measured A/B runs per side (overrides the per-model budget)")
    p.add_argument("--no-verify", action="store_true", help="rewrite without the per-pass gates (faster)")
    p.add_argument("--work", help="scratch folder for rewritten models and images (default: TMPDIR/midas-bench)")
    p.add_argument("--keep-models", action="store_true", help="keep the rewritten models in the work folder")
    p.add_argument("--reuse-fixtures", action="store_true",
                   help="use the newest cached build of each fixture even if its builder changed (no rebuild)")
    p.add_argument("--render", metavar="JSON", help="only re-render the Markdown and PNGs from a results JSON")
    p.add_argument("--tag", help="suffix for the result file names (default: 'quick' with --quick)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the bench; returns 0 when it completed (cells may have errors: they are in the results)."""
    args = build_parser().parse_args(argv)
    if args.render:
        return render_only(Path(args.render), Path(args.md) if args.md else None)
    t_start = time.perf_counter()
    date = dt.date.today().isoformat()
    tag = args.tag or ("quick" if args.quick else "")
    stem = f"{date}-{tag}" if tag else date
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.gettempdir()) / "midas-bench"
    json_path = out_dir / f"{stem}.json"
    md_path = Path(args.md) if args.md else (out_dir / f"{stem}.md" if args.quick else REPO / "bench" / "RESULTS.md")

    model_keys = args.models or list(QUICK_MODELS if args.quick else MODELS)
    set_keys = args.sets or list(QUICK_SETS if args.quick else PASS_SETS)
    opt_keys = [k for k in set_keys if k.startswith(OPT_PREFIX)]
    if args.sets is None and not args.quick:
        opt_keys = list(OPT_SETS)
    try:
        plan = cells(model_keys, [k for k in set_keys if not k.startswith(OPT_PREFIX)], restrict=args.sets is None)
        from .matrix import model_spec

        plan += [(model_spec(mk), opt_set(k)) for mk in model_keys for k in opt_keys
                 if args.sets is not None or model_spec(mk).weights == "trained"]
        order = [model_spec(k).key for k in model_keys]
        plan.sort(key=lambda ms: order.index(ms[0].key))  # stable: a model's optimize cells after its pass sets
    except KeyError as e:
        print(f"bench: {e.args[0]}", file=sys.stderr)
        return 2
    if args.quick:
        plan = [(replace(m, runs=min(m.runs, QUICK_RUNS), eval_images=min(m.eval_images, QUICK_IMAGES),
                         verify_images=min(m.verify_images, QUICK_IMAGES)), s) for m, s in plan]
    if args.runs:
        plan = [(replace(m, runs=args.runs), s) for m, s in plan]

    from .machine import describe, machine_info

    calib_dir = write_folder(work / "calib", CALIB_PHOTOS)
    results: dict = {
        "bench": {"date": date, "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
                  "quick": args.quick, "subset": bool(args.quick or args.models or args.sets or args.runs),
                  "seed": SEED, "verify": not args.no_verify, "on_fail": "keep",
                  "targets": list(TARGETS), "json": _rel(json_path),
                  "images": {"calib": list(CALIB_PHOTOS), "heldout": list(HELDOUT_PHOTOS), "eval": list(EVAL_PHOTOS),
                             "gt": GT_NAME},
                  "pass_sets": {k: asdict(v) for k, v in PASS_SETS.items()},
                  "started": dt.datetime.now().isoformat(timespec="seconds")},
        "machine": machine_info(REPO), "models": {}, "cells": []}
    print(f"bench: {len(plan)} cells on {describe(results['machine'])}", flush=True)
    print(f"bench: results → {json_path}, {md_path}", flush=True)

    ctx: dict = {}
    for i, (m, s) in enumerate(plan, 1):
        if m.key not in results["models"]:
            _release(ctx)
            ctx = prepare_model(m, work, args.reuse_fixtures)
            results["models"][m.key] = ctx["info"]
        t0 = time.perf_counter()
        cell = run_cell(m, s, ctx, work, calib_dir, verify=not args.no_verify, keep=args.keep_models,
                        workers=args.workers)
        cell["bench_s"] = round(time.perf_counter() - t0, 1)
        results["cells"].append(cell)
        print(f"[{i}/{len(plan)}] {m.key} × {s.key}: {_one_line(cell)}", flush=True)
        if i == len(plan) or plan[i][0].key != m.key:  # the model's last cell: draw its scatter
            _plot(results, m.key, out_dir / f"{stem}-{m.key}.png", md_path)
        results["bench"]["wall_s"] = round(time.perf_counter() - t_start, 1)
        _write(results, json_path, md_path)
    _release(ctx)
    results["bench"]["finished"] = dt.datetime.now().isoformat(timespec="seconds")
    results["bench"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    _write(results, json_path, md_path)
    if not args.keep_models:
        shutil.rmtree(work / "models", ignore_errors=True)
    print(f"bench: done in {results['bench']['wall_s']:.0f} s; wrote {json_path} and {md_path}", flush=True)
    return 0


def render_only(json_path: Path, md_path: Path | None = None) -> int:
    """Redraw the scatter PNGs and rewrite the Markdown of an existing results JSON (no measuring)."""
    results = json.loads(json_path.read_text())
    quick = results.get("bench", {}).get("quick")
    md_path = md_path or (json_path.with_suffix(".md") if quick else REPO / "bench" / "RESULTS.md")
    for key in results.get("models", {}):
        _plot(results, key, json_path.with_name(f"{json_path.stem}-{key}.png"), md_path)
    _write(results, json_path, md_path)
    print(f"bench: re-rendered {md_path} from {json_path}")
    return 0


def prepare_model(m: ModelSpec, work: Path, reuse: bool = False) -> dict:
    """Build the fixture, then the original's outputs on the evaluation images and its GT accuracy."""
    info: dict = {"fixture": m.fixture, "spec": asdict(m)}
    ctx: dict = {"info": info}
    try:
        t0 = time.perf_counter()
        if Path(m.fixture).suffix in (".onnx", ".xml") and Path(m.fixture).exists():
            path = Path(m.fixture)  # a model file given directly: bench the user's own model
        else:
            path, note = fixture(m.fixture, reuse)
            if note:
                info["fixture_note"] = note
                print(f"bench: {m.key}: {note}", flush=True)
        info.update(path=str(path), build_s=round(time.perf_counter() - t0, 1))
        print(f"bench: {m.key}: fixture {m.fixture} ready in {info['build_s']} s", flush=True)
        from rewriter.model import ModelHandle

        from .measure import eval_set, gt_accuracy, model_size_mb, run_outputs

        original = ModelHandle.load(path)
        ev = eval_set(original, list(EVAL_PHOTOS[: m.eval_images]))
        ref = run_outputs(original, ev.feeds)
        info["baseline"] = {"gt": gt_accuracy(ev.gt, ref[-1]), "images": len(ev.feeds), "image_names": ev.names,
                            "size_mb": model_size_mb(path)}
        ctx.update(path=path, original=original, eval=ev, ref=ref)
        # the tool's held-out folder: it splits it into validation (gates) and test (cumulative gate)
        n = heldout_count(m)
        ctx["verify_dir"] = write_folder(work / f"heldout{n}", HELDOUT_PHOTOS[:n])
    except Exception as e:
        info["error"] = f"{type(e).__name__}: {e}"
        info["traceback"] = traceback.format_exc(limit=6)
        print(f"bench: {m.key}: cannot prepare: {info['error']}", flush=True)
    return ctx


def heldout_count(m: ModelSpec) -> int:
    """Photos in the tool's held-out folder: one more than the gate budget, so validation and test both get some."""
    return min(len(HELDOUT_PHOTOS), max(2, m.verify_images + 1))


def fixture(name: str, reuse: bool = False) -> tuple[Path, str | None]:
    """fixture_path(name), or with ``reuse`` the newest cached build of it under any builder key.

    If building fails, the newest cached build is used too; the returned note says which file and why.
    """
    from fixtures import cache_dir, fixture_path

    cached = sorted((p for p in Path(cache_dir()).glob(f"{name}-*") if p.suffix in (".onnx", ".xml")),
                    key=lambda p: p.stat().st_mtime)
    if reuse and cached:
        return cached[-1], f"--reuse-fixtures: newest cached build {cached[-1].name} (builder may have changed since)"
    try:
        return Path(fixture_path(name, log=lambda msg: print(f"bench: fixtures: {msg}", flush=True))), None
    except Exception as e:
        # a builder being edited must not void the bench: an earlier build of the same fixture is still it
        if not cached:
            raise
        return cached[-1], (f"building {name} failed ({type(e).__name__}: {e}); used the newest cached build "
                            f"{cached[-1].name}")


def run_cell(m: ModelSpec, s: PassSet, ctx: dict, work: Path, calib_dir: Path, verify: bool = True,
             keep: bool = False, workers: int = 0) -> dict:
    """Rewrite (or optimize) in a child process, then measure; every failure is recorded in the returned dict."""
    cell: dict = {"model": m.key, "fixture": m.fixture, "pass_set": s.key, "passes": s.passes, "opts": s.opts,
                  "error": None}
    if "path" not in ctx:
        cell["error"] = "model not prepared: " + str(ctx.get("info", {}).get("error"))
        return cell
    cdir = work / "models" / f"{m.key}__{s.key}"
    shutil.rmtree(cdir, ignore_errors=True)
    cdir.mkdir(parents=True)
    suffix = ".xml" if ctx["path"].suffix == ".xml" else ".onnx"
    spec = {"model": str(ctx["path"]), "passes": s.passes, "opts": s.opts, "output": str(cdir / f"out{suffix}"),
            "calib": str(calib_dir), "images": str(ctx["verify_dir"]), "seed": SEED, "verify": verify,
            "on_fail": "keep", "targets": list(TARGETS)}
    if "optimize" in s.opts:  # an optimize cell: same images, same measuring, the search instead of fixed passes
        spec["optimize"] = {**s.opts["optimize"], "workers": workers}
    child = run_child(spec, cdir, m.timeout_s * (4 if "optimize" in spec else 1))
    cell["tool"] = {k: child.get(k) for k in ("rewrite_s", "import_s", "rss_before_mb", "peak_rss_mb", "child_s")}
    report = child.get("report")
    if child.get("error"):
        cell["error"] = child["error"]
        cell["traceback"] = child.get("traceback")
    if report and "optimize" in spec:
        from .measure import predicted

        cell["predicted"] = predicted(report)
        cell["optimize"] = optimize_summary(report)
        cell["sites_changed"] = cell["optimize"]["sites_taken"]
        test = (report.get("fidelity") or {}).get("test") or {}
        cell["cumulative"] = {"passed": test.get("passed"), "skipped": test.get("skipped"), "dropped": [],
                              "message": "optimize: the final model vs the original on the test split",
                              "mean": (test.get("metrics") or {}).get("mean")}
    elif report:
        from .measure import per_pass, predicted

        cell["passes_detail"] = per_pass(report)
        cell["predicted"] = predicted(report)
        cell["op_counts_changed"] = {k: v for k, v in (report.get("op_counts") or {}).items() if v[0] != v[1]}
        cell["report_notes"] = (report.get("notes") or [])[:8]
        cell["sites_changed"] = sum(p.get("sites_changed") or 0 for p in report.get("passes", []))
    out = Path(report.get("output") or "") if report else None
    if cell["error"] or not out or not out.exists():
        cell["error"] = cell["error"] or "rewrite wrote no model"
        if not keep:
            shutil.rmtree(cdir, ignore_errors=True)
        return cell
    if "optimize" not in spec:
        cell["cumulative"] = _cumulative_summary(report.get("cumulative"))
    cell["tool_inputs"] = report.get("inputs")
    try:
        measure_cell(cell, m, ctx, out, calib_dir)
    except Exception as e:  # a measuring failure is recorded, the rewrite figures stay
        cell["error"] = f"measuring failed: {type(e).__name__}: {e}"
        cell["traceback"] = traceback.format_exc(limit=6)
    if not keep:
        shutil.rmtree(cdir, ignore_errors=True)
    return cell


def optimize_summary(report: dict) -> dict:
    """What an optimize report chose: sites taken per pass, INT8, evaluations, search seconds, the search log."""
    taken = [s for s in report.get("sites") or [] if s.get("selected")]
    per_pass: dict[str, int] = {}
    for s in taken:
        per_pass[s.get("pass_name", "?")] = per_pass.get(s.get("pass_name", "?"), 0) + 1
    int8 = report.get("int8") or {}
    search = report.get("search") or {}
    return {"sites_taken": len(taken), "per_pass": per_pass, "int8": bool(int8.get("enabled")),
            "int8_float_ops": len(int8.get("float_ops") or []), "int8_setting": int8.get("setting"),
            "evaluations": search.get("evaluations"), "search_s": search.get("seconds"),
            "log": (search.get("log") or [])[:40],
            "validation": ((report.get("fidelity") or {}).get("validation") or {}).get("metrics")}


def _cumulative_summary(cum: dict | None) -> dict | None:
    if not cum:
        return None
    return {"passed": cum.get("passed"), "skipped": cum.get("skipped"), "message": cum.get("message"),
            "dropped": [d.get("pass") for d in cum.get("dropped") or []],
            "mean": (cum.get("metrics") or {}).get("mean")}


def measure_cell(cell: dict, m: ModelSpec, ctx: dict, out: Path, calib_dir: Path | None = None) -> None:
    """Fidelity vs the original (bench held-out photos, and the tool's validation and test splits), GT
    accuracy and the interleaved CPU A/B ratio of one rewritten model."""
    from rewriter.model import ModelHandle

    from .measure import fidelity, gt_accuracy, measure_ab, model_size_mb, run_outputs

    after = ModelHandle.load(out)
    ev = ctx["eval"]
    outs = run_outputs(after, ev.feeds)
    cell["fidelity"] = fidelity(ctx["ref"], outs, ev.names)
    if calib_dir is not None:
        cell["split_fidelity"] = split_fidelity(ctx, after, calib_dir)
    cell["gt"] = {"before": ctx["info"]["baseline"]["gt"], "after": gt_accuracy(ev.gt, outs[-1])}
    cell["output_mb"] = model_size_mb(out)
    res = measure_ab(ctx["original"], after, runs=m.runs, warmup=m.warmup)
    cell["measured"] = {k: v for k, v in res.items() if k not in ("before_all_ms", "after_all_ms")}


def split_fidelity(ctx: dict, after, calib_dir: Path) -> dict:
    """Final model vs the original on the tool's calibration (fitted on), validation and test splits (the same
    split the tool made)."""
    from rewriter.inputs import split_inputs

    from .measure import fidelity, run_outputs

    if "splits" not in ctx:
        sp = split_inputs(ctx["original"], str(calib_dir), str(ctx["verify_dir"]), seed=SEED)
        ctx["splits"] = {k: (sp.get(k), run_outputs(ctx["original"], sp.get(k).feeds))
                         for k in ("calibration", "validation", "test")}
    res = {}
    for k, (inputs, ref) in ctx["splits"].items():
        res[k] = {**fidelity(ref, run_outputs(after, inputs.feeds), inputs.names), "names": list(inputs.names)}
    return res


def run_child(spec: dict, cdir: Path, timeout_s: int) -> dict:
    """``python -m bench.cell`` on ``spec``; returns its result dict, or one with the error (timeout, crash)."""
    spec_path, res_path, log_path = cdir / "spec.json", cdir / "result.json", cdir / "child.log"
    spec_path.write_text(json.dumps(spec, indent=1))
    t0 = time.perf_counter()
    try:
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, "-m", "bench.cell", str(spec_path), str(res_path)], cwd=REPO,
                                  stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        return {"error": f"rewrite timed out after {timeout_s} s", "child_s": round(time.perf_counter() - t0, 1)}
    child_s = round(time.perf_counter() - t0, 1)
    if not res_path.exists():
        tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
        return {"error": f"rewrite process exited with code {rc} and no result (killed? out of memory?): "
                         f"{tail.strip().splitlines()[-1] if tail.strip() else ''}", "child_s": child_s,
                "traceback": tail}
    res = json.loads(res_path.read_text())
    res["child_s"] = child_s
    return res


def _release(ctx: dict) -> None:
    ctx.clear()  # drop the previous model's outputs and handle before loading the next (midasnet is large)


def _one_line(cell: dict) -> str:
    from .tables import fmt, measured_speedup, speedup

    if cell.get("error") and not cell.get("fidelity"):
        return "ERROR " + str(cell["error"]).splitlines()[0][:200]
    mtl = (cell.get("predicted") or {}).get("mtl") or {}
    fid = ((cell.get("fidelity") or {}).get("mean") or {}).get("rel_l2")
    tool = cell.get("tool") or {}
    return (f"sites {cell.get('sites_changed')}, mtl pred {fmt(speedup(mtl.get('before_ms'), mtl.get('after_ms')))}×, "
            f"cpu meas {fmt(measured_speedup(cell.get('measured')))}×, relL2 {fmt(fid)}, "
            f"tool {fmt(tool.get('rewrite_s'))} s / {fmt(tool.get('peak_rss_mb'), 4)} MB, "
            f"cell {cell.get('bench_s', '?')} s" + (f"; {cell['error']}" if cell.get("error") else ""))


def _plot(results: dict, key: str, png: Path, md_path: Path) -> None:
    from .plot import scatter

    info = results["models"][key]
    try:
        out = scatter(key, [c for c in results["cells"] if c["model"] == key], png,
                      f"{key} ({info.get('fixture')}): fidelity vs latency — right and down is better")
        if out is not None:
            info["plot"] = _rel(out, md_path.parent)
    except Exception as e:  # a plotting problem must not lose the measured results
        info["plot_error"] = f"{type(e).__name__}: {e}"


def _write(results: dict, json_path: Path, md_path: Path) -> None:
    """JSON and Markdown after every cell (atomic renames: a reader never sees half a file)."""
    from .tables import render_markdown

    for path, text in ((json_path, json.dumps(results, indent=1, default=str)), (md_path, render_markdown(results))):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)


def _rel(p: Path, base: Path = REPO) -> str:
    try:
        return str(Path(p).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(p)
