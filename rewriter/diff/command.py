"""``rewrite diff BEFORE AFTER`` (arguments: ``rewriter.cli.add_diff_arguments``): text, JSON, Markdown, HTML."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..errors import RewriteError
from .assemble import diff


def run_diff(args: argparse.Namespace) -> int:
    """Run ``rewrite diff``: 0 on success, 2 on bad input (the message names the file)."""
    from ..report import render_text, write_html, write_json, write_markdown

    try:
        for p in (args.report, args.md, args.html):
            if p and not Path(p).resolve().parent.is_dir():
                raise RewriteError(f"{p}: output folder {Path(p).parent} does not exist")
        with tempfile.TemporaryDirectory(prefix="rewrite-diff-") as tmp:
            # the HTML embeds the pictures, so without --pictures they only live until it is written
            pictures = getattr(args, "pictures", None) or (tmp if args.fidelity and args.html else None)
            rep = diff(args.before, args.after, fidelity=args.fidelity,
                       targets=tuple(dict.fromkeys(args.target or ())), images=args.images, pictures=pictures)
            if args.html:
                write_html(with_subgraph(rep, args.before, args.after, tmp), args.html)
            if pictures == tmp:
                rep.get("fidelity", {}).pop("pictures", None)  # do not point the JSON/Markdown at deleted files
        if args.report:
            write_json(rep, args.report)
        if args.md:
            write_markdown(rep, args.md)
    except RewriteError as e:
        print(f"rewrite diff: error: {e}", file=sys.stderr)
        return e.exit_code
    if not args.quiet:
        print(render_text(rep, verbose=args.verbose))
    return 0


def with_subgraph(rep: dict, before: str, after: str, folder: str) -> dict:
    """The report with ``diff_picture``: the changed subgraph drawn for the HTML (dot, else matplotlib)."""
    if not (rep.get("added") or rep.get("removed") or rep.get("changed")):
        return rep
    from ..pictures import diff_graphs, draw_diff

    png = Path(folder) / "subgraph.png"
    try:
        tool = draw_diff(diff_graphs(before, after, rep), png)
    except (RewriteError, OSError, ImportError, ValueError) as e:  # the picture is optional; the tables stay
        return {**rep, "notes": [*rep.get("notes", []), f"changed subgraph not drawn: {e}"]}
    return {**rep, "diff_picture": str(png), "diff_picture_tool": tool}
