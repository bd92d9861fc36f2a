"""Pure formatting of bench results: number formats, the Markdown tables of RESULTS.md, the Pareto front.

No I/O and no model code here, so it is unit-tested cheaply (tests/test_bench_helpers.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from .machine import describe

TARGETS = ("kmb", "mtl", "cpu")
_STATUS_MARK = {"applied": "", "kept_failed": " gate✗", "rolled_back": " rolled back", "no_change": " no change",
                "failed": " FAILED"}


def fmt(x: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, '–' for missing."""
    if x is None:
        return "–"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}"


def speedup(before_ms: float | None, after_ms: float | None) -> float | None:
    """before / after (> 1 means faster), None when either is missing or zero."""
    if not before_ms or not after_ms:
        return None
    return before_ms / after_ms


def fmt_latency(pred: dict | None) -> str:
    """'12.3→6.1 (2.02×)' for a {before_ms, after_ms} dict."""
    if not pred or pred.get("before_ms") is None:
        return "–"
    s = speedup(pred.get("before_ms"), pred.get("after_ms"))
    return f"{fmt(pred['before_ms'])}→{fmt(pred.get('after_ms'))} ({fmt(s)}×)"


def fmt_pair(d: dict | None, key: str, digits: int = 3) -> str:
    """'mean / worst' of one fidelity metric."""
    if not d or key not in d.get("mean", {}):
        return "–"
    return f"{fmt(d['mean'][key], digits)} / {fmt(d['worst'][key], digits)}"


def fmt_passes(per_pass: list[dict]) -> str:
    """'asym_interp:4, dwpw:18 gate✗, int8:61' — sites changed and any non-applied status."""
    parts = []
    for p in per_pass:
        status = p.get("status") or "?"
        sites = p.get("sites_changed")
        parts.append(f"{p.get('name')}:{sites if sites is not None else '?'}{_STATUS_MARK.get(status, ' ' + status)}")
    return ", ".join(parts) or "–"


def measured_speedup(measured: dict | None) -> float | None:
    """Measured CPU speedup (before/after) from an A/B result: the pairwise ratio when given, else medians."""
    if not measured:
        return None
    ratio = measured.get("ratio")
    if ratio:  # rewriter.cost.measure_ab and the fallback both give after/before, pair by pair
        return 1.0 / ratio
    return speedup(measured.get("before_ms"), measured.get("after_ms"))


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub Markdown table; '|' inside cells is escaped."""
    esc = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


CELL_HEADER = ("pass set", "passes: sites", "kmb pred ms (×)", "mtl pred ms (×)", "cpu pred ×", "cpu meas ×",
               "relL2 mean / worst", "AbsRel mean / worst", "δ1 mean / worst", "GT AbsRel", "GT δ1",
               "tool s", "peak MB")


def cell_row(cell: dict, gt_before: dict | None) -> list[str]:
    """One row of a model's table (an errored cell shows its error in the passes column)."""
    pred = cell.get("predicted") or {}
    tool = cell.get("tool") or {}
    gt = cell.get("gt") or {}
    passes = fmt_passes(cell.get("passes_detail") or [])
    if cell.get("optimize"):
        passes = fmt_optimize(cell["optimize"])
    if cell.get("error"):
        passes = (passes + "; " if passes != "–" else "") + "ERROR: " + _short(cell["error"])
    cpu_pred = pred.get("cpu") or {}
    gtb = gt_before or {}
    gta = gt.get("after") or {}
    return [cell.get("pass_set", "?"), passes, fmt_latency(pred.get("kmb")), fmt_latency(pred.get("mtl")),
            fmt(speedup(cpu_pred.get("before_ms"), cpu_pred.get("after_ms"))),
            fmt(measured_speedup(cell.get("measured"))),
            fmt_pair(cell.get("fidelity"), "rel_l2"), fmt_pair(cell.get("fidelity"), "absrel"),
            fmt_pair(cell.get("fidelity"), "delta1", 4),
            f"{fmt(gtb.get('absrel'))}→{fmt(gta.get('absrel'))}" if gta else "–",
            f"{fmt(gtb.get('delta1'))}→{fmt(gta.get('delta1'))}" if gta else "–",
            fmt(tool.get("rewrite_s")), fmt(tool.get("peak_rss_mb"), 4)]


def fmt_optimize(o: dict) -> str:
    """'optimize: asym_interp 4, dwpw 12, int8 (2 ops float)' for an optimize cell's choices."""
    parts = [f"{k} {v}" for k, v in (o.get("per_pass") or {}).items()]
    if o.get("int8"):
        n = o.get("int8_float_ops") or 0
        parts.append("int8" + (f" ({n} ops float)" if n else ""))
    return "optimize: " + (", ".join(parts) or "nothing taken")


def _short(msg: str, n: int = 160) -> str:
    line = str(msg).strip().splitlines()[0] if str(msg).strip() else ""
    return line if len(line) <= n else line[: n - 1] + "…"


def pareto_front(points: Sequence[tuple[float | None, float | None]]) -> list[int]:
    """Indices of points (speedup, error) not dominated by another (higher-or-equal speedup AND lower-or-equal
    error, one strictly); points with a missing coordinate are never on the front. Sorted by speedup."""
    ok = [i for i, (s, e) in enumerate(points) if s is not None and e is not None]
    front = []
    for i in ok:
        si, ei = points[i]
        dominated = any(points[j][0] >= si and points[j][1] <= ei and (points[j][0] > si or points[j][1] < ei)
                        for j in ok if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


SPLIT_HEADER = ("pass set", "per-pass gates", "calibration δ1 (fitted on)", "validation relL2 / AbsRel / δ1",
                "test relL2 / AbsRel / δ1", "|Δδ1| val−test", "cumulative gate (test)")


def split_row(cell: dict) -> list[str]:
    """One row of the validation-vs-test table: both splits' mean fidelity side by side, and the gates."""
    sf = cell.get("split_fidelity") or {}

    def trio(d: dict | None) -> str:
        mean = (d or {}).get("mean") or {}
        names = ", ".join((d or {}).get("names") or [])
        return (f"{fmt(mean.get('rel_l2'))} / {fmt(mean.get('absrel'))} / {fmt(mean.get('delta1'), 4)}"
                + (f" ({names})" if names else ""))

    dv = ((sf.get("validation") or {}).get("mean") or {}).get("delta1")
    dt = ((sf.get("test") or {}).get("mean") or {}).get("delta1")
    mark = {True: "✓", False: "✗"}
    gates = ", ".join(f"{p.get('name')} {mark.get(p.get('gate_passed'), '–')}" for p in cell.get("passes_detail") or [])
    cum = cell.get("cumulative") or {}
    verdict = ("skipped" if cum.get("skipped") else "passed" if cum.get("passed") else
               "FAILED" if cum.get("passed") is False else "–")
    if cum.get("dropped"):
        verdict += f" (dropped {', '.join(cum['dropped'])})"
    cal = ((sf.get("calibration") or {}).get("mean") or {}).get("delta1")
    return [str(cell.get("pass_set")), gates or "–", fmt(cal, 4), trio(sf.get("validation")), trio(sf.get("test")),
            fmt(abs(dv - dt), 3) if dv is not None and dt is not None else "–", verdict]


def per_pass_rows(cell: dict) -> list[list[str]]:
    """Rows 'pass, status, predicted cpu ms before→after, predicted kmb, mtl' for a multi-pass cell."""
    rows = []
    for p in cell.get("passes_detail") or []:
        lat = p.get("latency") or {}
        rows.append([cell.get("pass_set", "?"), str(p.get("name")), str(p.get("status")),
                     fmt(p.get("seconds")), *(fmt_latency(lat.get(t)) for t in TARGETS)])
    return rows


def render_markdown(results: dict) -> str:
    """RESULTS.md: how it was run, the machine, one table per model with every cell, and the CPU check."""
    b = results.get("bench", {})
    m = results.get("machine", {})
    kind = "quick subset" if b.get("quick") else "subset" if b.get("subset") else "full matrix"
    out = ["# Bench results", "",
           f"Generated by `{b.get('command', 'python -m bench')}` on {b.get('date')} "
           f"({kind}; wall {fmt(b.get('wall_s'), 4)} s, seed "
           f"{b.get('seed')}, commit {m.get('git_commit')}). Raw data: `{b.get('json')}`. "
           "Column meanings: bench/README.md.", "",
           *([] if b.get("finished") else [f"**Run in progress or interrupted: {len(results.get('cells', []))} "
                                           "cells so far.**", ""]),
           f"**Machine:** {describe(m)}. Load average at start {m.get('load_average')}; the machine is shared, "
           "so measured CPU figures are interleaved A/B *ratios* (before/after, medians of pairs); absolute "
           "ms are not comparable across cells.", "",
           "**Packages:** " + ", ".join(f"{k} {v}" for k, v in (m.get("packages") or {}).items() if v), "",
           f"**Images:** calibration/refit on {', '.join(b.get('images', {}).get('calib', []))}"
           + (f"; the tool's validation/test splits from {', '.join(b['images']['heldout'])} (the first N+1, "
              "N = gate images per model)" if b.get("images", {}).get("heldout") else " (also the gates)")
           + "; fidelity "
           f"on held-out {', '.join(b.get('images', {}).get('eval', []))} (the first N of these, N per model) "
           "+ the GT image "
           f"({b.get('images', {}).get('gt')}); GT = Middlebury 2014 motorcycle disparity (inf masked), "
           "prediction aligned by scale+shift.", ""]
    for mk, minfo in (results.get("models") or {}).items():
        cells = [c for c in results.get("cells", []) if c.get("model") == mk]
        spec = minfo.get("spec", {})
        out += [f"## {mk} — {minfo.get('fixture')} ({spec.get('weights')} weights, {spec.get('resolution')})", ""]
        if spec.get("note"):
            out += [f"_{spec['note']}_", ""]
        if minfo.get("fixture_note"):
            out += [f"**Fixture:** {minfo['fixture_note']}", ""]
        if minfo.get("error"):
            out += [f"**Model could not be prepared:** {_short(minfo['error'], 400)}", ""]
        base = minfo.get("baseline") or {}
        gt = base.get("gt") or {}
        out += [f"Original: GT AbsRel {fmt(gt.get('absrel'))}, GT δ1 {fmt(gt.get('delta1'))}; "
                f"fidelity on {base.get('images', '?')} images; {spec.get('runs')} measured A/B runs per side.", ""]
        if cells:
            out += [md_table(CELL_HEADER, [cell_row(c, gt) for c in cells]), ""]
        split_rows = [split_row(c) for c in cells if c.get("split_fidelity")]
        if split_rows:
            out += ["Validation vs test: the final model vs the original on the tool's own validation split (where "
                    "its gates judge) and test split (the headline; the cumulative gate), mean over images; "
                    "refit and calibration never see either (the calibration column is what they fitted on):", "",
                    md_table(SPLIT_HEADER, split_rows), ""]
        multi = [r for c in cells if len(c.get("passes_detail") or []) > 1 for r in per_pass_rows(c)]
        if multi:
            out += ["Per pass inside multi-pass cells (predicted, each pass vs the model before it):", "",
                    md_table(("pass set", "pass", "status", "apply s", "kmb ms", "mtl ms", "cpu ms"), multi), ""]
        if minfo.get("plot"):
            out += [f"![fidelity vs latency, {mk}]({minfo['plot']})", ""]
    out += _cpu_check(results)
    return "\n".join(out).rstrip() + "\n"


def _cpu_check(results: dict) -> list[str]:
    """Predicted vs measured CPU speedup per pass set (rows) and model (columns)."""
    cells = results.get("cells", [])
    models = list((results.get("models") or {}).keys())
    sets = list(dict.fromkeys(c.get("pass_set") for c in cells))
    if not cells:
        return []
    idx = {(c.get("model"), c.get("pass_set")): c for c in cells}
    rows = []
    for s in sets:
        row = [s]
        for mk in models:
            c = idx.get((mk, s))
            if c is None:
                row.append("")
                continue
            cpu = (c.get("predicted") or {}).get("cpu") or {}
            row.append(f"{fmt(speedup(cpu.get('before_ms'), cpu.get('after_ms')))} / "
                       f"{fmt(measured_speedup(c.get('measured')))}")
        rows.append(row)
    return ["## CPU: predicted vs measured speedup", "",
            "Each cell: predicted `cpu` profile speedup / measured OpenVINO CPU speedup (interleaved A/B).", "",
            md_table(("pass set", *models), rows), ""]
