"""`rewrite cost MODEL`: predicted fps, ms per engine, share of the 16.7 ms frame, per-layer table, a picture;
and the frame shared with other workloads (`--alongside OTHER`, `--alongside-ms X`).

Library: ``cost_report(model, targets, ...)`` → dict; ``alongside(model_ms, others, others_ms, target)`` → dict;
``attach_alongside(latency, ...)`` adds ``alongside`` to a rewrite report's per-target latency.
"""

from __future__ import annotations

import argparse
import html
from pathlib import Path
from typing import Any

from ..errors import RewriteError
from ..model import ModelHandle
from .model import PRECISIONS, TARGETS, ModelCost, predict
from .profiles import FRAME_BUDGET_MS

FRAME_MS = round(FRAME_BUDGET_MS, 2)  # 16.67 ms: one frame of the 60 fps video requirement
_COLORS = {"dpu": "#4C78A8", "shave": "#E45756", "dma": "#F58518", "cpu": "#54A24B"}


def _handle(model: ModelHandle | Any) -> ModelHandle:
    return model if isinstance(model, ModelHandle) else ModelHandle.load(model)


def alongside(model_ms: float, others: list[ModelHandle | str | Path] | None = None, others_ms: float | None = None,
              target: str = "mtl", *, precision: str | None = None,
              input_shape: dict[str, list[int]] | list[int] | None = None) -> dict[str, Any]:
    """The frame shared with other workloads on the same ``target``: ours + others vs 16.67 ms.

    ``others`` (models, predicted on ``target`` at ``precision``) and ``others_ms`` (a known figure) add up.
    Returns ``{"model_ms", "others": [{"model", "ms"}], "others_ms", "total_ms", "frame_ms", "fits",
    "headroom_ms"}`` — the NPU runs one network after the other, so the frame holds the sum.
    """
    if others_ms is not None and (others_ms < 0 or others_ms != others_ms):
        raise RewriteError(f"--alongside-ms {others_ms}: must be a number >= 0")
    rows = []
    for o in others or []:
        h = _handle(o)
        rows.append({"model": h.name, "ms": round(predict(h, target, precision=precision).total_ms, 4)})
    extra = sum(r["ms"] for r in rows) + (float(others_ms) if others_ms is not None else 0.0)
    total = float(model_ms) + extra
    return {"model_ms": round(float(model_ms), 4), "others": rows, "others_ms": round(extra, 4),
            "total_ms": round(total, 4), "frame_ms": FRAME_MS, "fits": total <= FRAME_BUDGET_MS,
            "headroom_ms": round(FRAME_BUDGET_MS - total, 4)}


def attach_alongside(latency: dict[str, dict], others: list | None, others_ms: float | None) -> None:
    """Add ``alongside`` to each target of a rewrite report's ``latency`` (ours = the rewritten model's ms)."""
    if not others and others_ms is None:
        return
    for t, lat in latency.items():
        lat["alongside"] = alongside(float(lat["after_ms"]), others, others_ms, t)


def _target_json(c: ModelCost, top: int | None = None) -> dict[str, Any]:
    by_engine: dict[str, float] = {}
    for x in c.layers:
        by_engine[x.engine] = by_engine.get(x.engine, 0.0) + x.us / 1000.0
    rows = [x.to_json() for x in c.layers if x.us > 0 or x.op == "resize"]
    rows = [{"node": r["node"], "op": r["op"], "engine": r["engine"], "us": r["us"],
             **{k: v for k, v in r.items() if k not in ("node", "op", "engine", "us")}} for r in rows]
    return {"total_ms": round(c.total_ms, 4), "fps": round(c.fps, 2), "frame_share": round(c.frame_share, 4),
            "frame_ms": FRAME_MS, "by_engine": {k: round(v, 4) for k, v in sorted(by_engine.items())},
            "profile": c.profile, "notes": list(c.notes),
            "resizes": [{"node": r["node"], "engine": r["engine"], "rule": (r.get("lowering") or {}).get("rule")}
                        for r in rows if r["op"] == "resize"],
            "layers": rows if top is None else sorted(rows, key=lambda r: -r["us"])[:top]}


def cost_report(model: ModelHandle | Any, targets: tuple[str, ...] | list[str] = TARGETS, *,
                precision: str | None = None, alongside_models: list | None = None,
                alongside_ms: float | None = None,
                input_shape: dict[str, list[int]] | list[int] | None = None) -> dict[str, Any]:
    """Predicted cost of ``model`` on each target: fps, total ms, ms per engine, frame share, per-layer rows
    (``node, op, engine, us``), and with ``alongside_models`` / ``alongside_ms`` the shared-frame figures."""
    for t in targets:
        if t not in TARGETS:
            raise RewriteError(f"unknown target '{t}' (use one of {', '.join(TARGETS)})")
    if precision is not None and precision not in PRECISIONS:
        raise RewriteError(f"unknown precision '{precision}' (use one of {', '.join(PRECISIONS)})")
    h = _handle(model)
    others = [_handle(o) for o in alongside_models or []]  # load (and fail on) the others before costing
    out: dict[str, Any] = {"model": h.name, "format": h.format, "precision": precision or "as stored",
                           "frame_ms": FRAME_MS, "targets": {}}
    for t in targets:
        c = predict(h, t, precision=precision, input_shape=input_shape)
        tj = _target_json(c)
        if others or alongside_ms is not None:
            tj["alongside"] = alongside(c.total_ms, others, alongside_ms, t, precision=precision)
        out["targets"][t] = tj
    return out


# ---- pictures --------------------------------------------------------------------------------------------
def cost_svg(report: dict[str, Any], top: int = 25) -> str:
    """Self-contained SVG: per target, one bar per engine (ms) and the ``top`` layers as bars coloured by engine,
    with the 16.67 ms frame marked."""
    width, row_h, left = 860, 16, 300
    parts: list[str] = []
    y = 10
    for t, tj in report["targets"].items():
        parts.append(f'<text x="10" y="{y + 14}" font-weight="bold">{html.escape(t)}: {tj["total_ms"]:.2f} ms, '
                     f'{tj["fps"]:.1f} fps, {100 * tj["frame_share"]:.0f}% of the {FRAME_MS} ms frame</text>')
        y += 24
        scale_ms = max(tj["total_ms"], FRAME_MS) or 1.0
        x = left
        for eng, ms in tj["by_engine"].items():
            w = (width - left - 20) * ms / scale_ms
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{row_h}" '
                         f'fill="{_COLORS.get(eng, "#999")}"><title>{html.escape(eng)} {ms:.3f} ms</title></rect>')
            x += w
        fx = left + (width - left - 20) * FRAME_MS / scale_ms
        parts.append(f'<line x1="{fx:.1f}" y1="{y - 4}" x2="{fx:.1f}" y2="{y + row_h + 4}" stroke="black" '
                     f'stroke-dasharray="3,2"/><text x="10" y="{y + 12}">by engine (frame {FRAME_MS} ms dashed)'
                     f'</text>')
        y += row_h + 8
        rows = sorted(tj["layers"], key=lambda r: -r["us"])[:top]
        peak = max((r["us"] for r in rows), default=1.0) or 1.0
        for r in rows:
            name = r["node"] if len(r["node"]) <= 44 else "…" + r["node"][-43:]
            w = (width - left - 90) * r["us"] / peak
            parts.append(f'<text x="10" y="{y + 12}" font-size="11">{html.escape(name)}</text>'
                         f'<rect x="{left}" y="{y + 2}" width="{max(w, 0.5):.1f}" height="{row_h - 4}" '
                         f'fill="{_COLORS.get(r["engine"], "#999")}"><title>{html.escape(r["op"])} on '
                         f'{html.escape(r["engine"])}: {r["us"]:.1f} us</title></rect>'
                         f'<text x="{left + w + 4:.1f}" y="{y + 12}" font-size="11">{r["us"]:.0f} us '
                         f'{html.escape(r["engine"])}</text>')
            y += row_h
        y += 16
    legend = "".join(f'<rect x="{10 + i * 90}" y="{y}" width="12" height="12" fill="{c}"/>'
                     f'<text x="{26 + i * 90}" y="{y + 11}" font-size="11">{e}</text>'
                     for i, (e, c) in enumerate(_COLORS.items()))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y + 24}" '
            f'font-family="sans-serif" font-size="12">{"".join(parts)}{legend}</svg>\n')


def cost_html(report: dict[str, Any]) -> str:
    """Self-contained HTML: summary table per target, the SVG, and the per-layer table."""
    esc = html.escape
    body = [f"<h1>Predicted cost: {esc(report['model'])}</h1>",
            f"<p>precision: {esc(str(report['precision']))}; frame {FRAME_MS} ms (60 fps). NPU figures are an "
            "analytic model for ranking rewrites, not fps promises.</p>",
            "<table border=1 cellpadding=3><tr><th>target</th><th>ms</th><th>fps</th><th>frame share</th>"
            "<th>ms per engine</th><th>alongside</th></tr>"]
    for t, tj in report["targets"].items():
        eng = ", ".join(f"{k} {v:.3f}" for k, v in tj["by_engine"].items())
        al = tj.get("alongside")
        al_s = (f"others {al['others_ms']:.2f} ms, total {al['total_ms']:.2f} ms, "
                f"{'fits' if al['fits'] else 'does not fit'} (headroom {al['headroom_ms']:.2f} ms)") if al else ""
        body.append(f"<tr><td>{esc(t)}</td><td>{tj['total_ms']:.3f}</td><td>{tj['fps']:.1f}</td>"
                    f"<td>{100 * tj['frame_share']:.1f}%</td><td>{esc(eng)}</td><td>{esc(al_s)}</td></tr>")
    body.append("</table>")
    body.append(cost_svg(report))
    for t, tj in report["targets"].items():
        body.append(f"<h2>{esc(t)}: layers</h2><table border=1 cellpadding=2><tr><th>node</th><th>op</th>"
                    "<th>engine</th><th>us</th><th>note</th></tr>")
        for r in tj["layers"]:
            body.append(f"<tr><td>{esc(r['node'])}</td><td>{esc(r['op'])}</td><td>{esc(r['engine'])}</td>"
                        f"<td>{r['us']:.1f}</td><td>{esc(str(r.get('note', '')))}</td></tr>")
        body.append("</table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>cost</title></head><body>"
            + "\n".join(body) + "</body></html>\n")


def render_cost_text(report: dict[str, Any], top: int = 10) -> str:
    """Plain-text summary: one block per target with the top layers (<= 100 columns)."""
    lines = [f"cost: {Path(report['model']).name} (precision {report['precision']})"]
    for t, tj in report["targets"].items():
        eng = "  ".join(f"{k} {v:.3f} ms" for k, v in tj["by_engine"].items())
        lines.append(f"\n{t}: {tj['total_ms']:.3f} ms  {tj['fps']:.1f} fps  {100 * tj['frame_share']:.1f}% of "
                     f"the {FRAME_MS} ms frame")
        lines.append(f"  by engine: {eng}")
        al = tj.get("alongside")
        if al:
            lines.append(f"  alongside: others {al['others_ms']:.3f} ms, total {al['total_ms']:.3f} ms, "
                         f"{'fits' if al['fits'] else 'DOES NOT FIT'}, headroom {al['headroom_ms']:.3f} ms")
        for r in tj["resizes"]:
            why = (r["rule"] or "cpu kernel").split("; ")[-1]  # the deciding clause
            lines.append(f"  resize {r['node'][-36:]}: {r['engine']} ({why})")
        for r in sorted(tj["layers"], key=lambda r: -r["us"])[:top]:
            lines.append(f"  {r['node'][-44:]:<44} {r['op']:<10} {r['engine']:<6} {r['us']:>10.1f} us")
    return "\n".join(line[:100] for line in lines)


# ---- command line ----------------------------------------------------------------------------------------
def run_cost(args: argparse.Namespace) -> int:
    """Handler of `rewrite cost`; bad input raises RewriteError (exit 2) before any costing."""
    from ..io import atomic_write
    from ..model import check_output_path
    from ..report import write_json

    src = Path(args.model)
    if not src.exists():
        raise RewriteError(f"{src}: no such file")
    from ..cli import check_alongside_arguments

    check_alongside_arguments(args)
    for extra in (args.report, args.html, args.svg):
        if extra:
            check_output_path(Path(extra), src)
    targets = tuple(dict.fromkeys(args.target or TARGETS))
    from ..graph import parse_input_shape

    handle = ModelHandle.load(src)
    shape = parse_input_shape(args.input_shape, handle)
    rep = cost_report(handle, targets, precision=args.precision, alongside_models=args.alongside,
                      alongside_ms=args.alongside_ms, input_shape=shape)
    rep["input"] = str(src)
    if args.report:
        write_json(rep, args.report)
    if args.svg:
        atomic_write(args.svg, cost_svg(rep))
    if args.html:
        atomic_write(args.html, cost_html(rep))
    if not args.quiet:
        print(render_cost_text(rep, top=args.top))
    return 0

