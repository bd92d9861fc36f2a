"""The ``rewrite optimize`` report: typed, JSON round-trippable, with a terminal, an HTML and a PNG rendering."""

from __future__ import annotations

import base64
import html as _html
import io
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..jsonable import jsonable

TARGET_NAMES = {"kmb": "KMB (VPU 2.0)", "mtl": "MTL (NPU 2.7)", "cpu": "CPU"}


@dataclass
class SiteRow:
    """One site of the chosen model: what it took, what that saves, what it costs in fidelity."""

    site: str
    pass_name: str
    op: str
    choice: str
    saved_us: dict[str, float]  # predicted µs saved per target when taken alone (negative = slower)
    error: dict[str, float]  # budget used per budget key when taken alone (1.0 = the whole budget)
    budget_used: float  # the largest of ``error``
    engine: dict[str, Any] = field(default_factory=dict)  # the engine's default choice, reason, latency_us
    selected: bool = True  # False: a candidate the search did not take (kept for --verbose / HTML)
    reason: str = ""  # why not taken, or why it was dropped


@dataclass
class ParetoPoint:
    """A non-dominated (predicted latency on the objective, fidelity) point the search evaluated."""

    latency_ms: float
    metrics: dict[str, dict[str, float]]
    choices: dict[str, Any]
    budget_used: float = 0.0
    latency_by_target_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class OptimizeReport:
    """Everything ``optimize`` decided and measured."""

    input: str
    format: str
    targets: list[str]
    objective: str
    budget: dict[str, float]
    passes: list[str]
    sites: list[SiteRow]
    pareto: list[ParetoPoint]
    fidelity: dict[str, dict[str, Any]]  # {"validation": {...}, "test": {...}}: metrics, passed, split
    latency: dict[str, dict[str, Any]]  # {target: rewriter.cost.compare(...)}: before_ms, after_ms, ...
    int8: dict[str, Any] | None = None  # chosen setting, ops kept in float, settings tried
    inputs: dict[str, list[str]] = field(default_factory=dict)  # split → image names
    measured: dict[str, Any] | None = None  # interleaved A/B CPU timing (--measure)
    search: dict[str, Any] = field(default_factory=dict)  # evaluations, seconds, executor, log
    output: str | None = None
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0
    objective_kind: str = "latency"  # latency | fit-frame
    frame: dict[str, Any] | None = None  # fit-frame / alongside: frame_ms, others_ms, total_ms, fits, headroom_ms

    def to_json(self) -> dict[str, Any]:
        return jsonable(asdict(self))

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OptimizeReport:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["sites"] = [SiteRow(**s) for s in d.get("sites", [])]
        kw["pareto"] = [ParetoPoint(**p) for p in d.get("pareto", [])]
        return cls(**kw)

    # ---- headline --------------------------------------------------------------------------------------
    def speedup(self, target: str | None = None) -> float | None:
        lat = self.latency.get(target or self.objective) or {}
        b, a = lat.get("before_ms"), lat.get("after_ms")
        return round(b / a, 4) if b and a else None

    def headline(self) -> str:
        t = self.objective
        lat = self.latency.get(t, {})
        test = self.fidelity.get("test", {}).get("metrics", {}).get("mean", {})
        fid = ", ".join(f"{k} {test[k]:.4g}" for k in ("rel_l2", "absrel", "delta1", "psnr") if k in test)
        s = self.speedup(t)
        head = (f"optimize: {TARGET_NAMES.get(t, t)} {lat.get('before_ms', 0):.3f} → {lat.get('after_ms', 0):.3f} ms "
                f"predicted ({s:.2f}x)" if s else f"optimize: {t}: no change")
        head += f"; held-out test split: {fid}" if fid else ""
        if self.measured:
            head += f"; measured CPU {self.measured.get('speedup')}x"
        return head


# ---- renderings ------------------------------------------------------------------------------------------
def _fmt_us(d: dict[str, float], targets: list[str]) -> str:
    return " ".join(f"{t}:{d.get(t, 0.0):+.0f}" for t in targets)


def render_text(r: OptimizeReport, verbose: bool = False) -> str:
    """Terminal summary (≤ 100 columns): headline, per-target latency, fidelity, chosen sites."""
    lines = [r.headline()]
    for t, lat in r.latency.items():
        lines.append(f"  {TARGET_NAMES.get(t, t):<14} {lat.get('before_ms', 0):>10.3f} → "
                     f"{lat.get('after_ms', 0):>10.3f} ms predicted  ({lat.get('speedup') or 1:.2f}x)")
    if r.frame and "fits" in r.frame:
        f = r.frame
        lines.append(f"  frame ({f['target']}): {f['latency_ms']:.3f} + {f['others_ms']:.3f} ms others = "
                     f"{f['total_ms']:.3f} of {f['frame_ms']} ms: {'fits' if f['fits'] else 'does NOT fit'}"
                     + (f" [{f['selected']}]" if f.get("selected") else ""))
    budget = ",".join(f"{k}={v:g}" for k, v in r.budget.items())
    for split in ("validation", "test"):
        f = r.fidelity.get(split)
        if f:
            mean = f.get("metrics", {}).get("mean", {})
            vals = ", ".join(f"{k} {mean[k]:.4g}" for k in ("rel_l2", "absrel", "delta1", "psnr") if k in mean)
            ok = "within" if f.get("passed") else "OVER"
            lines.append(f"  {split:<10} {ok} budget {budget}: {vals}")
    chosen = [s for s in r.sites if s.selected]
    lines.append(f"  {len(chosen)} site choice(s) taken, {len(r.pareto)} Pareto point(s) over "
                 f"{r.search.get('evaluations', 0)} evaluation(s)")
    if r.int8:
        lines.append(f"  int8: {'on' if r.int8.get('enabled') else 'off'}"
                     + (f", {len(r.int8.get('float_ops', []))} op(s) kept in float" if r.int8.get("enabled") else "")
                     + (f", setting {r.int8.get('setting')}" if r.int8.get("enabled") else ""))
    rows = r.sites if verbose else chosen
    if rows:
        lines.append(f"  {'site':<34} {'choice':<22} {'budget':>7}  µs saved ({'/'.join(r.targets)})")
        for s in rows:
            site = s.site if len(s.site) <= 34 else "…" + s.site[-33:]
            mark = "" if s.selected else f"  [{s.reason}]"
            lines.append(f"  {site:<34} {s.choice[:22]:<22} {s.budget_used:>7.3f}  "
                         f"{_fmt_us(s.saved_us, r.targets)}{mark}"[:100])
    for n in r.notes:
        lines.append(f"  note: {n}"[:200])
    if r.output:
        lines.append(f"  written: {r.output}")
    return "\n".join(lines)


def pareto_png(r: OptimizeReport) -> bytes | None:
    """The Pareto front (predicted objective latency vs budget used) as PNG bytes; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    xs = [p.latency_ms for p in r.pareto]
    ys = [p.budget_used for p in r.pareto]
    ax.plot(xs, ys, "o-", label="Pareto front (validation)")
    lat = r.latency.get(r.objective, {})
    if lat.get("after_ms") is not None:
        chosen_u = r.fidelity.get("validation", {}).get("budget_used")
        if chosen_u is not None:
            ax.plot([lat["after_ms"]], [chosen_u], "r*", markersize=14, label="chosen")
        ax.axvline(lat.get("before_ms", 0), color="gray", ls=":", label="input")
    ax.axhline(1.0, color="red", ls="--", lw=0.8, label="budget")
    ax.set_xlabel(f"predicted latency on {r.objective} (ms)")
    ax.set_ylabel("fraction of the fidelity budget used")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _atomic_write(path: str | os.PathLike, data: bytes) -> Path:
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return p


def write_json(r: OptimizeReport, path: str | os.PathLike) -> Path:
    return _atomic_write(path, (json.dumps(r.to_json(), indent=2) + "\n").encode())


def write_png(r: OptimizeReport, path: str | os.PathLike) -> Path | None:
    png = pareto_png(r)
    return _atomic_write(path, png) if png is not None else None


def render_html(r: OptimizeReport) -> str:
    """Self-contained HTML: headline, latency and fidelity tables, the site table and the Pareto plot."""
    e = _html.escape
    png = pareto_png(r)
    parts = [f"<!doctype html><meta charset='utf-8'><title>rewrite optimize: {e(r.input)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}td,th{padding:2px 8px;"
             "text-align:left;border-bottom:1px solid #ddd}table{border-collapse:collapse}</style>",
             f"<h1>rewrite optimize</h1><p><b>{e(r.headline())}</b></p>",
             "<h2>Latency (predicted)</h2><table><tr><th>target</th><th>before ms</th><th>after ms</th>"
             "<th>speedup</th></tr>"]
    for t, lat in r.latency.items():
        parts.append(f"<tr><td>{e(TARGET_NAMES.get(t, t))}</td><td>{lat.get('before_ms')}</td>"
                     f"<td>{lat.get('after_ms')}</td><td>{lat.get('speedup')}</td></tr>")
    parts.append("</table><h2>Fidelity vs the original</h2><table><tr><th>split</th><th>within budget</th>"
                 "<th>mean</th></tr>")
    for split, f in r.fidelity.items():
        mean = f.get("metrics", {}).get("mean", {})
        parts.append(f"<tr><td>{e(split)}</td><td>{f.get('passed')}</td><td>"
                     f"{e(', '.join(f'{k} {v:.4g}' for k, v in mean.items()))}</td></tr>")
    parts.append("</table>")
    if png:
        parts.append("<h2>Pareto front</h2><img alt='Pareto front' src='data:image/png;base64,"
                     + base64.b64encode(png).decode() + "'>")
    parts.append("<h2>Sites</h2><table><tr><th>site</th><th>pass</th><th>choice</th><th>taken</th>"
                 "<th>budget used alone</th><th>µs saved alone</th><th>engine default</th></tr>")
    for s in r.sites:
        parts.append(f"<tr><td>{e(s.site)}</td><td>{e(s.pass_name)}</td><td>{e(s.choice)}</td>"
                     f"<td>{'yes' if s.selected else e(s.reason or 'no')}</td><td>{s.budget_used:.4g}</td>"
                     f"<td>{e(_fmt_us(s.saved_us, r.targets))}</td><td>{e(str(s.engine.get('default', '')))}</td></tr>")
    parts.append("</table>")
    if r.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.notes) + "</ul>")
    if r.search.get("log"):
        parts.append("<h2>Search log</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in r.search["log"]) + "</ul>")
    return "\n".join(parts)


def write_html(r: OptimizeReport, path: str | os.PathLike) -> Path:
    return _atomic_write(path, render_html(r).encode())
