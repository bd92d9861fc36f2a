"""``rewrite optimize``: the fastest model within a fidelity budget, chosen site by site.

``optimize(model, targets=("mtl",), budget=...)`` searches the passes' per-site choices (see
:mod:`.search` for the method and :mod:`.space` for the choices), decides on the validation split, fits on
the calibration split and reports the held-out test split. Returns ``(model, OptimizeReport)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..errors import RewriteError
from ..model import ModelHandle
from ..report import render_text
from .report import OptimizeReport, ParetoPoint, SiteRow
from .search import KEEP, Candidate, Evaluation, Point, Search, SearchResult, SearchSpace, scalar, usage

__all__ = ["OptimizeReport", "ParetoPoint", "SiteRow", "Candidate", "Evaluation", "Point", "Search",
           "SearchResult", "SearchSpace", "optimize", "render_text", "DEFAULT_PASSES", "KEEP"]

TARGETS = ("kmb", "mtl", "cpu")
DEFAULT_PASSES = ("resize_commute", "asym_interp", "interp_deconv", "dwpw", "int8")  # resize_commute: exact, up front
NOISE = 0.02  # a measured CPU ratio this much above 1 (and above 1 at p10) counts as slower


def parse_passes(passes: str | Sequence[str] | None) -> tuple[str, ...]:
    if passes is None:
        return DEFAULT_PASSES
    names = [p.strip() for p in passes.split(",")] if isinstance(passes, str) else [str(p) for p in passes]
    names = [p for p in names if p]
    bad = [p for p in names if p not in DEFAULT_PASSES]
    if bad or not names:
        raise RewriteError(f"--passes {','.join(names) or '(empty)'}: optimize searches "
                           f"{', '.join(DEFAULT_PASSES)}" + (f"; unknown: {', '.join(bad)}" if bad else ""))
    return tuple(dict.fromkeys(names))


def _budget(budget: dict | str | None, is_images: bool) -> dict[str, float]:
    from ..verify import default_budget, parse_budget

    b = parse_budget(budget) if budget else {}
    return b or default_budget(is_images)


def _site_rows(res: SearchResult, space: Any) -> list[SiteRow]:
    chosen = set(res.point.choices)
    rows = []
    for key, c in res.candidates.items():
        s = res.sensitivity.get(key)
        d = None
        for pass_name, _ in c.steps:
            d = d or (space.decision(pass_name, c.site) if hasattr(space, "decision") else None)
        engine = {}
        if d is not None:
            engine = {"default": d.choice, "reason": d.reason, "choices": list(d.choices),
                      "latency_us": d.details.get("latency_us")}
            engine.update({k: d.details[k] for k in ("engine_before", "engine_after") if k in d.details})
        reason = "" if key in chosen else (s.reason if s is not None and s.reason else "not selected")
        rows.append(SiteRow(site=c.site, pass_name=c.pass_name, op=c.op, choice=c.choice,
                            saved_us={t: round(v, 3) for t, v in (s.saved_us if s else {}).items()},
                            error={k: round(v, 6) for k, v in (s.usage if s else {}).items()},
                            budget_used=round(s.error, 6) if s else 0.0, engine=engine,
                            selected=key in chosen, reason=reason))
    for d in getattr(space, "commuted", []):  # exact commutes taken up front: no error, never searched
        saved = {t: v["before"] - v["after"] for t, v in (d.details.get("latency_us") or {}).items()}
        engine = {"default": d.choice, "reason": d.reason, "choices": list(d.choices),
                  "latency_us": d.details.get("latency_us")}
        engine.update({k: d.details[k] for k in ("engine_before", "engine_after") if k in d.details})
        rows.append(SiteRow(site=d.site, pass_name=d.pass_name, op=d.op, choice=d.choice,
                            saved_us={t: round(v, 3) for t, v in saved.items()}, error={}, budget_used=0.0,
                            engine=engine, selected=True))
    rows.sort(key=lambda r: (not r.selected, -r.saved_us.get(res.objective, 0.0)))
    return rows


def _fidelity(ev: Evaluation | None, split: str, budget: dict[str, float]) -> dict[str, Any]:
    if ev is None:
        return {"split": split, "skipped": True}
    if not ev.ok:
        return {"split": split, "passed": False, "error": ev.error}
    from ..verify import budget_gate

    u = usage(ev.metrics, budget)
    gate = budget_gate({"depth": ev.metrics}, budget)  # the same sentence as a rewrite's gate
    return {"split": split, "passed": scalar(u) <= 1.0 + 1e-12, "metrics": ev.metrics, "budget_used": scalar(u),
            "usage": u, "budget": budget, "message": f"{split} split: {gate['message']}", "needed": gate["needed"]}


def _count(phase: str, done: int, total: int) -> None:
    from ..progress import count

    count(f"optimize: {phase}", done, total)


def depth_pictures(space: Any, final: ModelHandle, changed: bool, folder: str | Path) -> list[dict[str, Any]]:
    """Depth before | after | |error| of the worst and a typical test-split image (``rewriter.pictures``). The
    input's outputs are the ones the search already computed on the test split; the final model runs once per
    test image (not at all when it is the input)."""
    import numpy as np

    from ..pictures import pictures_from_outputs
    from ..runtime import Runner

    test = space.splits.test
    befores = [np.asarray(outs[0]) for outs in space.reference("test")]
    if changed:
        runner = Runner(final)
        afters = [np.asarray(next(iter(runner.run(f).values()))) for f in test.feeds]
    else:
        afters = befores
    return pictures_from_outputs(befores, afters, list(test.names), folder)


OBJECTIVES = ("latency", "fit-frame")


def _fit_frame(search: Search, res: SearchResult, others_ms: float, *, select: bool) -> dict[str, Any]:
    """With ``select``: move ``res`` to the least-fidelity-cost visited selection that fits the frame.

    Candidates are the validation evaluations within budget and never slower than the input on any target;
    the input itself when it fits. Without a fitting one the search's result (the fastest) stays.
    """
    from ..cost.profiles import FRAME_BUDGET_MS

    obj = res.objective
    info: dict[str, Any] = {"objective": "fit-frame" if select else "latency", "target": obj,
                            "frame_ms": round(FRAME_BUDGET_MS, 2), "others_ms": round(others_ms, 4)}
    if not select:
        return info

    def fits(ev: Evaluation) -> bool:
        return ev.ok and ev.latency_ms.get(obj, float("inf")) + others_ms <= FRAME_BUDGET_MS

    def never_slower(ev: Evaluation) -> bool:
        return all(ev.latency_ms.get(t, float("inf")) <= res.base.latency_ms[t] * (1 + 1e-9) for t in res.targets)

    if fits(res.base):
        chosen: tuple[Point, Evaluation] | None = (Point(), res.base)
    else:
        ok = [(p, ev) for p, ev in res.history if fits(ev) and never_slower(ev)
              and scalar(usage(ev.metrics, res.budget)) <= 1.0]
        chosen = min(ok, key=lambda pe: (scalar(usage(pe[1].metrics, res.budget)), pe[1].latency_ms[obj])) \
            if ok else None
    if chosen is None:
        info["selected"] = "fastest within budget (no visited selection fits the frame)"
        return info
    p, ev = chosen
    info["selected"] = "input (already fits)" if p == Point() else "least fidelity cost that fits"
    info["budget_used"] = round(scalar(usage(ev.metrics, res.budget)), 6) if p != Point() else 0.0
    if p != res.point:
        res.log.append(f"fit-frame: {info['selected']} at {ev.latency_ms[obj]:.3f} ms on {obj} "
                       f"(+{others_ms:.3f} ms others)")
        res.point, res.validation = p, ev
        res.test = search.evaluate([p], split="test", phase="test split")[0]
    return info


EFFORTS = ("auto", "quick", "full")
QUICK_ABOVE_BYTES = 128 << 20  # weights above this: every INT8 candidate costs minutes (NNCF on midasnet ~1.5 min)


def _effort(effort: str, handle: ModelHandle) -> tuple[str, str]:
    """The effort level and why: as asked, or by the weight bytes the model holds (auto)."""
    if effort != "auto":
        return effort, "--effort"
    size = _weight_bytes(handle)
    if size > QUICK_ABOVE_BYTES:
        return "quick", f"auto: {size / 2**20:.0f} MiB of weights > {QUICK_ABOVE_BYTES >> 20} MiB"
    return "full", f"auto: {size / 2**20:.0f} MiB of weights"


def _weight_bytes(handle: ModelHandle) -> int:
    src = handle.source
    if src is not None and Path(src).exists():
        bin_ = Path(src).with_suffix(".bin")
        return (bin_ if handle.format == "ir" and bin_.exists() else Path(src)).stat().st_size
    if handle.format == "onnx":
        return int(sum(t.ByteSize() for t in handle.proto.graph.initializer))
    return int(sum(op.get_byte_size() for op in handle.ov.get_ops() if op.get_type_name() == "Constant"))


def optimize(model: Any, *, targets: Sequence[str] = ("mtl",), budget: dict | str | None = None,
             passes: str | Sequence[str] | None = None, calib: str | None = None, images: str | None = None,
             output: str | Path | None = None, report: str | Path | None = None, html: str | Path | None = None,
             workers: int = 0, ray_address: str | None = None, measure: bool = False, seed: int = 0,
             progress: Callable[[str], None] | None = None, quant_groups: int | None = None,
             max_ranks: int | None = None, effort: str = "auto",
             md: str | Path | None = None,
             input_shape: dict[str, list[int]] | None = None, objective: str = "latency",
             alongside: Sequence[str | Path | ModelHandle] = (), alongside_ms: float | None = None
             ) -> tuple[ModelHandle, OptimizeReport]:
    """Search the per-site choices of ``passes`` for the fastest model on ``targets[0]`` within ``budget``.

    ``budget``: the keys of ``rewriter.verify.parse_budget`` (delta1, absrel, rel_l2, psnr, ...), checked on
    the validation split against the original; default: the tool's default budget. The final model is never
    predicted slower than the input on any of ``targets`` (nor measured slower on CPU with ``measure``).
    ``workers`` > 0 evaluates candidates in that many local processes, ``ray_address`` on a Ray cluster.
    ``objective``: "latency" (fastest within budget) or "fit-frame" (the visited selection with the least
    fidelity cost whose objective-target latency plus the others' fits the 16.67 ms frame; the input when it
    already fits). ``alongside`` (models) / ``alongside_ms`` (a figure) are the other workloads sharing the
    frame: each target's ``latency`` gains ``alongside`` (``rewriter.cost.command.alongside``), and the report's
    ``frame`` says whether the result fits. ``progress`` receives step messages (``rewriter.progress.RunProgress``);
    counts (candidate evaluations, images) go to ``rewriter.progress.count``.
    ``effort``: "full" searches NNCF's settings by coordinate descent, 8 groups of ops kept in float and 3 dwpw
    ranks per site; "quick" keeps NNCF's default setting, 4 groups and rank 1 (a midasnet-sized model then
    builds a third as many INT8 candidates); "auto" is quick for models holding more than
    ``QUICK_ABOVE_BYTES`` of weights. ``quant_groups`` / ``max_ranks`` override the effort's.
    Writes ``output`` / ``report`` (JSON) / ``md`` / ``html`` (with the Pareto plot, and
    depth before | after | |error| pictures of the worst and a typical test image) when given. Raises
    ``RewriteError`` for bad input before any long work.
    """
    from ..model import check_output_path
    from .executors import make_executor
    from .space import PassSpace

    t0 = time.perf_counter()
    targets = tuple(dict.fromkeys(targets))
    if not targets:
        raise RewriteError("--target: give at least one of kmb, mtl, cpu")
    for t in targets:
        if t not in TARGETS:
            raise RewriteError(f"unknown target '{t}' (use {', '.join(TARGETS)})")
    names = parse_passes(passes)
    if workers < 0:
        raise RewriteError(f"--workers {workers}: must be ≥ 0")
    from ..verify import parse_budget

    parse_budget(budget)  # a bad budget fails before the model is read
    if effort not in EFFORTS:
        raise RewriteError(f"--effort {effort}: use one of {', '.join(EFFORTS)}")
    if objective not in OBJECTIVES:
        raise RewriteError(f"--objective {objective}: use one of {', '.join(OBJECTIVES)}")
    for other in alongside:
        if not isinstance(other, ModelHandle) and not Path(other).exists():
            raise RewriteError(f"--alongside {other}: no such file")
    if alongside_ms is not None and not alongside_ms >= 0:
        raise RewriteError(f"--alongside-ms {alongside_ms}: must be a number >= 0")
    handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model)
    for path in (output, report, html, md):
        if path is not None:
            check_output_path(Path(path), handle.source)
    say = progress or (lambda _m: None)
    level, why = _effort(effort, handle)
    quick = level == "quick"
    quant_groups = quant_groups if quant_groups is not None else (4 if quick else 8)
    max_ranks = max_ranks if max_ranks is not None else (1 if quick else 3)
    space = PassSpace(handle, targets=targets, passes=names, calib=calib, images=images, seed=seed,
                      max_ranks=max_ranks, input_shape=input_shape)
    bud = _budget(budget, space.splits.validation.is_images)
    executor = make_executor(space, workers=workers, ray_address=ray_address)
    frame = None
    try:
        say("searching the per-site choices ...")
        search = Search(space, bud, executor, quant_groups=quant_groups, progress=_count, quant_settings=not quick)
        search.log.append(f"effort {level} ({why}): " + ("NNCF's default setting, " if quick else
                          "NNCF settings by coordinate descent, ") + f"{quant_groups} keep-in-float groups, "
                          f"up to {max_ranks} dwpw rank(s) per site")
        res = search.run()
        if objective == "fit-frame" or alongside or alongside_ms is not None:
            from ..cost.command import alongside as _alongside

            others = _alongside(0.0, list(alongside), alongside_ms, targets[0],
                                input_shape=input_shape)["others_ms"]
            frame = _fit_frame(search, res, others, select=objective == "fit-frame")
    finally:
        executor.close()
    final = space.build_model(res.point)  # Point() is the input with resize_commute's exact commutes
    changed = res.point != Point() or bool(space.commuted)
    notes: list[str] = []
    if getattr(space.splits, "overlap", False):
        notes.append("splits overlap (allow_overlap): the held-out numbers are not held out")
    measured = None
    if measure:
        say("measuring CPU latency (interleaved A/B) ...")
        from ..cost import measure_ab

        measured = measure_ab(handle, final)
        lo = (measured.get("ratio_p10_p90") or [measured["ratio"]])[0]
        if measured["ratio"] > 1 + NOISE and lo > 1:
            notes.append(f"measured slower on CPU ({measured['ratio']:.3f}x the input's time): returning the input")
            final = handle.clone()
            res.point, res.validation, res.test = Point(), res.base, None
            changed, space.commuted = False, []
    if space.commuted:
        notes.append(f"resize_commute: {len(space.commuted)} site(s) commuted up front (exact, 1x1 conv before "
                     f"the resize): {', '.join(d.site for d in space.commuted)}")
    from ..cost import compare

    latency = {t: compare(handle, final, t, input_shape=input_shape) for t in targets}
    if alongside or alongside_ms is not None:
        from ..cost.command import attach_alongside

        attach_alongside(latency, list(alongside), alongside_ms)
    if frame is not None:  # the frame as built (after --measure may have returned the input)
        frame["latency_ms"] = latency[targets[0]]["after_ms"]
        frame["total_ms"] = round(frame["latency_ms"] + frame["others_ms"], 4)
        frame["fits"] = frame["total_ms"] <= frame["frame_ms"]
        frame["headroom_ms"] = round(frame["frame_ms"] - frame["total_ms"], 4)
    for t, lat in latency.items():  # the search guarantees this; a mismatch is a bug to surface, not hide
        if lat["after_ms"] > lat["before_ms"] * (1 + 1e-6):
            notes.append(f"predicted slower on {t} than the input ({lat['before_ms']} → {lat['after_ms']} ms)")
    q = res.point.quant
    int8 = None
    if "int8" in names:
        int8 = {"enabled": q is not None, "setting": dict(q) if q is not None else None,
                "float_ops": list(res.point.float_ops), "settings_tried": res.quant.get("tried", []),
                "reason": res.quant.get("reason", "")}
    rep = OptimizeReport(
        input=handle.name, format=handle.format, targets=list(targets), objective=targets[0], budget=bud,
        passes=list(names), sites=_site_rows(res, space),
        pareto=[ParetoPoint(**p) for p in res.pareto()],
        fidelity={"validation": _fidelity(res.validation, "validation", bud),
                  "test": _fidelity(res.test, "test", bud)},
        latency=latency, int8=int8,
        inputs=space.splits.names() if hasattr(space.splits, "names") else {},
        measured=measured,
        search={"evaluations": len(res.history), "seconds": round(time.perf_counter() - t0, 2),
                "executor": getattr(executor, "name", type(executor).__name__),
                "workers": getattr(executor, "workers", 1), "log": list(res.log),
                "effort": {"level": level, "reason": why, "quant_groups": quant_groups, "max_ranks": max_ranks},
                "point": res.point.to_json()},
        notes=notes, objective_kind=objective, frame=frame)
    if output is not None:
        rep.output = str(final.save(output))
    from ..report import write_html, write_json, write_markdown

    if report is not None:
        write_json(rep, report)
    if md is not None:
        write_markdown(rep, md)
    if html is not None:
        import tempfile

        say("depth pictures of the test split ...")
        with tempfile.TemporaryDirectory(prefix="rewrite-pictures-") as tmp:  # the HTML embeds them
            try:
                rep.pictures = depth_pictures(space, final, changed, tmp)
            except (RewriteError, ValueError) as e:  # a courtesy: the report is still written without them
                rep.notes.append(f"no depth pictures: {e}")
            write_html(rep, html)
        rep.pictures = []  # their files are gone with the folder
    return final, rep
