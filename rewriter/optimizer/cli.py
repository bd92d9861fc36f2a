"""``rewrite optimize MODEL --target mtl [--target cpu ...] [--budget ...] [-o OUT] [--report r.json]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import RewriteError

EPILOG = """\
examples:
  rewrite optimize model.onnx --target mtl --budget rel_l2=0.05 --report opt.json --html opt.html
  rewrite optimize model.xml --target cpu --measure --workers 2
  rewrite optimize model.xml --target kmb --target mtl --ray auto

The first --target is the objective (predicted latency minimised on it); the result is never predicted
slower than the input on any --target. exit codes: 0 ok; 2 bad usage or input; 3 internal error
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rewrite optimize", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Search the passes' per-site choices for the fastest model within a fidelity budget "
                    "(vs the original, on held-out validation images; headline on the test split).")
    p.add_argument("model", help="input model: .onnx or OpenVINO .xml (with its .bin)")
    p.add_argument("--target", action="append", choices=("kmb", "mtl", "cpu"),
                   help="latency target (repeatable); the first is the objective (default: mtl)")
    p.add_argument("--budget", help="fidelity budget vs the original, e.g. rel_l2=0.05 or delta1=0.98,absrel=0.03 "
                                    "(keys: delta1, absrel, rel_l2, psnr, cosine; worst_ prefix for the worst image)")
    p.add_argument("--passes", help="passes searched (default: asym_interp,interp_deconv,dwpw,int8)")
    p.add_argument("--calib", metavar="DIR", help="image folder (split into calibration/validation/test)")
    p.add_argument("--images", metavar="DIR", help="image folder for validation and test")
    p.add_argument("-o", "--output", help="output path (default: NAME.optimized.onnx / .xml beside the input)")
    p.add_argument("--report", metavar="FILE.json", help="write the JSON report (and FILE.pareto.png)")
    p.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    p.add_argument("--workers", type=int, default=0, help="evaluate candidates in N local processes")
    p.add_argument("--ray", metavar="ADDRESS", help="evaluate candidates on a Ray cluster (e.g. auto)")
    p.add_argument("--measure", action="store_true",
                   help="measure CPU latency before/after (interleaved A/B); a measured slowdown returns the input")
    p.add_argument("--seed", type=int, default=0, help="seed for the splits and random inputs (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the output path")
    p.add_argument("-v", "--verbose", action="store_true", help="every candidate site in the table")
    return p


def _default_output(src: Path, fmt: str) -> Path:
    stem = src.name[: -len(src.suffix)] if src.suffix else src.name
    return src.with_name(f"{stem}.optimized.{'xml' if fmt == 'ir' else 'onnx'}")


def run_optimize(argv: list[str]) -> int:
    """Parse ``argv`` (after ``optimize``), run, print the summary; returns the exit code."""
    args = build_parser().parse_args(argv)
    from ..model import ModelHandle, check_output_path
    from . import _parse_passes, optimize

    targets = tuple(dict.fromkeys(args.target or ("mtl",)))
    _parse_passes(args.passes)  # bad names fail before the model is read
    if args.workers < 0:
        raise RewriteError(f"--workers {args.workers}: must be ≥ 0")
    from ..verify import parse_budget

    parse_budget(args.budget)
    src = Path(args.model)
    handle = ModelHandle.load(src)
    out = Path(args.output) if args.output else _default_output(src, handle.format)
    check_output_path(out, src)
    for extra in (args.report, args.html):
        if extra:
            check_output_path(Path(extra), src)
    if args.quiet:
        say = lambda _m: None
    else:
        say = lambda m: (sys.stderr.write(m), sys.stderr.flush())
    _, rep = optimize(handle, targets=targets, budget=args.budget, passes=args.passes, calib=args.calib,
                      images=args.images, output=out, report=args.report, html=args.html, workers=args.workers,
                      ray_address=args.ray, measure=args.measure, seed=args.seed, progress=say)
    if args.quiet:
        print(rep.output)
    else:
        from .report import render_text

        print(render_text(rep, verbose=args.verbose))
    return rep.exit_code
