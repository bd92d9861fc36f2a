"""``rewrite optimize``'s handler; its argparse parser lives in ``rewriter.cli`` (``optimize_parser``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import RewriteError


def _default_output(src: Path, fmt: str) -> Path:
    stem = src.name[: -len(src.suffix)] if src.suffix else src.name
    return src.with_name(f"{stem}.optimized.{'xml' if fmt == 'ir' else 'onnx'}")


def run_optimize(args: argparse.Namespace) -> int:
    """Run ``rewrite optimize`` on parsed ``args`` (``rewriter.cli.optimize_parser``), print the summary;
    returns the exit code."""
    from ..model import ModelHandle, check_output_path
    from . import optimize, parse_passes

    targets = tuple(dict.fromkeys(args.target or ("mtl",)))
    parse_passes(args.passes)  # bad names fail before the model is read
    if args.workers < 0:
        raise RewriteError(f"--workers {args.workers}: must be ≥ 0")
    from ..verify import parse_budget

    parse_budget(args.budget)
    from ..cli import check_alongside_arguments

    check_alongside_arguments(args)
    src = Path(args.model)
    handle = ModelHandle.load(src)
    from ..graph import parse_input_shape

    shape = parse_input_shape(args.input_shape, handle) if args.input_shape else None
    out = Path(args.output) if args.output else _default_output(src, handle.format)
    check_output_path(out, src)
    for extra in (args.report, args.html, args.md):
        if extra:
            check_output_path(Path(extra), src)
    from contextlib import ExitStack

    from ..progress import RunProgress, nncf_into

    mode = "quiet" if args.quiet else ("bar" if sys.stderr.isatty() else ("lines" if args.verbose else "quiet"))
    say = RunProgress(1 + bool(args.measure) + bool(args.html), mode)
    with ExitStack() as shown:  # a bar on a TTY; NNCF's bars and log lines go through it; closed before the report
        shown.enter_context(say)
        shown.enter_context(nncf_into(say, args.quiet))
        _, rep = optimize(handle, targets=targets, budget=args.budget, passes=args.passes, calib=args.calib,
                          images=args.images, output=out, report=args.report, html=args.html, md=args.md,
                          workers=args.workers, ray_address=args.ray, measure=args.measure, seed=args.seed,
                          progress=say, input_shape=shape, objective=args.objective, alongside=args.alongside,
                          alongside_ms=args.alongside_ms, effort=args.effort)
    if args.quiet:
        print(rep.output)
    else:
        from ..report import render_text

        print(render_text(rep, verbose=args.verbose))
    return rep.exit_code
