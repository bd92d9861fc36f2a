"""`rewrite` command line.

    rewrite --passes asym_interp,dwpw MODEL [-o OUT] [--target kmb|mtl|cpu ...] [--report r.json]
    rewrite --explain --passes P MODEL        dry run: every candidate site and why; writes nothing
    rewrite --list-passes                     names, exactness, formats, options
    rewrite verify BEFORE AFTER [--locate]    numerical comparison of any two models
    rewrite diff BEFORE AFTER                 structural diff of any two models
    rewrite cost MODEL [--target T] [--alongside OTHER]   predicted fps, ms per engine, per-layer table
    rewrite optimize MODEL --target mtl       fastest model within a fidelity budget, site by site

Exit codes: 0 success (rolled-back passes are listed in the report), 1 a verification gate failed under
--on-fail stop or `verify` found a difference, 2 bad usage or bad input, 3 internal error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import GateFailed, RewriteError

if TYPE_CHECKING:
    from .results import RewriteReport

EPILOG = """\
examples:
  rewrite --passes asym_interp,dwpw,int8 model.onnx --target mtl --report report.json
  rewrite --explain --passes dwpw --opt dwpw.rank=2 model.xml
  rewrite --passes asym_interp model.onnx --to ir -o model.asym.xml --measure
  rewrite verify model.onnx model.rewritten.onnx --locate
  rewrite diff model.onnx model.rewritten.onnx --html diff.html
  rewrite cost model.onnx --target mtl --precision int8 --alongside other.xml --html cost.html

exit codes: 0 ok; 1 gate failed with --on-fail stop (nothing written) or verify found a difference;
            2 bad usage or bad input; 3 internal error
"""


def add_alongside_arguments(p: argparse.ArgumentParser) -> None:
    """``--alongside OTHER`` / ``--alongside-ms X``, shared by ``rewrite``, ``rewrite cost`` and ``optimize``."""
    p.add_argument("--alongside", action="append", default=[], metavar="OTHER",
                   help="another model sharing the NPU frame (.onnx/.xml): report ours + others vs 16.67 ms "
                        "(repeatable)")
    p.add_argument("--alongside-ms", type=float, metavar="X", help="milliseconds other workloads take per frame")


def check_alongside_arguments(args: argparse.Namespace) -> None:
    """Refuse a missing ``--alongside`` file or a negative ``--alongside-ms`` before any model is read."""
    for other in args.alongside:
        if not Path(other).exists():
            raise RewriteError(f"--alongside {other}: no such file")
    if args.alongside_ms is not None and not args.alongside_ms >= 0:
        raise RewriteError(f"--alongside-ms {args.alongside_ms}: must be a number >= 0")


def add_input_shape_argument(p: argparse.ArgumentParser) -> None:
    """``--input-shape``, shared by ``rewrite``, ``rewrite cost`` and ``optimize``; every handler parses it with the
    one parser, ``rewriter.graph.parse_input_shape`` (one error format, checked against the model's inputs)."""
    p.add_argument("--input-shape", metavar="SHAPE",
                   help="pin dynamic input dims for shapes and costs, e.g. 1,3,288,512 (or NAME:1,3,288,512)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewrite", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Rewrite MiDaS ONNX / OpenVINO IR graphs for Intel NPUs; verify the output and report "
                    "predicted (kmb, mtl, cpu) and measured (CPU) latency.\n"
                    "Subcommands: `rewrite verify BEFORE AFTER`, `rewrite diff BEFORE AFTER`, "
                    "`rewrite optimize MODEL` (see their --help).")
    p.add_argument("model", nargs="?", help="input model: .onnx or OpenVINO .xml (with its .bin)")
    p.add_argument("--passes", help="comma-separated passes to apply in order, e.g. asym_interp,dwpw,int8")
    p.add_argument("--list-passes", action="store_true", help="list passes with exactness, formats, options")
    p.add_argument("--explain", action="store_true",
                   help="dry run: list every candidate site and why it would or would not change")
    p.add_argument("-o", "--output", help="output path (default: NAME.rewritten.onnx / .xml beside the input)")
    p.add_argument("--to", choices=("onnx", "ir"), help="output format (default: the input's; onnx→ir allowed)")
    p.add_argument("--compress-to-fp16", action="store_true",
                   help="IR output: store weights as FP16 (default keeps FP32)")
    p.add_argument("--opt", action="append", default=[], metavar="PASS.KEY=VALUE",
                   help="pass option, e.g. --opt dwpw.rank=2 (repeatable; see --list-passes)")
    p.add_argument("--target", action="append", choices=("kmb", "mtl", "cpu"),
                   help="predicted-latency target (repeatable; default: all three)")
    p.add_argument("--calib", metavar="DIR",
                   help="folder of images for calibration/refit (default: scikit-image photos); given alone, "
                        "it is split by whole image into calibration, validation (gates) and test (headline)")
    p.add_argument("--images", metavar="DIR",
                   help="folder of held-out images, split into validation (per-pass gates) and test (final "
                        "model vs the original); never used for fitting")
    p.add_argument("--allow-overlap", action="store_true",
                   help="with too few images, let calibration, validation and test share images (the report "
                        "says so in its headline)")
    p.add_argument("--no-verify", action="store_true", help="skip the numerical check after each pass")
    p.add_argument("--on-fail", choices=("rollback", "stop", "keep"), default="rollback",
                   help="when a pass fails its gate: roll it back and go on (default), stop with exit 1, "
                        "or keep it and report")
    p.add_argument("--no-locate", action="store_true",
                   help="do not search for the first divergent node when a gate fails (saves time)")
    p.add_argument("--budget", help="fidelity budget for approximate passes and the final model, e.g. "
                                    "delta1=0.98,absrel=0.03 (keys: delta1, absrel, rel_l2, psnr, cosine, rel_max, "
                                    "max_abs; prefix worst_ for the worst image; default delta1=0.98,absrel=0.03 "
                                    "on images)")
    p.add_argument("--tol", type=float,
                   help="float tolerance for exact passes: max abs error over max(range, peak) of the output "
                        "(default 1e-4)")
    p.add_argument("--check-runtime", choices=("ov", "ort", "both"), default="ov",
                   help="runtime for verification (ort: onnxruntime, ONNX only)")
    p.add_argument("--measure", action="store_true", help="measure CPU latency before/after (interleaved A/B)")
    p.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    add_input_shape_argument(p)
    add_alongside_arguments(p)
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    p.add_argument("--md", metavar="FILE.md", help="write a Markdown report")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--json", action="store_true", help="with --list-passes/--explain: print JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the output path")
    p.add_argument("-v", "--verbose", action="store_true", help="more detail (per-site tables, tracebacks)")
    return p


def add_cost_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``rewrite cost MODEL`` (handler: ``rewriter.cost.command.run_cost``)."""
    from .cost.command import TARGETS

    p.add_argument("model", help="model to cost: .onnx or OpenVINO .xml (with its .bin)")
    p.add_argument("--target", action="append", choices=TARGETS, help="target (repeatable; default: all three)")
    p.add_argument("--precision", choices=("fp16", "int8"),
                   help="cost every layer at this precision (default: as stored; FP32 runs as FP16 on the NPU)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report (with the picture)")
    p.add_argument("--svg", metavar="FILE.svg", help="write the picture of where the time goes")
    add_alongside_arguments(p)
    add_input_shape_argument(p)
    p.add_argument("--top", type=int, default=10, help="layers printed per target (default 10)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rewrite verify BEFORE AFTER`` (handler: ``rewriter.verify.run_verify``)."""
    from .verify import BUDGET_METRICS, DEFAULT_TOL

    parser.description = ("Run two models on the same inputs and compare their outputs. Exit 0 when they "
                          "match, 1 when they differ beyond the tolerance/budget, 2 on bad input.")
    parser.add_argument("before", help="reference model (.onnx or OpenVINO .xml)")
    parser.add_argument("after", help="model to check against it (same input names and shapes)")
    parser.add_argument("--locate", action="store_true",
                        help="name the first node whose output diverges (tensors both graphs share)")
    parser.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    parser.add_argument("--images", metavar="DIR", help="folder of images (default: scikit-image photos)")
    parser.add_argument("--count", type=int, metavar="N", help="use at most N images")
    parser.add_argument("--check-runtime", choices=("ov", "ort", "both"), default="ov",
                        help="runtime: OpenVINO CPU (default), onnxruntime (ONNX only) or both")
    parser.add_argument("--budget", help="fidelity budget instead of float tolerance, e.g. "
                                         f"delta1=0.98,absrel=0.03 (keys: {', '.join(BUDGET_METRICS)}, "
                                         "prefix worst_ for the worst image)")
    parser.add_argument("--tol", type=float, help="max error relative to the output scale, max(range, peak) "
                                                  f"(default {DEFAULT_TOL:g})")
    parser.add_argument("--gt", action="append", metavar="IMAGE:DISPARITY",
                        help="ground truth pair for absolute accuracy (repeatable); 'motorcycle' uses the "
                             "Middlebury pair shipped with scikit-image")
    parser.add_argument("--pictures", metavar="DIR", help="write before/after depth and |error| PNGs of the "
                                                          "worst image here")
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")


def add_diff_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rewrite diff BEFORE AFTER`` (handler: ``rewriter.diff.run_diff``)."""
    parser.description = ("Structural diff of two models (ONNX or OpenVINO IR, any mix): op counts, nodes "
                          "added/removed/changed with attribute changes, weight shapes, parameters, MACs, "
                          "pass tags; optionally output fidelity and predicted latency change.")
    parser.add_argument("before", help="the model before: .onnx or OpenVINO .xml")
    parser.add_argument("after", help="the model after: .onnx or OpenVINO .xml")
    parser.add_argument("--report", metavar="FILE.json", help="write the diff as JSON")
    parser.add_argument("--md", metavar="FILE.md", help="write a Markdown report")
    parser.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--fidelity", action="store_true", help="also run both models and compare outputs")
    parser.add_argument("--target", action="append", choices=("kmb", "mtl", "cpu"),
                        help="predict per-layer latency change for this target (repeatable)")
    parser.add_argument("--images", metavar="DIR", help="images for --fidelity (default: scikit-image photos)")
    parser.add_argument("--pictures", metavar="DIR",
                        help="with --fidelity: keep the worst input's depth/error PNGs here (the HTML report "
                             "embeds them either way)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every op count and matched rename")


def _sub_parser(name: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"rewrite {name}")
    if name == "verify":
        add_verify_arguments(p)
    elif name == "cost":
        add_cost_arguments(p)
    else:
        add_diff_arguments(p)
    return p


OPTIMIZE_EPILOG = """\
examples:
  rewrite optimize model.onnx --target mtl --budget rel_l2=0.05 --report opt.json --html opt.html
  rewrite optimize model.xml --target cpu --measure --workers 2
  rewrite optimize model.xml --target kmb --target mtl --ray auto

The first --target is the objective (predicted latency minimised on it); the result is never predicted
slower than the input on any --target. exit codes: 0 ok; 2 bad usage or input; 3 internal error
"""


def optimize_parser() -> argparse.ArgumentParser:
    """The ``rewrite optimize`` parser (its handler: ``rewriter.optimizer.cli.run_optimize``)."""
    p = argparse.ArgumentParser(
        prog="rewrite optimize", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=OPTIMIZE_EPILOG,
        description="Search the passes' per-site choices for the fastest model within a fidelity budget "
                    "(vs the original, on held-out validation images; headline on the test split).")
    p.add_argument("model", help="input model: .onnx or OpenVINO .xml (with its .bin)")
    p.add_argument("--target", action="append", choices=("kmb", "mtl", "cpu"),
                   help="latency target (repeatable); the first is the objective (default: mtl)")
    p.add_argument("--budget", help="fidelity budget vs the original, e.g. rel_l2=0.05 or delta1=0.98,absrel=0.03 "
                                    "(keys: delta1, absrel, rel_l2, psnr, cosine; worst_ prefix for the worst image)")
    p.add_argument("--passes", help="passes searched (default: resize_commute,asym_interp,interp_deconv,dwpw,int8; "
                   "resize_commute is exact and applied up front)")
    p.add_argument("--calib", metavar="DIR", help="image folder (split into calibration/validation/test)")
    p.add_argument("--images", metavar="DIR", help="image folder for validation and test")
    p.add_argument("-o", "--output", help="output path (default: NAME.optimized.onnx / .xml beside the input)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    p.add_argument("--md", metavar="FILE.md", help="write a Markdown report")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report (headline, depth "
                                                       "pictures, Pareto plot)")
    p.add_argument("--workers", type=int, default=0, help="evaluate candidates in N local processes")
    p.add_argument("--ray", metavar="ADDRESS", help="evaluate candidates on a Ray cluster (e.g. auto)")
    p.add_argument("--measure", action="store_true",
                   help="measure CPU latency before/after (interleaved A/B); a measured slowdown returns the input")
    p.add_argument("--seed", type=int, default=0, help="seed for the splits and random inputs (default 0)")
    p.add_argument("--effort", choices=("auto", "quick", "full"), default="auto",
                   help="full: NNCF settings by coordinate descent, 8 keep-in-float groups, 3 dwpw ranks; quick: "
                        "NNCF's defaults, 4 groups, rank 1; auto (default): quick above 128 MiB of weights")
    p.add_argument("--objective", choices=("latency", "fit-frame"), default="latency",
                   help="latency: fastest within budget; fit-frame: least fidelity cost whose first-target latency "
                        "plus --alongside fits the 16.67 ms frame")
    add_input_shape_argument(p)
    add_alongside_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the output path")
    p.add_argument("-v", "--verbose", action="store_true", help="every candidate site in the table")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    try:
        if argv and argv[0] == "optimize":
            from .optimizer.cli import run_optimize

            return run_optimize(optimize_parser().parse_args(argv[1:]))
        if argv and argv[0] in ("verify", "diff", "cost"):
            args = _sub_parser(argv[0]).parse_args(argv[1:])
            if argv[0] == "cost":
                from .cost.command import run_cost

                return run_cost(args)
            if argv[0] == "verify":
                from .verify import run_verify

                return run_verify(args)
            from .diff import run_diff

            return run_diff(args)
        return _main_rewrite(build_parser().parse_args(argv))
    except RewriteError as e:
        print(f"rewrite: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rewrite: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rewrite cost m.onnx | head`: the reader left; stop quietly, as cat does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as e:  # last resort: one line, never a traceback unless -v
        if verbose:
            raise
        print(f"rewrite: internal error: {type(e).__name__}: {e} (rerun with -v for details)", file=sys.stderr)
        return 3


def _list_passes(as_json: bool) -> int:
    from .passbase import load_passes

    descs = [cls().describe() for cls in load_passes().values()]
    if as_json:
        print(json.dumps(descs, indent=2))
        return 0
    for d in descs:
        kind = "exact" if d["exact"] else "approximate"
        extra = ", must be last" if d["quantizes"] else ""
        print(f"{d['name']:<14} {kind:<11} formats: {'/'.join(d['formats'])}{extra}")
        print(f"    {d['description']}")
        for k, o in d["options"].items():
            choices = f" [{'|'.join(map(str, o['choices']))}]" if o.get("choices") else ""
            print(f"    --opt {d['name']}.{k}={o['default']!r}{choices}  {o['help']}")
    return 0


def _main_rewrite(args: argparse.Namespace) -> int:
    if args.list_passes:
        return _list_passes(args.json)
    if not args.model:
        raise RewriteError("no input model given (rewrite --help)")
    if not args.passes:
        raise RewriteError("no --passes given (see rewrite --list-passes)")
    from .passbase import parse_opts

    opts = parse_opts(args.opt)
    targets = tuple(dict.fromkeys(args.target or ("kmb", "mtl", "cpu")))
    if args.explain:
        from .manager import explain

        rep = explain(args.model, args.passes, opts=opts, calib=args.calib, targets=targets, seed=args.seed,
                      input_shape=args.input_shape)
        print(json.dumps(rep, indent=2) if args.json else _render_explain(rep))
        return 0

    from .manager import rewrite
    from .preflight import preflight

    src = Path(args.model)
    # every refusable fault (model, weights, output paths, passes, options) is refused before any pass runs
    pre = preflight(src, args.passes, opts=opts, output=args.output, to=args.to, default_output=True,
                    reports=(args.report, args.md, args.html), targets=targets, budget=args.budget,
                    calib=args.calib, images=args.images)
    handle, passes, out = pre.handle, pre.passes, pre.output
    from .graph import parse_input_shape

    shape = parse_input_shape(args.input_shape, handle)  # a bad --input-shape is refused before any pass
    check_alongside_arguments(args)  # fail before the passes run, not after
    code = 0
    from contextlib import ExitStack

    from .progress import RunProgress, nncf_into, steps_for

    mode = "quiet" if args.quiet else ("bar" if sys.stderr.isatty() else ("lines" if args.verbose else "quiet"))
    say = RunProgress(steps_for(len(passes), not args.no_verify, args.measure), mode)
    shown = ExitStack()  # a bar on a TTY; NNCF's log lines go through it; closed before the report prints
    shown.enter_context(say)
    if any(p.quantizes for p in passes):  # importing NNCF costs ~5 s and ~200 MB: only when a pass uses it
        shown.enter_context(nncf_into(say, args.quiet))
    try:
        _, report = rewrite(handle, passes, output=out, to=args.to, calib=args.calib,
                            images=args.images, targets=targets, verify=not args.no_verify,
                            on_fail=args.on_fail, budget=args.budget, tol=args.tol,
                            check_runtime=args.check_runtime, measure=args.measure, seed=args.seed,
                            compress_to_fp16=args.compress_to_fp16, locate=not args.no_locate,
                            allow_overlap=args.allow_overlap,
                            alongside=args.alongside, alongside_ms=args.alongside_ms,
                            verbosity=-1 if args.quiet else int(args.verbose), progress=say,
                            input_shape=shape, checked=pre)
        report["input"] = str(src)
    except GateFailed as e:
        from .results import RewriteReport

        report = e.report if isinstance(e.report, RewriteReport) else RewriteReport(input=str(src))
        report.input = str(src)
        print(f"rewrite: {e}", file=sys.stderr)
        code = 1
    finally:
        shown.close()
    _write_reports(report, args, original=handle)
    if not args.quiet:
        from .report import render_text

        print(render_text(report, verbose=args.verbose))
    elif report.get("output"):
        print(report["output"])
    return code


def _write_reports(report: RewriteReport, args: argparse.Namespace, original: object = None) -> None:
    from .report import write_html, write_json, write_markdown

    if args.report:
        write_json(report, args.report)
    if args.md:
        write_markdown(report, args.md)
    if args.html:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="rewrite-pictures-") as tmp:  # the HTML embeds them
            report.pictures = _test_split_pictures(report, args, original, tmp)
            write_html(report, args.html)
        report.pictures = []  # their files are gone with the folder


def _test_split_pictures(report: RewriteReport, args: argparse.Namespace, original: object, folder: str) -> list[dict]:
    """Depth before | after | |error| of the worst and a typical test-split image, for the HTML report only."""
    if original is None or not report.get("output") or args.no_verify:
        return []
    from .errors import RewriteError as _RE
    from .inputs import split_inputs
    from .model import ModelHandle
    from .pictures import comparison_pictures

    try:
        test = split_inputs(original, args.calib, args.images, seed=args.seed,
                            allow_overlap=args.allow_overlap).test
        return comparison_pictures(original, ModelHandle.load(report["output"]), test.feeds, test.names, folder)
    except (_RE, ValueError, RuntimeError, OSError) as e:  # a courtesy: the report is still written without them
        report.notes.append(f"no depth pictures: {e}")
        return []


def _render_explain(rep: dict) -> str:
    lines = [f"explain: {rep['input']} ({rep['format']}) — dry run, nothing written"]
    for p in rep["passes"]:
        kind = "exact" if p["exact"] else "approximate"
        lines.append(f"\n{p['name']} ({kind}): {p['sites_to_change']} of {len(p['sites'])} candidate site(s) "
                     "would change")
        if not p["sites"]:
            lines.append("  (no candidate sites)")
        for s in p["sites"]:
            engines = _render_engines(s["details"])
            details = ", ".join(f"{k}={v}" for k, v in s["details"].items()
                                if k not in ("engine_before", "engine_after"))
            choices = "|".join(s.get("choices", []))
            lines.append(f"  {s['node']:<40} {s['op']:<10} {s.get('choice', ''):<11} {s.get('reason', s['decision'])}"
                         f"  (choices: {choices})" + (f"  [{details}]" if details else "")
                         + (f"\n  {'':<40} engine: {engines}" if engines else ""))
    return "\n".join(lines)


def _render_engines(details: dict) -> str:
    """``kmb shave→dpu, mtl shave→dpu``: where a resize site lands before and after, per target."""
    before, after = details.get("engine_before") or {}, details.get("engine_after") or {}
    return ", ".join(f"{t} {before[t]['engine']}→{after.get(t, before[t])['engine']}" for t in before)


if __name__ == "__main__":
    sys.exit(main())
