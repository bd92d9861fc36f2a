"""Render rewrite reports and diff reports: terminal text, Markdown and self-contained HTML.

Both report kinds are first turned into a list of neutral ``Section``s (paragraphs, tables, pictures, bar
charts); the three renderers only lay those out, so a section is written once. Every section copes with
its data being absent, since the report is filled by several components (passes, verification, cost).
Every number carries its unit in the cell or in the column header, and predicted latencies name their
target profile.
"""

from __future__ import annotations

import base64
import html
import json
import mimetypes
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import RewriteError
from .io import atomic_write

if TYPE_CHECKING:
    from .optimizer.report import OptimizeReport
    from .results import RewriteReport

    Report = RewriteReport | OptimizeReport | dict
else:
    Report = Any

WIDTH = 100  # terminal tables fit this many columns

# units of the verification metrics (rewriter/metrics.py); anything else falls back to its name's suffix
METRIC_UNITS = {
    "max_abs": "output units", "rel_max": "× reference peak", "rel_l2": "relative L2", "cosine": "cosine",
    "psnr": "dB", "delta1": "fraction of pixels", "absrel": "relative", "rmse": "output units",
    "mae": "output units",
}
TARGET_NAMES = {"kmb": "KMB (VPU 2.0)", "mtl": "MTL (NPU 2.7)", "cpu": "CPU"}


# ---- document model --------------------------------------------------------------------------------------
@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    max_lines: int = 0  # terminal only: wrap a cell to at most this many lines (0: no limit)


@dataclass
class Bars:
    """Per-item before/after bars (e.g. per-layer predicted latency)."""

    title: str
    unit: str
    items: list[tuple[str, float | None, float | None]]  # (label, before, after)


@dataclass
class Section:
    title: str
    lines: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, path)
    bars: list[Bars] = field(default_factory=list)


# ---- number formatting (unit always attached or in the header) -------------------------------------------
def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e5 or abs(v) < 1e-3:
            return f"{v:.3g}"
        return f"{v:.{digits}g}"
    return str(v)


def _ms(v: Any) -> str:
    return "–" if v is None else f"{_msnum(v)} ms"


def _msnum(v: Any) -> str:
    """Milliseconds without the unit: 3 significant decimals below 10 ms, fewer above."""
    if v is None:
        return "–"
    v = float(v)
    return f"{v:.3f}" if abs(v) < 10 else (f"{v:.2f}" if abs(v) < 100 else f"{v:.1f}")


def _si(v: Any, unit: str) -> str:
    """1234567 → '1.23 M<unit>'."""
    if v is None:
        return "–"
    v = float(v)
    sep = " " if unit.islower() else ""  # "1.2 M parameters", "221 kMAC"
    for div, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g} {p}{sep}{unit}"
    return f"{v:.0f} {unit}"


def _pct(before: Any, after: Any) -> str:
    try:
        b, a = float(before), float(after)
    except (TypeError, ValueError):
        return "–"
    if b == 0:
        return "–" if a == 0 else "new"
    return f"{(a - b) / b * 100:+.1f} %"


def _speedup(before: Any, after: Any) -> str:
    try:
        b, a = float(before), float(after)
    except (TypeError, ValueError):
        return "–"
    return f"{b / a:.2f}×" if a > 0 else "–"


def _target(t: str) -> str:
    return TARGET_NAMES.get(t, t)


def _metric_unit(name: str) -> str:
    base = name.rsplit(".", 1)[-1]
    if base in METRIC_UNITS:
        return METRIC_UNITS[base]
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_db", "dB"), ("_pct", "%"), ("seconds", "s")):
        if base.endswith(suffix):
            return unit
    return "–"


def _flat(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested metric dicts → [("output.metric", value)] (lists of numbers are kept whole)."""
    if isinstance(d, dict):
        out = []
        for k, v in d.items():
            out += _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    return [(prefix, d)]


# ---- headline: the answer first (≤ 8 lines) ----------------------------------------------------------------
FRAME_MS = 1000.0 / 60.0  # one frame of the 60 fps video requirement
HEADLINE_LINES = 8
_KEPT = ("applied", "kept_failed")
_DROP_REASON = {"rolled_back": "rolled back: over its gate", "rolled_back_cumulative": "dropped at the final check",
                "failed": "crashed", "no_change": "no site changed", "not_taken": "no site taken"}


def first_sentence(text: Any, limit: int = 160) -> str:
    """The first line/sentence of an error message, cut to ``limit`` characters (no traceback)."""
    s = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return _cut(s, limit)


def _fps(ms: Any) -> float | None:
    try:
        return 1000.0 / float(ms) if float(ms) > 0 else None
    except (TypeError, ValueError):
        return None


def _fits_phrase(total_ms: float | None, alongside: dict | None) -> str:
    if isinstance(alongside, dict) and alongside.get("total_ms") is not None:
        tot = float(alongside["total_ms"])
        fits = alongside.get("fits", tot <= FRAME_MS)
        return (f"with others {_msnum(tot)} of {FRAME_MS:.2f} ms, "
                + ("fits 60 fps" if fits else "does NOT fit 60 fps"))
    if total_ms is None:
        return ""
    return "fits 60 fps" if float(total_ms) <= FRAME_MS else "does NOT fit 60 fps"


def target_headline(t: str, v: dict) -> str:
    """'KMB (VPU 2.0): 98.2 → 127 fps (10.2 → 7.87 ms, 47 % of the 16.67 ms frame; fits 60 fps)'."""
    b, a = v.get("before_ms"), v.get("after_ms")
    fb = v.get("fps_before") if v.get("fps_before") is not None else _fps(b)
    fa = v.get("fps_after") if v.get("fps_after") is not None else _fps(a)
    share = (float(a) / FRAME_MS) if a is not None else None
    parts = [f"{_msnum(b)} → {_msnum(a)} ms"]
    if share is not None and not isinstance(v.get("alongside"), dict):  # else the shared frame says it
        parts.append(f"{share * 100:.0f} % of the {FRAME_MS:.2f} ms frame")
    fit = _fits_phrase(a, v.get("alongside"))
    slower = "; PREDICTED SLOWER" if v.get("slower") else ""
    return (f"{_target(t)}: {_fpsnum(fb)} → {_fpsnum(fa)} fps ({', '.join(parts)}"
            f"{'; ' + fit if fit else ''}{slower})")


def _fpsnum(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3g}" if float(v) < 100 else f"{float(v):.0f}"


def _fidelity_headline(cum: dict) -> str | None:
    if not cum:
        return None
    split = cum.get("split", "test")
    if cum.get("skipped"):
        return f"fidelity ({split} split): not checked ({cum['skipped']})"
    if "passed" not in cum:
        return None
    msg = str(cum.get("message", ""))
    msg = msg.split("split: ", 1)[-1].split("; would pass with", 1)[0]
    msg = msg.removeprefix("final vs original, ")
    if cum.get("gate") == "none":
        return f"fidelity: unchanged ({msg})"
    n = cum.get("inputs")
    where = f"{n} held-out {split} images" if isinstance(n, int) else f"the held-out {split} split"
    verdict = "within budget" if cum["passed"] else "OVER BUDGET"
    if msg.startswith(("within budget: ", "over budget: ")):
        msg = msg.split(": ", 1)[1]
    return f"fidelity on {where}: {verdict} — {msg}"


def _over_budget(message: Any) -> str:
    """'validation split: over budget: delta1 0.89 < 0.98; would pass with …' → 'over budget (delta1 0.89 < 0.98)'."""
    msg = first_sentence(message or "", 400).split("; would pass", 1)[0].split("split: ", 1)[-1]
    return f"over budget ({msg.removeprefix('over budget: ')})" if msg.startswith("over budget: ") else msg


def _pass_reason(p: dict, cumulative: dict | None = None) -> str:
    st = p.get("status", "")
    if st == "rolled_back_cumulative":
        why = next((_over_budget((d.get("failed") or {}).get("message")) for d in (cumulative or {}).get("dropped")
                    or [] if d.get("pass") == p.get("name")), "")
        return f"dropped at the final check on the test split, {_cut(why, 70)}" if why else _DROP_REASON[st]
    if st == "failed":
        err = str(p.get("error") or "").removeprefix(f"pass {p.get('name')} crashed: ")
        if err.startswith(f"pass {p.get('name')} produced an invalid model: "):
            return f"invalid model: {first_sentence(err.split(': ', 1)[1], 70)}"
        return f"crashed: {first_sentence(err, 70)}"
    if st == "rolled_back":
        fid = p.get("fidelity") or {}
        msg = _over_budget(fid.get("message") or p.get("error"))
        return f"rolled back, {_cut(msg, 90)}" if msg else _DROP_REASON[st]
    if st == "not_taken" and p.get("reason"):
        return f"no site taken: {_cut(str(p['reason']), 80)}"
    return _DROP_REASON.get(st, st or "?")


def headline(report: Report) -> list[str]:
    """At most 8 lines: fps before → after per target (frame share, fits 60 fps), fidelity vs the budget on
    the test split, passes/sites kept, and those dropped with a one-phrase reason."""
    report = document(report)
    if report.get("kind") == "diff" or ("passes" not in report and ("changed" in report or "added" in report)):
        return diff_headline(report)
    lines: list[str] = []
    if report.get("error") and not report.get("passes"):
        lines.append(f"ERROR: {first_sentence(report['error'])}")
    lat = report.get("latency") or {}
    for t, v in lat.items():
        if isinstance(v, dict) and (v.get("before_ms") is not None or v.get("after_ms") is not None):
            lines.append(target_headline(t, v))
    fid = _fidelity_headline(report.get("cumulative") or {})
    if fid:
        lines.append(fid)
    warns = [w for w in _headline_gates(report) if w.startswith("WARNING")]
    if (report.get("inputs") or {}).get("overlap") if isinstance(report.get("inputs"), dict) else False:
        warns = [w for w in warns if "--allow-overlap" not in w]
        warns.insert(0, "WARNING: --allow-overlap: the splits share images, so the fidelity is not held out")
    if warns:
        lines.append("; ".join(warns))
    passes = [p for p in report.get("passes") or [] if isinstance(p, dict)]
    kept = [p for p in passes if p.get("status") in _KEPT]
    if passes:
        lines.append("kept: " + (", ".join(
            f"{p.get('name')} ({p.get('sites_changed', 0)} site(s)"
            + (", over its gate" if p.get("status") == "kept_failed" else "") + ")" for p in kept) or "nothing"))
        dropped = [f"dropped {p.get('name')}: {_pass_reason(p, report.get('cumulative'))}" for p in passes
                   if p.get("status") not in _KEPT]
    else:
        dropped = []
    extra = []
    if report.get("pareto"):
        extra.append(f"optimize: {len(report['pareto'])} Pareto point(s)"
                     + (f"; chosen {report['chosen']}" if report.get("chosen") else ""))
    room = HEADLINE_LINES - len(lines) - len(extra)
    if len(dropped) > room:  # one line per dropped pass while they fit, else one line for all of them
        dropped = ["dropped: " + "; ".join(d.removeprefix("dropped ") for d in dropped)]
    lines += dropped + extra
    out = report.get("output")
    if out and len(lines) < HEADLINE_LINES:
        lines.append(f"written: {out}")
    return lines[:HEADLINE_LINES]


def diff_headline(r: dict) -> list[str]:
    """Diff headline: ops added/removed/changed, predicted latency per target before → after."""
    b, a = r.get("before") or {}, r.get("after") or {}
    lines = [f"{Path(str(b.get('model', '?'))).name} → {Path(str(a.get('model', '?'))).name}: "
             f"{len(r.get('added') or [])} op(s) added, "
             f"{len(r.get('removed') or [])} removed, {len(r.get('changed') or [])} changed "
             f"({r.get('matched', '–')} matched)"]
    changes = []
    for c in r.get("changed") or []:
        what = [f"{k}: {_val(v[0])} → {_val(v[1])}" for k, v in (c.get("attributes") or {}).items()]
        what += [f"{w.get('input')} {'shape' if w.get('before_shape') != w.get('after_shape') else 'values'}"
                 for w in c.get("weights") or []]
        changes.append(f"{c.get('after') or c.get('before')} ({'; '.join(what[:2]) or c.get('op')})")
    if changes:
        lines.append("changed: " + ", ".join(changes[:3]) + (f", … (+{len(changes) - 3})" if len(changes) > 3 else ""))
    for t, v in (r.get("latency") or {}).items():
        if isinstance(v, dict) and (v.get("before_ms") is not None or v.get("after_ms") is not None):
            lines.append(target_headline(t, v))
    fid = r.get("fidelity") or {}
    if fid.get("message"):
        lines.append(f"outputs: {first_sentence(fid['message'], 120)}")
    return lines[:HEADLINE_LINES]


# ---- one document for every report kind ------------------------------------------------------------------
def document(report: Report) -> dict:
    """The JSON document the renderers lay out: a ``RewriteReport`` (its JSON plus its depth pictures), an
    ``OptimizeReport`` (:func:`optimize_view`) or a dict (a diff or verify report, or a report read back)."""
    if isinstance(report, dict):
        return report
    from .optimizer.report import OptimizeReport
    from .results import RewriteReport

    if isinstance(report, OptimizeReport):
        return optimize_view(report)
    if isinstance(report, RewriteReport):
        doc = report.to_json()
        if report.pictures:
            doc["pictures"] = report.pictures
        return doc
    raise RewriteError(f"report: expected a RewriteReport, an OptimizeReport or a dict, not {type(report).__name__}")


def _optimize_gate(f: dict, budget: dict, split: str, n: int) -> dict:
    """An optimize split's fidelity as the cumulative gate of a rewrite (what the headline and cards read)."""
    g: dict[str, Any] = {"split": split, "gate": "budget", "budget": budget}
    if n:
        g["inputs"] = n
    if not f or f.get("skipped"):
        g["skipped"] = f"the {split} split was not evaluated"
    elif f.get("error"):
        g.update(passed=False, message=f"over budget: the model could not be run ({first_sentence(f['error'], 120)})")
    else:
        used = f.get("budget_used")
        g.update(passed=bool(f.get("passed")), metrics=f.get("metrics"), needed=f.get("needed"),
                 message=f.get("message") or ("within budget" if f.get("passed") else "over budget")
                 + (f": {used * 100:.0f} % of the budget used" if isinstance(used, (int, float)) else ""))
    return {k: v for k, v in g.items() if v is not None}


def optimize_view(rep: OptimizeReport) -> dict:
    """An ``OptimizeReport`` as the document of a rewrite report, so one renderer draws both: the test split's
    fidelity is the cumulative gate; each searched pass is an entry whose sites are the site choices (taken or
    not, with the reason), each with its predicted µs saved per target and its error contribution (the share of
    the budget it uses alone on the validation split); the Pareto points, the chosen point and the search."""
    d = rep.to_json()
    names = d.get("inputs") or {}
    budget = d.get("budget") or {}
    fid = d.get("fidelity") or {}
    passes = []
    for name in d.get("passes") or []:
        # a site choice may combine passes ("asym_interp+interp_deconv"): it counts for each, is listed under the first
        rows = [s for s in d.get("sites") or [] if name in str(s.get("pass_name", "")).split("+")]
        sites = []
        for s in rows:
            if str(s.get("pass_name", "")).split("+")[0] != name:
                continue
            eng = s.get("engine") or {}
            sites.append({"node": s["site"], "op": s.get("op"), "will_change": bool(s.get("selected")),
                          "choice": s.get("choice"), "site": s["site"], "pass": s.get("pass_name"),
                          "decision": "taken" if s.get("selected") else f"not taken: {s.get('reason') or '–'}",
                          "details": {"engine_before": eng.get("engine_before"),
                                      "engine_after": eng.get("engine_after"),
                                      "latency_us": {t: {"saved": v} for t, v in (s.get("saved_us") or {}).items()},
                                      "error_contribution": s.get("budget_used"),
                                      "engine_default": eng.get("default")}})
        taken = sum(bool(x.get("selected")) for x in rows)
        entry: dict[str, Any] = {"name": name, "status": "applied" if taken else "not_taken", "sites_changed": taken,
                                 "sites": sites, "exact": _exact(name), "notes": []}
        if name == "int8" and isinstance(d.get("int8"), dict):
            q = d["int8"]
            entry.update(status="applied" if q.get("enabled") else "not_taken",
                         reason=q.get("reason") or "no int8 setting within budget and faster")
            if q.get("enabled"):
                entry["sites_changed"] = max(taken, 1)
                entry["notes"].append(f"setting {q.get('setting')}; {len(q.get('float_ops') or [])} op(s) kept "
                                      "in float")
        elif not taken:
            why: dict[str, int] = {}
            for s in rows:
                why[s.get("reason") or "not selected"] = why.get(s.get("reason") or "not selected", 0) + 1
            entry["reason"] = "; ".join(f"{r} ({n} site(s))" for r, n in why.items()) or "no candidate site"
        passes.append(entry)
    lat = d.get("latency") or {}
    obj = d.get("objective") or next(iter(lat), "")
    val = fid.get("validation") or {}
    chosen = None
    if (lat.get(obj) or {}).get("after_ms") is not None:
        chosen = {"latency_ms": lat[obj]["after_ms"], "budget_used": val.get("budget_used", 0.0),
                  "input_ms": lat[obj].get("before_ms")}
    taken_sites = [f"{s['site']}={s['choice']}" for s in d.get("sites") or [] if s.get("selected")]
    notes = list(d.get("notes") or [])
    if d.get("frame") and "fits" in d["frame"]:
        f = d["frame"]
        notes.append(f"frame ({f.get('target')}): {_msnum(f.get('latency_ms'))} + {_msnum(f.get('others_ms'))} ms "
                     f"others = {_msnum(f.get('total_ms'))} of {f.get('frame_ms')} ms: "
                     + ("fits" if f.get("fits") else "does NOT fit")
                     + (f" [{f['selected']}]" if f.get("selected") else ""))
    return {
        "kind": "optimize", "input": d.get("input"), "output": d.get("output"), "format": d.get("format"),
        "output_format": d.get("format"), "targets": d.get("targets") or list(lat), "objective": obj,
        "passes": passes, "latency": lat, "measured": d.get("measured"), "inputs": names, "notes": notes,
        "cumulative": _optimize_gate(fid.get("test") or {}, budget, "test", len(names.get("test") or [])),
        "validation": _optimize_gate(val, budget, "validation", len(names.get("validation") or [])),
        "pareto": d.get("pareto") or [], "pareto_chosen": chosen,
        "chosen": (f"{len(taken_sites)} site choice(s)" if taken_sites else "the input (no site choice)")
        + (", int8" if (d.get("int8") or {}).get("enabled") else ""),
        "search": d.get("search") or {}, "int8": d.get("int8"), "exit_code": d.get("exit_code", 0),
        "pictures": list(getattr(rep, "pictures", None) or []),
    }


# ---- sections: rewrite report ----------------------------------------------------------------------------
def _rewrite_sections(r: dict, verbose: bool) -> list[Section]:
    secs = []
    head = Section("Optimize" if r.get("kind") == "optimize" else "Rewrite")
    out = r.get("output") or "(not written)"
    head.lines.append(f"{r.get('input', '?')} ({r.get('format', '?')}) → {out} ({r.get('output_format', '?')})")
    passes = r.get("passes") or []
    applied = [p["name"] for p in passes if p.get("status") in ("applied", "kept_failed")]
    head.lines.append(f"{len(passes)} pass(es) run, applied: {', '.join(applied) or 'none'}; "
                      f"exit code {r.get('exit_code', '–')}")
    head.lines += _headline_gates(r)
    secs.append(head)

    if passes:
        s = Section("Passes")
        rows = []
        for i, p in enumerate(passes, 1):
            rows.append([i, p.get("name"), p.get("status", "–"), p.get("sites_changed", 0),
                         len(p.get("sites") or []), "exact" if p.get("exact") else "approx",
                         _gate_summary(p.get("fidelity") or {}),
                         "–" if p.get("seconds") is None else f"{p['seconds']:.2f} s"])
        s.tables.append(Table(["#", "pass", "status", "sites changed", "candidates", "kind", "verification",
                               "time"], rows, {0, 3, 4, 7}))
        for p in passes:
            if p.get("error"):
                s.lines.append(f"{p['name']}: {p['error']}")
        targets = _pass_targets(passes)
        if targets:
            rows = []
            for p in passes:
                lat = p.get("latency") or {}
                row = [p.get("name")]
                for t in targets:
                    v = lat.get(t) or {}
                    row.append(f"{_msnum(v.get('before_ms'))} → {_msnum(v.get('after_ms'))}"
                               f" ({_speedup(v.get('before_ms'), v.get('after_ms'))})")
                rows.append(row)
            s.tables.append(Table(["pass"] + [f"predicted ms, {_target(t)}" for t in targets], rows))
        secs.append(s)

    for p in passes:
        fid = p.get("fidelity") or {}
        fd = p.get("first_divergence")
        if not fid and not fd:
            continue
        secs.append(_fidelity_section(fid, f"Verification: {p.get('name')}", fd, verbose))
    cum = r.get("cumulative") or {}
    if cum.get("metrics") or cum.get("dropped"):
        s = _fidelity_section(cum, "Cumulative: final model vs the original (test split)", None, verbose)
        s.lines += [f"dropped {d.get('pass')}: {d.get('reason')}" for d in cum.get("dropped") or []]
        secs.append(s)

    secs += _latency_sections(r.get("latency") or {})
    m = r.get("measured")
    if m:
        s = Section("Measured latency (CPU, this machine, interleaved A/B)")
        pred = (r.get("latency") or {}).get("cpu") or {}
        has_pred = bool(pred.get("before_ms"))
        header = ["", "median", "p90"] + (["predicted, CPU profile"] if has_pred else [])
        rows = [[side, _ms(m.get(f"{side}_ms")), _ms(m.get(f"{side}_p90_ms"))]
                + ([_ms(pred.get(f"{side}_ms"))] if has_pred else []) for side in ("before", "after")]
        s.tables.append(Table(header, rows))
        ratio = m.get("ratio")
        s.lines.append(f"after/before time ratio {_num(ratio)} (× before), {m.get('runs', '–')} runs per model")
        if has_pred:  # how far to trust the predictions: the cpu profile next to the measurement
            s.lines.append(f"predicted after/before ratio on the cpu profile: "
                           f"{_num(pred['after_ms'] / pred['before_ms'])} (× before)")
        secs.append(s)
    if r.get("op_counts"):
        secs.append(_op_count_section(r["op_counts"], verbose))
    if verbose:
        for p in passes:
            if p.get("sites"):
                s = Section(f"Sites: {p.get('name')}")
                s.tables.append(Table(["node", "op", "decision", "details"], [
                    [x.get("node"), x.get("op"), x.get("decision"),
                     ", ".join(f"{k}={_num(v)}" for k, v in (x.get("details") or {}).items())]
                    for x in p["sites"]], max_lines=3))
                secs.append(s)
    if r.get("kind") == "optimize":
        secs += _optimize_sections(r, verbose)
    notes = list(r.get("notes") or [])
    for p in passes:
        notes += [f"{p.get('name')}: {n}" for n in p.get("notes") or []]
    if notes:
        secs.append(Section("Notes", lines=notes))
    return secs


def _optimize_sections(r: dict, verbose: bool) -> list[Section]:
    """An optimize run's own details: the validation split it decided on, the search, int8."""
    secs = []
    val = r.get("validation") or {}
    if val.get("metrics"):
        secs.append(_fidelity_section(val, "Validation split: chosen model vs the original (the search decided on it)",
                                      None, verbose))
    srch = r.get("search") or {}
    if srch:
        s = Section("Search (optimize)")
        s.lines.append(f"{srch.get('evaluations', 0)} candidate evaluation(s) in {_num(srch.get('seconds'))} s "
                       f"({srch.get('executor', '?')}, {srch.get('workers', 1)} worker(s)); "
                       f"{len(r.get('pareto') or [])} Pareto point(s); chosen: {r.get('chosen')}")
        log = list(srch.get("log") or [])
        s.lines += log if verbose else log[:12] + ([f"… {len(log) - 12} more (-v)"] if len(log) > 12 else [])
        secs.append(s)
    q = r.get("int8")
    if isinstance(q, dict):
        s = Section("int8")
        s.lines.append(("on, setting " + json.dumps(q.get("setting"), default=str)
                        + f", {len(q.get('float_ops') or [])} op(s) kept in float") if q.get("enabled")
                       else f"off: {q.get('reason') or 'no setting within budget and faster'}")
        if q.get("settings_tried"):
            s.lines.append(f"{len(q['settings_tried'])} setting(s) tried")
        secs.append(s)
    return secs


def _headline_gates(r: dict) -> list[str]:
    """Headline lines: the cumulative gate, overlapping inputs, targets predicted slower, measured slowdown."""
    lines = []
    cum = r.get("cumulative") or {}
    if cum.get("skipped"):
        lines.append(f"cumulative check (final vs original, test split): skipped ({cum['skipped']})")
    elif "passed" in cum:
        verdict = "PASSED" if cum["passed"] else "FAILED"
        msg = str(cum.get("message", "")).split("split: ", 1)[-1]  # the line already names the split
        lines.append(f"cumulative check (final vs original, {cum.get('split', 'test')} split): {verdict} — {msg}")
        for d in cum.get("dropped") or []:
            lines.append(f"dropped at the cumulative check: {d.get('pass')}")
    inputs = r.get("inputs") or {}
    if isinstance(inputs, dict) and any(k in inputs for k in ("calibration", "validation", "test")):
        lines.append("inputs: " + "; ".join(f"{k} {', '.join(map(str, inputs.get(k) or [])) or '–'}"
                                             for k in ("calibration", "validation", "test")))
        if inputs.get("overlap"):
            lines.append("WARNING: --allow-overlap: the splits share images, so the gates and the headline "
                         "fidelity are measured on images the passes were fitted on")
    slower = [t for t, v in (r.get("latency") or {}).items() if isinstance(v, dict) and v.get("slower")]
    if slower:
        lines.append(f"WARNING: predicted slower than the input on {', '.join(_target(t) for t in slower)}")
    if (r.get("measured") or {}).get("slower"):
        lines.append("WARNING: measured CPU slowdown beyond noise (see Notes)")
    return lines


def _pass_targets(passes: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for p in passes:
        for t in p.get("latency") or {}:
            seen[t] = None
    return list(seen)


def _gate_summary(g: dict) -> str:
    if not g:
        return "–"
    if g.get("skipped"):
        return f"skipped ({g['skipped']})"
    if "passed" not in g:
        return "–"
    return f"{'passed' if g['passed'] else 'FAILED'} ({g.get('gate', '?')})"


def _pictures(fid: dict) -> list[tuple[str, str]]:
    """Picture (caption, path) pairs from a verification dict: rewriter.pictures' {"before_png": path, ...},
    a {caption: path} dict, or a list of paths / {"path", "caption"} dicts."""
    pics = fid.get("pictures") or []
    if isinstance(pics, dict):
        image = pics.get("image")
        out = []
        for k, v in pics.items():
            if isinstance(v, str) and Path(v).suffix.lower() in (".png", ".jpg", ".jpeg"):
                what = k.removesuffix("_png").replace("_", " ")
                rng = pics.get("range") if what in ("before", "after") else None
                if what == "error" and pics.get("error_max") is not None:
                    rng = [0, pics["error_max"]]
                caption = f"{image + ': ' if image else ''}{'|error|' if what == 'error' else 'depth ' + what}"
                if rng:
                    caption += f" (colour scale {_num(rng[0])} … {_num(rng[1])} output units)"
                out.append((caption, v))
        return out
    out = []
    for i, p in enumerate(pics):
        if isinstance(p, dict):
            path = p.get("path") or p.get("file") or ""
            out.append((str(p.get("caption") or p.get("name") or Path(path).stem), str(path)))
        else:
            out.append((Path(str(p)).stem.replace("_", " ") or f"picture {i + 1}", str(p)))
    return out


_GATE_KEYS = {"passed", "gate", "metrics", "message", "needed", "inputs", "pictures", "units", "skipped",
              "budget", "notes", "images", "runtimes", "first_divergence", "before", "after", "ground_truth",
              "split", "dropped", "passes"}
_METRIC_ORDER = ("delta1", "absrel", "rel_l2", "rel_max", "max_abs", "psnr", "cosine")


def _fidelity_section(g: dict, title: str, first_divergence: dict | None = None,
                      verbose: bool = False) -> Section:
    s = Section(title)
    if g.get("skipped"):
        s.lines.append(f"verification skipped ({g['skipped']})")
    if "passed" in g:
        s.lines.append(f"gate: {g.get('gate', '?')} — {'PASSED' if g['passed'] else 'FAILED'}")
    if g.get("message"):
        s.lines.append(str(g["message"]))
    if g.get("inputs"):
        s.lines.append(f"inputs: {g['inputs']}" + (f" ({g['split']} split)" if g.get("split") else ""))
    units = g.get("units") or {}
    metrics = g.get("metrics") or {}
    budget, needed = g.get("budget") or {}, g.get("needed") or {}
    unit = lambda k: units.get(k) or _metric_unit(k)
    if isinstance(metrics.get("mean"), dict) or isinstance(metrics.get("worst"), dict):
        mean, worst = metrics.get("mean") or {}, metrics.get("worst") or {}
        worst_img = metrics.get("worst_image") or {}
        names = sorted(set(mean) | set(worst), key=lambda k: (_METRIC_ORDER.index(k)
                                                              if k in _METRIC_ORDER else 99, k))
        s.tables.append(Table(
            ["metric", "mean", "worst", "worst image", "unit", "budget", "needed to pass"],
            [[k, _num(mean.get(k)), _num(worst.get(k)), str(worst_img.get(k, "–")), unit(k),
              _num(budget[k]) if k in budget else "", _num(needed[k]) if k in needed else ""] for k in names],
            {1, 2, 5, 6}))
        per_image = metrics.get("per_image") or []
        if verbose and per_image:
            cols = [k for k in names if any(k in row for row in per_image)][:6]
            s.tables.append(Table(["image"] + [f"{k} ({unit(k)})" for k in cols],
                                  [[str(row.get("image", i))] + [_num(row.get(k)) for k in cols]
                                   for i, row in enumerate(per_image)], set(range(1, len(cols) + 1))))
    else:
        flat = [(k, v) for k, v in _flat(metrics) if not (isinstance(v, list) and v and isinstance(v[0], dict))]
        if flat:
            rows = [[k, _num(v) if not isinstance(v, list) else ", ".join(_num(x) for x in v), unit(k),
                     _num(needed[k]) if k in needed else ""] for k, v in flat]
            s.tables.append(Table(["metric", "value", "unit", "needed to pass"], rows, {1, 3}))
        elif needed:
            s.tables.append(Table(["needed to pass", "value", "unit"],
                                  [[k, _num(v), unit(k)] for k, v in needed.items()], {1}))
    # anything else the verification reported that is a plain scalar (runtime, seconds, tolerance, ...)
    extras = [(k, v) for k, v in g.items() if k not in _GATE_KEYS and isinstance(v, (str, int, float, bool))]
    if extras:
        s.lines.append("; ".join(f"{k}: {_num(v)}" + (f" {_metric_unit(k)}" if _metric_unit(k) != "–" else "")
                                 for k, v in extras))
    fd = first_divergence or g.get("first_divergence")
    if fd:
        s.lines.append(f"first divergence: node {fd.get('node')} ({fd.get('op', '?')}), pass "
                       f"{fd.get('pass') or '–'}, error {_num(fd.get('error'))} (relative)"
                       + (f", tensor {fd['tensor']}" if fd.get("tensor") else ""))
    s.lines += [f"note: {n}" for n in g.get("notes") or []]
    s.pictures = _pictures(g)
    return s


def _latency_sections(lat: dict) -> list[Section]:
    if not lat:
        return []
    s = Section("Predicted latency (cost model, per target profile)")
    rows = []
    for t, v in lat.items():
        if not isinstance(v, dict):
            continue
        fps = (f"{_num(v.get('fps_before'))} → {_num(v.get('fps_after'))}"
               if v.get("fps_before") is not None or v.get("fps_after") is not None else "–")
        share = (f"{_share(v.get('frame_share_before'))} → {_share(v.get('frame_share_after'))}"
                 if v.get("frame_share_before") is not None else "–")
        rows.append([_target(t), _ms(v.get("before_ms")), _ms(v.get("after_ms")),
                     _speedup(v.get("before_ms"), v.get("after_ms")), fps, share])
    s.tables.append(Table(["target profile", "before", "after", "speedup", "frames/s", "share of frame (%)"],
                          rows, {1, 2, 3, 4, 5}))
    units_rows = []
    for t, v in lat.items():
        if not isinstance(v, dict):
            continue
        ub, ua = v.get("by_unit_before") or {}, v.get("by_unit_after") or {}
        for unit_name in sorted(set(ub) | set(ua)):
            units_rows.append([_target(t), unit_name.upper(), _ms(ub.get(unit_name)), _ms(ua.get(unit_name))])
        if v.get("per_pass_delta_ms"):
            s.lines.append(f"{_target(t)}: change per pass " + ", ".join(
                f"{k} {float(d):+.3f} ms" for k, d in v["per_pass_delta_ms"].items() if d is not None))
    if units_rows:
        s.tables.append(Table(["target profile", "engine", "before", "after"], units_rows, {2, 3}))
    for t, v in lat.items():
        unit, items = _layer_items(v.get("top_changed") if isinstance(v, dict) else None)
        if items:
            s.bars.append(Bars(f"Per-layer predicted latency, target profile {_target(t)}", unit, items))
    return [s]


def _share(v: Any) -> str:
    if v is None:
        return "–"
    try:
        return f"{float(v) * 100:.1f}" if float(v) <= 1.5 else f"{float(v):.1f}"
    except (TypeError, ValueError):
        return str(v)


def _layer_items(top: Any) -> tuple[str, list[tuple[str, float | None, float | None]]]:
    """Cost-model per-layer changes → (unit, [(label, before, after)]); tolerant of the item shape
    (``before_ms``/``after_ms`` or ``before_us``/``after_us``, optional ``op``, ``pass``, ``status``)."""
    items = [it for it in top or [] if isinstance(it, dict)]
    unit = "µs" if any("before_us" in it or "after_us" in it for it in items) else "ms"
    suffix = "_us" if unit == "µs" else "_ms"
    out = []
    for it in items:
        name = it.get("node") or it.get("name") or it.get("layer") or "?"
        extra = ", ".join(str(x) for x in (it.get("op") or it.get("type"), it.get("status")) if x)
        label = f"{name} ({extra})" if extra else str(name)
        before, after = it.get("before" + suffix), it.get("after" + suffix)
        if before is None and after is None and it.get("delta" + suffix) is not None:
            before, after = 0.0, it["delta" + suffix]
        out.append((label, before, after))
    return unit, out


def _op_count_section(counts: dict, verbose: bool) -> Section:
    s = Section("Op counts (nodes; constants are weights, not ops)")
    rows = []
    tb = ta = 0
    for op, (b, a) in sorted(counts.items()):
        tb, ta = tb + b, ta + a
        if verbose or a != b:
            rows.append([op, b, a, f"{a - b:+d}" if a != b else "0"])
    if not verbose and len(rows) < len(counts):
        s.lines.append(f"{len(counts) - len(rows)} op type(s) unchanged (-v lists all)")
    rows.append(["total", tb, ta, f"{ta - tb:+d}" if ta != tb else "0"])
    s.tables.append(Table(["op", "before", "after", "change"], rows, {1, 2, 3}))
    return s


# ---- sections: diff report -------------------------------------------------------------------------------
def _diff_sections(r: dict, verbose: bool) -> list[Section]:
    secs = []
    b, a = r.get("before") or {}, r.get("after") or {}
    head = Section("Diff")
    head.lines.append(f"before: {b.get('model', '?')} ({b.get('format', '?')}, {b.get('nodes', '–')} ops)")
    head.lines.append(f"after:  {a.get('model', '?')} ({a.get('format', '?')}, {a.get('nodes', '–')} ops)")
    head.lines.append(f"compared as {str(r.get('compared_as', '?')).upper()} graphs: "
                      f"{r.get('matched', '–')} ops matched ({len(r.get('renamed') or [])} renamed), "
                      f"{len(r.get('changed') or [])} changed, {len(r.get('removed') or [])} removed, "
                      f"{len(r.get('added') or [])} added")
    secs.append(head)
    if r.get("op_counts"):
        secs.append(_op_count_section(r["op_counts"], verbose))

    if r.get("changed"):
        s = Section("Changed nodes")
        rows = []
        for c in r["changed"]:
            what = [f"{k}: {_val(v[0])} → {_val(v[1])}" for k, v in (c.get("attributes") or {}).items()]
            for w in c.get("weights") or []:
                if w.get("before_shape") != w.get("after_shape"):
                    what.append(f"{w['input']} shape {_shape(w.get('before_shape'))} → {_shape(w.get('after_shape'))}")
                else:
                    what.append(f"{w['input']} values changed (max {_num(w.get('max_abs_change'))} abs, "
                                f"{_num(w.get('max_rel_change'))} × largest weight)")
            name = c["before"] if c["before"] == c["after"] else f"{c['before']} → {c['after']}"
            rows.append([name, c.get("op"), "; ".join(what), c.get("tag") or "–"])
        s.tables.append(Table(["node", "op", "change", "pass"], rows))
        secs.append(s)
    if r.get("replaced"):
        s = Section("Replaced (removed nodes → the nodes that took their place)")
        s.tables.append(Table(["removed", "added"], [[", ".join(x["removed"]), ", ".join(x["added"])]
                                                     for x in r["replaced"]]))
        secs.append(s)
    for key, title in (("removed", "Removed nodes"), ("added", "Added nodes")):
        if r.get(key):
            s = Section(title)
            rows = [[n.get("name"), n.get("description") or n.get("op"),
                     ", ".join(_shape(w) for w in n.get("weights") or []) or "–",
                     _num(n.get("params")), _si(n.get("macs"), "MAC") if n.get("macs") else "–"]
                    + ([n.get("tag") or "–"] if key == "added" else []) for n in r[key]]
            headers = ["node", "op", "weights (shape)", "params", "MACs"] + (["pass"] if key == "added" else [])
            s.tables.append(Table(headers, rows, {3, 4}))
            secs.append(s)
    if r.get("weight_changes"):
        s = Section("Weight shape changes")
        s.tables.append(Table(["node", "op", "input", "before", "after"], [
            [w.get("node"), w.get("op"), w.get("input"), _shape(w.get("before_shape")), _shape(w.get("after_shape"))]
            for w in r["weight_changes"]]))
        secs.append(s)
    totals = Section("Totals")
    rows = []
    for key, label in (("params", "parameters"), ("macs", "multiply-accumulates")):
        v = r.get(key)
        if isinstance(v, dict):
            unit = v.get("unit", "")
            rows.append([label, _si(v.get("before"), unit), _si(v.get("after"), unit),
                         _pct(v.get("before"), v.get("after"))])
    if rows:
        totals.tables.append(Table(["total", "before", "after", "change"], rows, {1, 2, 3}))
        macs = r.get("macs") or {}
        if macs.get("scope"):
            totals.lines.append(f"MACs: {macs['scope']}")
        if macs.get("unknown_nodes"):
            totals.lines.append(f"nodes with unknown (dynamic) shapes left out of MACs: before "
                                f"{macs['unknown_nodes'][0]}, after {macs['unknown_nodes'][1]}")
        secs.append(totals)
    by_pass = (r.get("tags") or {}).get("by_pass") or {}
    if by_pass:
        s = Section("Pass tags (nodes made or changed by each pass, in the after model)")
        s.tables.append(Table(["pass", "nodes", "names"], [
            [k, len(v), ", ".join(v[:8]) + (f", … (+{len(v) - 8})" if len(v) > 8 else "")]
            for k, v in by_pass.items()], {1}))
        secs.append(s)
    if r.get("fidelity"):
        secs.append(_fidelity_section(r["fidelity"], "Output fidelity (before vs after)", None, verbose))
    secs += _latency_sections(r.get("latency") or {})
    if verbose and r.get("renamed"):
        s = Section("Renamed (matched by connectivity)")
        s.tables.append(Table(["before", "after", "op"], [[x["before"], x["after"], x["op"]] for x in r["renamed"]]))
        secs.append(s)
    if r.get("notes"):
        secs.append(Section("Notes", lines=list(r["notes"])))
    return secs


def _shape(s: Any) -> str:
    return "–" if s is None else "[" + "×".join(str(d) for d in s) + "]"


def _val(v: Any) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_num(x) for x in v) + "]"
    return _num(v)


def sections(report: Report, verbose: bool = False) -> list[Section]:
    """The report (rewrite, optimize or diff) as neutral sections."""
    report = document(report)
    is_diff = report.get("kind") == "diff" or ("passes" not in report and ("changed" in report or "added" in report))
    return _diff_sections(report, verbose) if is_diff else _rewrite_sections(report, verbose)


# ---- plain text --------------------------------------------------------------------------------------------
def _cut(s: str, n: int) -> str:
    if len(s) <= n:
        return s
    if n <= 3:
        return s[:n]
    head = (n - 1) // 2
    return s[:head] + "…" + s[len(s) - (n - 1 - head):]


def _text_table(t: Table, width: int = WIDTH) -> list[str]:
    cells = [[str(h) for h in t.headers]] + [[_num(c) if not isinstance(c, str) else c for c in row]
                                             for row in t.rows]
    ncol = len(t.headers)
    widths = [max(len(r[i]) if i < len(r) else 0 for r in cells) for i in range(ncol)]
    budget = width - 2 - 2 * (ncol - 1)
    while sum(widths) > budget:  # narrow the widest column until the table fits; its cells wrap
        i = max(range(ncol), key=lambda k: widths[k])
        if widths[i] <= 6:
            break
        widths[i] -= 1
    lines = []
    for r_i, row in enumerate(cells):
        wrapped = [_wrap(row[i] if i < len(row) else "", widths[i]) for i in range(ncol)]
        if t.max_lines and r_i:
            wrapped = [w if len(w) <= t.max_lines else
                       w[:t.max_lines - 1] + [w[t.max_lines - 1][:widths[i] - 1] + "…"] for i, w in enumerate(wrapped)]
        for k in range(max(len(w) for w in wrapped)):
            parts = []
            for i in range(ncol):
                c = wrapped[i][k] if k < len(wrapped[i]) else ""
                parts.append(c.rjust(widths[i]) if (i in t.numeric and r_i) else c.ljust(widths[i]))
            lines.append(("  " + "  ".join(parts)).rstrip())
        if r_i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def _wrap(s: str, n: int) -> list[str]:
    """Greedy wrap to n characters, breaking after spaces and after '/' (node paths), else hard."""
    if len(s) <= n:
        return [s]
    lines, cur = [], ""
    for tok in re.split(r"(?<=[ /])", s):
        while len(tok) > n:  # a token longer than the column: hard-cut it
            if cur:
                lines.append(cur.rstrip())
                cur = ""
            lines.append(tok[:n])
            tok = tok[n:]
        if len(cur) + len(tok.rstrip()) > n:
            lines.append(cur.rstrip())
            cur = ""
        cur += tok
    if cur.strip():
        lines.append(cur.rstrip())
    return lines or [""]


def _text_bars(b: Bars, width: int = WIDTH) -> list[str]:
    vals = [v for _, x, y in b.items for v in (x, y) if v is not None]
    top = max(vals) if vals else 0.0
    label_w = min(44, max((len(lbl) for lbl, _, _ in b.items), default=10))
    bar_w = max(10, width - label_w - 28)
    out = [f"  {b.title} ({b.unit}); ░ before, █ after"]
    for label, x, y in b.items:
        for mark, v, tag in (("░", x, "before"), ("█", y, "after ")):
            n = 0 if not v or top <= 0 else max(1, round(v / top * bar_w))
            name = (label if len(label) <= label_w else "…" + label[-(label_w - 1):]) if tag == "before" else ""
            out.append(f"  {name:<{label_w}} {tag} {mark * n} {_num(v)} {b.unit}".rstrip())
    return out


def render_text(report: Report, verbose: bool = False) -> str:
    """Plain-text report readable at 100 columns (rewrite or diff report): the headline (≤ 8 lines) first;
    the detail sections (per pass, per layer, per image) only with ``verbose``."""
    report = document(report)
    out: list[str] = []
    # not wrapped, so the headline stays ≤ 8 lines; a longer line is cut (the files have it whole)
    out += [line if len(line) <= WIDTH else line[:WIDTH - 1] + "…" for line in headline(report)]
    if not verbose:
        return "\n".join(out + ["(details: -v, or the --report/--md/--html files)"]) + "\n"
    out.append("")
    for s in _with_decisions(report, sections(report, verbose)):
        out.append(s.title)
        out.append("=" * min(len(s.title), WIDTH))
        for line in s.lines:
            out += ["  " + part for part in _wrap(line, WIDTH - 2)]
        for t in s.tables:
            out += _text_table(t)
        for b in s.bars:
            out += _text_bars(b)
        for cap, path in s.pictures:
            out.append(f"  picture: {cap}: {path}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


# ---- Markdown ----------------------------------------------------------------------------------------------
def _with_decisions(report: dict, secs: list[Section]) -> list[Section]:
    """The sections with the per-site decision table second (text and Markdown; the HTML places it itself)."""
    decisions = decision_table(report)
    return secs[:1] + [Section("Per-site decisions", tables=[decisions])] + secs[1:] if decisions.rows else secs


def _md_cell(c: Any) -> str:
    return (c if isinstance(c, str) else _num(c)).replace("|", "\\|").replace("\n", " ")


def render_markdown(report: Report, verbose: bool = True) -> str:
    """The report as GitHub-flavoured Markdown (pictures linked by path): the headline, the per-site decision
    table, then every section."""
    report = document(report)
    secs = sections(report, verbose)
    out = [f"# {_title(report, secs)}", ""] + [f"- {_md_cell(line)}" for line in headline(report)] + [""]
    secs = _with_decisions(report, secs)
    for s in secs:
        out += [f"## {s.title}", ""]
        out += [f"{line}  " for line in s.lines]
        if s.lines:
            out.append("")
        for t in s.tables + [_bars_table(b) for b in s.bars]:
            out.append("| " + " | ".join(_md_cell(h) for h in t.headers) + " |")
            out.append("|" + "|".join("---:" if i in t.numeric else "---" for i in range(len(t.headers))) + "|")
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            out.append("")
        for cap, path in s.pictures:
            out += [f"![{cap}]({path})", ""]
    return "\n".join(out).rstrip() + "\n"


def _bars_table(b: Bars) -> Table:
    return Table([b.title, f"before ({b.unit})", f"after ({b.unit})", "change"],
                 [[lbl, _num(x), _num(y), _pct(x, y)] for lbl, x, y in b.items], {1, 2, 3})


# ---- HTML --------------------------------------------------------------------------------------------------
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:16px auto;max-width:1300px;
color:#1d232b;padding:0 16px}
h1{font-size:22px;margin:4px 0}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #d6dbe1;padding-bottom:3px}
table{border-collapse:collapse;margin:8px 0 14px;font-size:13px}
th,td{border:1px solid #d6dbe1;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}p{margin:4px 0}
figure{display:inline-block;margin:6px 12px 6px 0}figure img{max-width:480px;border:1px solid #d6dbe1}
figcaption{font-size:12px;color:#555}.missing{color:#a33}
.chart text{font:11px system-ui,sans-serif}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0 12px}
.card{border:1px solid #d6dbe1;border-left:6px solid #8a96a3;border-radius:6px;padding:6px 10px;min-width:170px;
flex:1 1 170px;max-height:150px;overflow:hidden;font-size:13px}
.card.wide{flex:1.6 1 260px}.card.ok{border-left-color:#2e8b57}.card.bad{border-left-color:#c0392b}
.card .big{font-size:20px;font-weight:600}
.card .line{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.k{color:#555;font-size:12px}
.err{color:#a33;font-weight:600}pre{white-space:pre-wrap;font-size:12px;background:#f6f7f9;padding:8px}
.top{display:flex;gap:16px;flex-wrap:wrap}.top>section{flex:1 1 420px}
.pics .row{display:flex;gap:8px;flex-wrap:wrap}.pics figure{margin:4px 0}
.pics figure img{max-height:170px;max-width:260px;width:auto;height:auto}
.top .pics figure img{max-height:150px;max-width:150px}.top .pics .row{flex-wrap:nowrap}
.top .cbar{width:200px;height:26px;margin-right:12px}.top #pareto-svg{width:100%;max-width:560px;height:auto}
#pictures h2,#pareto h2{margin-top:8px}#pareto img{max-height:300px;max-width:100%}
.cbar{margin-right:24px}.cbar text{font:11px system-ui,sans-serif}.scroll{overflow-x:auto}
figure.wide img{max-width:100%;max-height:640px}details{margin:4px 0}summary{cursor:pointer;font-weight:600}
"""


def _img_tag(cap: str, path: str, base: Path | None = None) -> str:
    p = Path(path)
    if not p.is_absolute() and not p.exists() and base is not None:  # relative to the report's folder
        p = base / p
    try:
        data = p.read_bytes()
    except OSError:
        return f'<p class="missing">picture not found: {html.escape(path)}</p>'
    mime = mimetypes.guess_type(p.name)[0] or "image/png"
    b64 = base64.b64encode(data).decode()
    return (f'<figure><img alt="{html.escape(cap)}" src="data:{mime};base64,{b64}">'
            f"<figcaption>{html.escape(cap)}</figcaption></figure>")


def _legend(x: int, color: str, text: str) -> str:
    return f'<rect x="{x}" y="22" width="10" height="8" fill="{color}"/><text x="{x + 14}" y="30">{text}</text>'


def _svg_bars(b: Bars) -> str:
    """Horizontal before/after bar chart as inline SVG."""
    label_w, bar_w, row_h = 300, 520, 30
    vals = [v for _, x, y in b.items for v in (x, y) if v is not None]
    top = max(vals) if vals else 1.0
    top = top or 1.0
    h = 40 + row_h * len(b.items)
    parts = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{label_w + bar_w + 110}" '
             f'height="{h}" role="img" aria-label="{html.escape(b.title)}">',
             f'<text x="0" y="14" font-weight="bold">{html.escape(b.title)} ({html.escape(b.unit)})</text>',
             _legend(label_w, "#b8c2cc", "before"), _legend(label_w + 70, "#2f6fb3", "after")]
    for i, (label, x, y) in enumerate(b.items):
        y0 = 40 + i * row_h
        short = label if len(label) <= 46 else "…" + label[-45:]  # the tail names the layer
        parts.append(f'<text x="0" y="{y0 + 16}"><title>{html.escape(label)}</title>{html.escape(short)}</text>')
        for j, (v, color) in enumerate(((x, "#b8c2cc"), (y, "#2f6fb3"))):
            w = 0 if not v else max(1.0, v / top * bar_w)
            yy = y0 + 3 + j * 12
            parts.append(f'<rect x="{label_w}" y="{yy}" width="{w:.1f}" height="10" fill="{color}"/>')
            parts.append(f'<text x="{label_w + w + 4:.1f}" y="{yy + 9}">{_num(v)} {html.escape(b.unit)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _cards(report: dict) -> str:
    """Headline cards: one per target (fps before → after, frame share, fits), fidelity, kept/dropped."""
    cards = []
    lat = report.get("latency") or {}
    for t, v in lat.items():
        if not isinstance(v, dict) or v.get("after_ms") is None:
            continue
        a = float(v["after_ms"])
        fb = v.get("fps_before") if v.get("fps_before") is not None else _fps(v.get("before_ms"))
        fa = v.get("fps_after") if v.get("fps_after") is not None else _fps(a)
        fit = _fits_phrase(a, v.get("alongside"))
        ok = "NOT" not in fit and not v.get("slower")
        cards.append(f'<div class="card {"ok" if ok else "bad"}"><div class="k">{html.escape(_target(t))}</div>'
                     f'<div class="big">{_fpsnum(fb)} → {_fpsnum(fa)} fps</div>'
                     f'<div>{_msnum(v.get("before_ms"))} → {_msnum(a)} ms, {a / FRAME_MS * 100:.0f} % of the '
                     f'{FRAME_MS:.2f} ms frame</div><div class="k">{html.escape(fit)}'
                     f'{"; predicted slower" if v.get("slower") else ""}</div></div>')
    cum = report.get("cumulative") or {}
    fid = _fidelity_headline(cum)
    if fid:
        ok = bool(cum.get("passed"))
        head, _, rest = fid.partition(": ")
        verdict = "within budget" if ok else ("not checked" if cum.get("skipped") else "OVER BUDGET")
        cards.append(f'<div class="card wide {"ok" if ok else "bad"}"><div class="k">{html.escape(head)}</div>'
                     f'<div class="big">{verdict}'
                     f'</div><div>{html.escape(rest.split(" — ", 1)[-1])}</div></div>')
    passes = [p for p in report.get("passes") or [] if isinstance(p, dict)]
    if passes:
        kept = [f"{p.get('name')} ({p.get('sites_changed', 0)} sites)" for p in passes if p.get("status") in _KEPT]
        dropped = [f"{p.get('name')} — {_pass_reason(p, report.get('cumulative'))}" for p in passes
                   if p.get("status") not in _KEPT]
        shown = dropped[:3] + ([f"… {len(dropped) - 3} more (Passes, below)"] if len(dropped) > 3 else [])
        cards.append('<div class="card wide"><div class="k">passes</div>'
                     f'<div class="big">{len(kept)} kept, {len(dropped)} dropped</div>'
                     f'<div>kept: {html.escape(", ".join(kept) or "nothing")}</div>'
                     + "".join(f'<div class="line">dropped: {html.escape(d)}</div>' for d in shown) + "</div>")
    if report.get("kind") == "diff" or ("passes" not in report and ("changed" in report or "added" in report)):
        for line in diff_headline(report)[:1]:
            cards.insert(0, f'<div class="card wide"><div class="k">structure</div><div>{html.escape(line)}'
                            "</div></div>")
    return f'<div id="headline" class="cards">{"".join(cards)}</div>' if cards else ""


def _errors_html(report: dict) -> str:
    """Each error as one readable sentence; the traceback only in a collapsed block."""
    out = []
    items = [(p.get("name"), p.get("error"), p.get("traceback")) for p in report.get("passes") or []
             if isinstance(p, dict) and (p.get("error") or p.get("traceback"))]
    if report.get("error"):
        items.insert(0, (None, report["error"], report.get("traceback")))
    for name, err, tb in items:
        who = f"Pass {name} failed: " if name else "Error: "
        out.append(f'<p class="err">{html.escape(who + first_sentence(err or "see the traceback", 240))}</p>')
        if tb:
            out.append(f"<details><summary>traceback ({html.escape(str(name or 'run'))})</summary>"
                       f"<pre>{html.escape(str(tb))}</pre></details>")
    return "".join(out)


def _picture_sets(report: dict) -> list[dict]:
    """Picture dicts (rewriter.pictures) for the worst and a typical image: report["pictures"] (a dict or a
    list of dicts), else the cumulative check's, else the last pass gate's."""
    for src in (report.get("pictures"), (report.get("cumulative") or {}).get("pictures"),
                (report.get("fidelity") or {}).get("pictures"),
                *[(p.get("fidelity") or {}).get("pictures") for p in reversed(report.get("passes") or [])
                  if isinstance(p, dict)]):
        if isinstance(src, dict) and src.get("before_png"):
            return [src]
        if isinstance(src, list) and src and all(isinstance(x, dict) and x.get("before_png") for x in src):
            return src
    return []


def _colorbar(lo: float, hi: float, label: str) -> str:
    from .pictures import lut as colour_map

    lut = colour_map()
    stops = "".join(f'<stop offset="{i / 15:.3f}" stop-color="#{lut[int(i * 255 / 15)][0]:02x}'
                    f'{lut[int(i * 255 / 15)][1]:02x}{lut[int(i * 255 / 15)][2]:02x}"/>' for i in range(16))
    gid = f"g{abs(hash((lo, hi, label))) % 10**8}"
    return (f'<svg class="cbar" xmlns="http://www.w3.org/2000/svg" width="260" height="34" viewBox="0 0 260 34">'
            f'<defs><linearGradient id="{gid}">{stops}</linearGradient></defs>'
            f'<rect x="0" y="2" width="260" height="12" fill="url(#{gid})"/>'
            f'<text x="0" y="28">{_num(lo)}</text><text x="130" y="28" text-anchor="middle">'
            f'{html.escape(label)}</text><text x="260" y="28" text-anchor="end">{_num(hi)}</text></svg>')


def _pictures_html(report: dict, base: Path | None) -> str:
    sets = _picture_sets(report)
    if not sets:
        return ""
    rows = []
    for ps in sets:
        rng = ps.get("range") or [0, 1]
        role = ps.get("role") or "worst"
        emax = ps.get("error_max") or 0
        head = f"{role} image: {ps.get('image', '?')}"
        figs = "".join(_img_tag(cap, ps[key], base) for cap, key in
                       (("depth before", "before_png"), ("depth after", "after_png"), ("|after − before|", "error_png"))
                       if ps.get(key))
        rows.append(f'<div class="pics"><div class="k">{html.escape(head)}</div><div class="row">{figs}</div>'
                    f'<div class="row">{_colorbar(rng[0], rng[1], "depth (before and after)")}'
                    f'{_colorbar(0.0, emax, "|error|")}</div></div>')
    return '<section id="pictures"><h2>Depth: before | after | |error|</h2>' + "".join(rows) + "</section>"


def _engine_name(e: Any, target: str) -> str | None:
    """An engine as a pass or the cost model reports it: a name, or {target: name | {"engine", "rule"}}."""
    if isinstance(e, dict):
        e = e.get(target, next(iter(e.values()), None) if len(e) == 1 else None)
        if isinstance(e, dict):
            e = e.get("engine")
    return None if e is None else str(e)


def _saved_us(lat: Any, target: str) -> float | None:
    """Predicted µs saved on ``target`` from a site's ``latency_us``: {target: {"saved"} | {"before", "after"}}."""
    v = lat.get(target) if isinstance(lat, dict) else None
    if isinstance(v, dict):
        if isinstance(v.get("saved"), (int, float)):
            return float(v["saved"])
        if isinstance(v.get("before"), (int, float)) and isinstance(v.get("after"), (int, float)):
            return float(v["before"]) - float(v["after"])
    return None


def _exact(pass_name: str) -> bool:
    """Whether a registered pass is exact (interp_deconv, resize_commute) rather than approximate."""
    from .passbase import load_passes

    cls = load_passes().get(pass_name)
    return bool(getattr(cls, "exact", False))


def decision_table(report: Report) -> Table:
    """Per-site decisions of the changed sites: site, pass, choice, engine before → after on the objective (first)
    target, predicted µs saved per target, and the error contribution (the share of the fidelity budget the
    choice uses alone on the validation split; an optimize run measures it, a rewrite shows "–")."""
    report = document(report)
    lat = report.get("latency") or {}
    targets = [t for t in report.get("targets") or lat]
    objective = report.get("objective") or (targets[0] if targets else "")
    engines: dict[str, tuple[Any, Any]] = {}  # the cost model's per-layer engines, for passes that give none
    for ch in (lat.get(objective) or {}).get("top_changed") or [] if isinstance(lat.get(objective), dict) else []:
        if isinstance(ch, dict) and ch.get("node"):
            engines[ch["node"]] = (ch.get("engine_before"), ch.get("engine"))
    rows = []
    for p in report.get("passes") or []:
        if not isinstance(p, dict):
            continue
        status = p.get("status", "")
        for site in p.get("sites") or []:
            d = site.get("details") or {}
            if site.get("will_change") is False or (site.get("will_change") is None and not str(
                    site.get("decision", "")).startswith(("will change", "changed", "applied"))):
                continue  # the table lists the sites a pass changed; the rest are in the detail tables
            choice = site.get("choice") or d.get("choice") or d.get("target_mode") or site.get("decision")
            eb, ea = _engine_name(d.get("engine_before"), objective), _engine_name(
                d.get("engine_after") or d.get("engine"), objective)
            if eb is None and ea is None and site.get("node") in engines:
                eb, ea = engines[site["node"]]
            err = d.get("error_contribution")
            who = site.get("pass") or p.get("name")
            rows.append([site.get("node"), who + ("" if status in _KEPT else f" ({status})"), choice,
                         f"{eb or '–'} → {ea or '–'}" if (eb or ea) else "–"]
                        + [_num(round(v, 1)) if (v := _saved_us(d.get("latency_us"), t)) is not None else "–"
                           for t in targets]
                        + [f"{err * 100:.1f} % of budget" if isinstance(err, (int, float)) else "–"])
    headers = (["site", "pass", "choice", f"engine before → after ({_target(objective)})"]
               + [f"µs saved, {_target(t)}" for t in targets] + ["error contribution"])
    return Table(headers, rows, set(range(4, 5 + len(targets))))


def decision_rows(report: Report) -> list[list[Any]]:
    """The rows of :func:`decision_table`."""
    return decision_table(report).rows


def _table_html(t: Table) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in t.headers)
           + "</tr></thead><tbody>"]
    for row in t.rows:
        out.append("<tr>" + "".join(
            f'<td{" class=n" if i in t.numeric else ""}>{html.escape(c if isinstance(c, str) else _num(c))}'
            "</td>" for i, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _pareto_y(points: list[dict]) -> tuple[str, str, Any]:
    """What the Pareto plot's y axis shows: the share of the budget used (optimize) else the first scalar metric."""
    if points and all(isinstance(p.get("budget_used"), (int, float)) for p in points):
        return "budget_used", "share of the fidelity budget used (validation)", lambda p: float(p["budget_used"])
    metric = next((k for p in points for k, v in (p.get("metrics") or {}).items() if isinstance(v, (int, float))), None)
    if metric is None:
        return "", "", None
    return metric, f"{metric} ({_metric_unit(metric)})", lambda p: float((p.get("metrics") or {}).get(metric, "nan"))


def pareto_svg(points: list[dict], width: int = 560, height: int = 300, chosen: dict | None = None) -> str:
    """Inline SVG of an optimize Pareto front: predicted latency (ms) on the objective target against the share
    of the fidelity budget used (else the first scalar metric); the chosen point in red, the input in grey."""
    pts = [p for p in points if isinstance(p, dict) and p.get("latency_ms") is not None]
    key, ylabel, yof = _pareto_y(pts)
    if not pts or yof is None:
        return ""
    xs = [float(p["latency_ms"]) for p in pts]
    ys = [yof(p) for p in pts]
    extra_x = [float(chosen[k]) for k in ("latency_ms", "input_ms") if chosen and chosen.get(k) is not None]
    extra_y = [float(chosen["budget_used"])] if chosen and key == "budget_used" and chosen.get("budget_used") \
        is not None else []
    x0, x1 = min(xs + extra_x), max(xs + extra_x)
    good = [y for y in ys + extra_y if y == y]
    y0, y1 = (min(good), max(good)) if good else (0.0, 1.0)
    if key == "budget_used":  # the budget line (1.0) is on the plot
        y0, y1 = min(y0, 0.0), max(y1, 1.0)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-6)
    lx0, lx1, ly0, ly1 = x0, x1, y0, y1  # the axis labels show the data's extent
    px, py = (x1 - x0) * 0.05, (y1 - y0) * 0.05  # keep the extreme points off the axes
    x0, x1, y0, y1 = x0 - px, x1 + px, y0 - py, y1 + py
    L, B, R, T = 60, 40, 20, 20
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)  # noqa: E731
    sy = lambda y: height - B - (y - y0) / (y1 - y0) * (height - B - T)  # noqa: E731
    parts = [f'<svg id="pareto-svg" class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="Pareto front">',
             f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="#333"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="#333"/>',
             f'<text x="{(width + L) / 2}" y="{height - 8}" text-anchor="middle">predicted latency (ms)</text>',
             f'<text x="12" y="{(height - B + T) / 2}" transform="rotate(-90 12 {(height - B + T) / 2})" '
             f'text-anchor="middle">{html.escape(ylabel)}</text>',
             f'<text x="{sx(lx0):.1f}" y="{height - B + 14}" text-anchor="middle">{_msnum(lx0)}</text>',
             f'<text x="{sx(lx1):.1f}" y="{height - B + 14}" text-anchor="middle">{_msnum(lx1)}</text>',
             f'<text x="{L - 4}" y="{sy(ly0) + 4:.1f}" text-anchor="end">{_num(ly0)}</text>',
             f'<text x="{L - 4}" y="{sy(ly1) + 4:.1f}" text-anchor="end">{_num(ly1)}</text>']
    if key == "budget_used":
        parts.append(f'<line x1="{L}" y1="{sy(1.0):.1f}" x2="{width - R}" y2="{sy(1.0):.1f}" stroke="#c0392b" '
                     f'stroke-dasharray="5 4"/><text x="{width - R}" y="{sy(1.0) - 4:.1f}" text-anchor="end" '
                     'fill="#c0392b">budget</text>')
    front = sorted((x, y) for x, y in zip(xs, ys) if y == y)
    if len(front) > 1:
        parts.append('<polyline fill="none" stroke="#2f6fb3" stroke-width="1.5" points="'
                     + " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in front) + '"/>')
    for p, x, y in sorted(zip(pts, xs, ys), key=lambda z: z[1]):
        if y != y:
            continue
        tip = ", ".join(f"{k}={v}" for k, v in (p.get("choices") or {}).items()) if isinstance(
            p.get("choices"), dict) else str(p.get("choices", ""))
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#2f6fb3"><title>'
                     f'{_msnum(x)} ms, {html.escape(key)} {_num(y)}: {html.escape(tip[:300])}</title></circle>')
    if chosen and chosen.get("input_ms") is not None:
        cx, cy = sx(float(chosen["input_ms"])), sy(0.0 if key == "budget_used" else ly1)
        parts.append(f'<rect x="{cx - 5:.1f}" y="{cy - 5:.1f}" width="10" height="10" fill="#8a96a3">'
                     f'<title>input: {_msnum(chosen["input_ms"])} ms</title></rect>')
    if extra_y and chosen and chosen.get("latency_ms") is not None:
        cx, cy = sx(float(chosen["latency_ms"])), sy(extra_y[0])
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="8" fill="none" stroke="#c0392b" stroke-width="3">'
                     f'<title>chosen: {_msnum(chosen["latency_ms"])} ms, {_num(extra_y[0])} of the budget'
                     "</title></circle>")
    parts.append(f'<text x="{L + 8}" y="{height - B - 8}" fill="#555">● Pareto point  ○ chosen  ■ input</text>'
                 if chosen else "")
    parts.append("</svg>")
    return "".join(parts)


def _pareto_html(report: dict, base: Path | None) -> str:
    pts = report.get("pareto")
    if not pts and not report.get("pareto_plot"):
        return ""
    body = ""
    if report.get("pareto_plot"):
        body = _img_tag("Pareto front: predicted latency vs fidelity", str(report["pareto_plot"]), base)
        if 'class="missing"' in body:
            body = pareto_svg(pts or [], chosen=report.get("pareto_chosen")) or body
    else:
        body = pareto_svg(pts or [], chosen=report.get("pareto_chosen"))
    rows = [[_msnum(p.get("latency_ms")), _num(p.get("budget_used")),
             ", ".join(f"{k} {_num(v)}" for k, v in _flat(p.get("metrics") or {})),
             json.dumps(p.get("choices"), default=str)[:200]] for p in pts or [] if isinstance(p, dict)]
    table = _table_html(Table(["predicted ms", "budget used", "metrics", "choices"], rows, {0, 1})) if rows else ""
    return (f'<section id="pareto"><h2>Pareto front (optimize)</h2>{body}'
            f"<details><summary>{len(rows)} point(s)</summary>{table}</details></section>")


def _cost_svg_for(report: dict, base: Path | None) -> str:
    """Per-layer latency chart of the output model on the objective (first) target, drawn by rewrite cost."""
    if report.get("cost_svg"):
        return str(report["cost_svg"])
    out = report.get("output")
    targets = list(report.get("targets") or report.get("latency") or [])
    if not out or not targets:
        return ""
    p = Path(out)
    if not p.is_absolute() and not p.exists() and base is not None:
        p = base / p
    if not p.exists():
        return ""
    from .cost.command import cost_report, cost_svg

    try:
        return cost_svg(cost_report(str(p), (targets[0],)), top=20)
    except (RewriteError, ValueError, KeyError):  # the output cannot be costed: the chart is left out
        return ""


def _title(report: dict, secs: list[Section]) -> str:
    if secs and secs[0].title == "Diff":
        return "Diff report"
    return "Optimize report" if report.get("kind") == "optimize" else "Rewrite report"


def render_html(report: Report, verbose: bool = True, base: Path | None = None) -> str:
    """A self-contained HTML page, answer first: headline cards, depth before | after | |error| pictures
    (one colour scale, colour bars), the Pareto plot of an optimize run, the per-site decision table, the
    per-layer latency chart of the objective target, then every detail section collapsed. Errors are one
    sentence; tracebacks are collapsed. Relative picture paths are read from the current folder, else ``base``."""
    report = document(report)
    secs = sections(report, verbose)
    title = _title(report, secs)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{title}</h1>"]
    out.append(_cards(report))
    out.append(_errors_html(report))
    pics, pareto = _pictures_html(report, base), _pareto_html(report, base)
    shown = {str(ps.get(k)) for ps in _picture_sets(report) for k in ("before_png", "after_png", "error_png")}
    if pics and pareto:  # an optimize report: both above the fold, side by side
        out.append(f'<div class="top">{pics}{pareto}</div>')
    else:
        out += [pics, pareto]
    if report.get("diff_picture"):
        out.append('<section id="subgraph"><h2>Changed subgraph</h2>'
                   + _img_tag("changed subgraph: red removed, green added, orange changed, grey their neighbours",
                              str(report["diff_picture"]), base).replace("<figure>", '<figure class="wide">')
                   + "</section>")
    decisions = decision_table(report)
    if decisions.rows:
        out.append('<section id="decisions"><h2>Per-site decisions</h2>' + _table_html(decisions) + "</section>")
    chart = _cost_svg_for(report, base)
    if chart:
        t0 = _target(next(iter(report.get("targets") or report.get("latency") or ["?"])))
        out.append(f'<section id="layers"><h2>Per-layer predicted latency of the output, {html.escape(t0)} '
                   f'(objective target)</h2><div class="scroll">{chart}</div></section>')
    out.append('<h2>Details</h2>')
    for s in secs:
        out.append(f"<details><summary>{html.escape(s.title)}</summary><section>")
        out += [f"<p>{html.escape(first_sentence(line, 400))}</p>" for line in s.lines]
        out += [_table_html(t) for t in s.tables]
        for b in s.bars:
            out.append(_svg_bars(b))
        rest = [(c, p) for c, p in s.pictures if p not in shown]  # the top pictures are not repeated
        if rest:
            out.append("<div>" + "".join(_img_tag(c, p, base) for c, p in rest) + "</div>")
        out.append("</section></details>")
    out.append("</body></html>")
    return "\n".join(x for x in out if x) + "\n"


# ---- atomic writes -----------------------------------------------------------------------------------------
def write_json(report: Report, path: str | os.PathLike) -> Path:
    """Write the report as indented JSON (atomically): a typed report's ``to_json()``."""
    doc = report if isinstance(report, dict) else report.to_json()
    return atomic_write(path, json.dumps(doc, indent=2, default=str) + "\n")


def write_markdown(report: Report, path: str | os.PathLike) -> Path:
    """Write the report as Markdown (atomically)."""
    return atomic_write(path, render_markdown(report))


def write_html(report: Report, path: str | os.PathLike) -> Path:
    """Write the report as a self-contained HTML page (atomically)."""
    return atomic_write(path, render_html(report, base=Path(path).resolve().parent))
