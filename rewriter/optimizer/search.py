"""The search behind ``rewrite optimize``, independent of graphs.

It talks to a :class:`SearchSpace` (per-site candidate choices, INT8 settings and per-op keep-in-float, and an
``evaluate(point)`` that builds the candidate and returns its fidelity vs the original and its predicted
latency) through an executor, and proceeds as AIMET's greedy compression-ratio selection, but on latency:

1. sensitivity: every candidate alone (error on the validation split vs the original, predicted µs saved);
   INT8: NNCF settings by coordinate descent, then per-op groups kept in float one group at a time;
2. greedy selection by µs saved per unit of error over all sites at once (a multiple-choice knapsack: a
   site moves to a more aggressive choice when that buys the most µs per unit of error; INT8 levels compete
   as one more site);
3. the float choices applied together (the space applies passes in order, so dwpw refits on the partially
   rewritten model) and verified;
4. INT8 last, at the most aggressive level the remaining (measured) budget allows; when no level fits, the
   other order (INT8 first, float choices in what it leaves) is tried and the faster kept; then whatever
   budget is left is spent greedily on more float choices on top of the INT8 model;
5. the whole verified vs the original; the worst offender is backed off until it is within budget.

Every verification judges a mean metric at its pessimistic end, mean + ``ROBUST_Z`` standard errors over
the validation images (:func:`robust`): a selection that only just fits two or three validation photos
otherwise lands over the budget on other scenes.

Never a choice predicted slower on the objective target; the final model never predicted slower than the
input on any requested target (choices are dropped until it is not: at worst the input itself). Every
evaluated point is recorded for the Pareto front; evaluations are cached by point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

KEEP = "keep"
INT8_SITE = "int8"
EPS_US = 1e-3  # savings below this many µs count as none
EPS_ERR = 1e-6  # error floor in the µs-per-error ratio (free choices rank by saving)
UNIT_KEYS = ("delta1", "cosine")  # lower bounds in [0, 1]: the shortfall from 1 adds up
REFILLS = 3  # rounds spending the slack between the estimated and the measured error
RECALIBRATIONS = 3  # rounds re-selecting at a cap scaled by estimated/measured error, before single drops
RECALIBRATION_MARGIN = 0.9  # aim a little under the budget: the scaling is only approximately right
ROBUST_Z = 1.0  # the search judges a mean metric at mean + z standard errors over the validation images
LEFTOVER_MIN = 0.95  # below this fraction of the budget used, the final model tries to spend the rest
HIGHER_BETTER = ("cosine", "psnr", "delta1")


# ---- data ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One non-keep choice at one site. ``steps`` are the (pass, choice) edits it makes at that site."""

    site: str
    steps: tuple[tuple[str, str], ...]
    op: str = ""
    prior_us: tuple[tuple[str, float], ...] = ()  # a-priori predicted µs saved per target, when known

    @property
    def key(self) -> str:
        return f"{self.site}:{self.choice}"

    @property
    def pass_name(self) -> str:
        return "+".join(p for p, _ in self.steps)

    @property
    def choice(self) -> str:
        return "+".join(c for _, c in self.steps)


@dataclass(frozen=True)
class Point:
    """A whole candidate model: the float choices taken, the INT8 setting (None: float) and ops kept float."""

    choices: tuple[str, ...] = ()  # Candidate keys, sorted
    quant: tuple[tuple[str, Any], ...] | None = None  # int8 pass options (sorted items); None = no INT8
    float_ops: tuple[str, ...] = ()  # int8 sites kept in float (NNCF ignored scope), sorted

    @staticmethod
    def of(choices: Sequence[str] = (), quant: Mapping[str, Any] | None = None,
           float_ops: Sequence[str] = ()) -> Point:
        q = None if quant is None else tuple(sorted(quant.items()))
        return Point(tuple(sorted(set(choices))), q, tuple(sorted(set(float_ops))) if q is not None else ())

    def to_json(self) -> dict[str, Any]:
        return {"choices": list(self.choices), "int8": None if self.quant is None else dict(self.quant),
                "float_ops": list(self.float_ops)}


@dataclass
class Evaluation:
    """A built candidate: its metrics vs the original ({"mean": {...}, "worst": {...}}) and predicted ms."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    latency_ms: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None  # the candidate could not be built or run: never selected
    info: dict[str, Any] = field(default_factory=dict)  # space-specific facts (per-site decisions, ...)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class SearchSpace(Protocol):
    """What the search needs from a model and its passes."""

    targets: tuple[str, ...]  # the first is the objective

    def candidates(self) -> list[Candidate]:
        """Every non-keep float choice at every site (several per site when a site has several)."""

    def quant_options(self) -> dict[str, list[Any]]:
        """INT8 pass options to search, option → values (first = default); {} when INT8 is not searched."""

    def quant_sites(self) -> list[str]:
        """INT8 sites (quantizable ops) of the input model in graph order; [] when INT8 is not searched."""

    def evaluate(self, point: Point, split: str = "validation") -> Evaluation:
        """Build ``point`` and compare it with the original on ``split`` (validation or test)."""

    def spec(self) -> Any:
        """A picklable recipe that :func:`rewriter.optimizer.space.build_space` turns back into this space."""


# ---- budget arithmetic ----------------------------------------------------------------------------------
def _split_key(key: str) -> tuple[str, str]:
    return ("worst", key[6:]) if key.startswith("worst_") else ("mean", key)


def usage(metrics: Mapping[str, Mapping[str, float]], budget: Mapping[str, float]) -> dict[str, float]:
    """Per budget key, how much of the budget ``metrics`` use, in units that add up over edits.

    1.0 = at the limit. Error amplitudes add linearly, an upper bound (independent errors add in quadrature,
    the refill step spends the difference): rel_l2, absrel, ... the value over the limit; psnr the noise
    amplitude ratio; delta1/cosine the shortfall from 1 over the allowed shortfall. A metric the evaluation
    lacks uses nothing.
    """
    out: dict[str, float] = {}
    for key, limit in budget.items():
        agg, base = _split_key(key)
        v = metrics.get(agg, {}).get(base)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        v = float(v)
        if base == "psnr":
            out[key] = 10.0 ** ((limit - v) / 20.0)
        elif base in UNIT_KEYS:
            short, allowed = max(0.0, 1.0 - v), 1.0 - limit
            out[key] = short / allowed if allowed > 0 else (0.0 if short <= 0 else math.inf)
        else:
            out[key] = v / limit if limit > 0 else (0.0 if v <= 0 else math.inf)
    return out


def robust(metrics: Mapping[str, Mapping[str, float]], z: float = ROBUST_Z) -> dict[str, dict[str, float]]:
    """``metrics`` with every mean moved ``z`` standard errors (``metrics["sem"]``) towards worse.

    A few validation images estimate the held-out mean loosely: judging at the pessimistic end of that
    estimate keeps a selection that just fits on validation from landing over the budget on other scenes.
    Metrics without a standard error (one image, or a space that does not report one) are unchanged.
    """
    out = {k: dict(v) for k, v in metrics.items()}
    sem = metrics.get("sem") or {}
    if z <= 0 or not sem:
        return out
    for k, v in out.get("mean", {}).items():
        e = sem.get(k)
        if e is None or not math.isfinite(e):
            continue
        out["mean"][k] = v - z * e if k in HIGHER_BETTER else v + z * e
    return out


def scalar(u: Mapping[str, float]) -> float:
    """The binding fraction of the budget: the largest per-key usage (0 when nothing is used)."""
    return max(u.values(), default=0.0)


def within(metrics: Mapping[str, Mapping[str, float]], budget: Mapping[str, float]) -> bool:
    """Whether every budget key is satisfied."""
    return scalar(usage(metrics, budget)) <= 1.0 + 1e-12


# ---- Pareto ----------------------------------------------------------------------------------------------
def pareto_front(points: Sequence[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """Non-dominated (latency, error, payload) triples (both minimised), sorted by latency."""
    front: list[tuple[float, float, Any]] = []
    best_err = math.inf
    for lat, err, payload in sorted(points, key=lambda p: (p[0], p[1])):
        if err < best_err:
            front.append((lat, err, payload))
            best_err = err
    return front


# ---- the search ------------------------------------------------------------------------------------------
@dataclass
class Sensitivity:
    """One option evaluated alone: its error usage per budget key and µs saved per target."""

    key: str
    site: str
    usage: dict[str, float]
    saved_us: dict[str, float]
    ok: bool = True
    reason: str = ""

    @property
    def error(self) -> float:
        return scalar(self.usage)


@dataclass
class SearchResult:
    """What the search found and everything it evaluated."""

    point: Point
    validation: Evaluation
    test: Evaluation | None
    base: Evaluation
    budget: dict[str, float]
    objective: str
    targets: tuple[str, ...]
    candidates: dict[str, Candidate]
    sensitivity: dict[str, Sensitivity]
    quant: dict[str, Any]  # chosen INT8 setting, groups, levels
    history: list[tuple[Point, Evaluation]]
    log: list[str]

    def pareto(self) -> list[dict[str, Any]]:
        """Non-dominated (objective latency, budget usage) points among those evaluated on validation."""
        pts = [(ev.latency_ms[self.objective], scalar(usage(ev.metrics, self.budget)), (p, ev))
               for p, ev in self.history if ev.ok and self.objective in ev.latency_ms]
        return [{"latency_ms": round(lat, 4), "budget_used": round(err, 6), "metrics": ev.metrics,
                 "latency_by_target_ms": {t: round(v, 4) for t, v in ev.latency_ms.items()},
                 "choices": p.to_json()} for lat, err, (p, ev) in pareto_front(pts)]


Progress = Callable[[str, int, int], None]


class Search:
    """Runs the five steps over ``space`` with ``executor`` (anything with ``map(points, split)``)."""

    def __init__(self, space: SearchSpace, budget: Mapping[str, float], executor: Any, *,
                 quant_groups: int = 8, progress: Progress | None = None, robust_z: float = ROBUST_Z,
                 quant_settings: bool = True):
        self.space = space
        self.quant_settings = quant_settings  # False: INT8 at the pass's default NNCF setting (no descent)
        self.robust_z = robust_z
        self.budget = dict(budget)
        self.executor = executor
        self.targets = tuple(space.targets)
        self.objective = self.targets[0]
        self.quant_groups = quant_groups
        self.progress = progress or (lambda _phase, _done, _total: None)
        self._cache: dict[tuple[Point, str], Evaluation] = {}
        self.history: list[tuple[Point, Evaluation]] = []
        self.log: list[str] = []

    # -- evaluation with a cache and a record of every point ----------------------------------------------
    def evaluate(self, points: Sequence[Point], split: str = "validation", phase: str = "") -> list[Evaluation]:
        todo = list(dict.fromkeys(p for p in points if (p, split) not in self._cache))
        if todo:
            self.progress(phase or split, 0, len(todo))
            results = self.executor.imap(todo, split) if hasattr(self.executor, "imap") else \
                self.executor.map(todo, split)
            for i, (p, ev) in enumerate(zip(todo, results)):
                self._cache[(p, split)] = ev
                if split == "validation":
                    self.history.append((p, ev))
                self.progress(phase or split, i + 1, len(todo))
        return [self._cache[(p, split)] for p in points]

    def _usage(self, ev: Evaluation) -> dict[str, float]:
        """Budget usage as the search judges it: means at their pessimistic end (:func:`robust`)."""
        if not ev.ok:
            return {k: math.inf for k in self.budget} or {"_": math.inf}
        return usage(robust(ev.metrics, self.robust_z), self.budget)

    def _fits(self, ev: Evaluation) -> bool:
        return ev.ok and scalar(self._usage(ev)) <= 1.0 + 1e-12

    def _saved(self, base: Evaluation, ev: Evaluation) -> dict[str, float]:
        return {t: 1000.0 * (base.latency_ms[t] - ev.latency_ms[t]) for t in self.targets
                if t in base.latency_ms and t in ev.latency_ms}

    # -- step 1 -------------------------------------------------------------------------------------------
    def sensitivities(self, base: Evaluation, cands: list[Candidate]) -> dict[str, Sensitivity]:
        evs = self.evaluate([Point.of([c.key]) for c in cands], phase="sensitivity")
        out = {}
        for c, ev in zip(cands, evs):
            s = Sensitivity(c.key, c.site, self._usage(ev), self._saved(base, ev) if ev.ok else {})
            if not ev.ok:
                s.ok, s.reason = False, f"failed: {ev.error}"
            elif s.saved_us.get(self.objective, 0.0) < -EPS_US:
                s.ok, s.reason = False, (f"skip: predicted slower on {self.objective} "
                                         f"({-s.saved_us.get(self.objective, 0.0):+.1f} µs)")
            elif s.saved_us.get(self.objective, 0.0) <= EPS_US:
                s.ok, s.reason = False, f"skip: no predicted saving on {self.objective}"
            elif s.error > 1.0:
                s.ok, s.reason = False, f"alone over budget ({s.error:.3g} of it)"
            out[c.key] = s
        return out

    def quant_sensitivity(self, base: Evaluation) -> dict[str, Any]:
        """INT8 settings by coordinate descent (whole model), then groups of ops kept in float, one at a time."""
        options = self.space.quant_options()
        if not options:
            return {}
        setting = {k: v[0] for k, v in options.items()}
        best = self.evaluate([Point.of(quant=setting)], phase="int8 settings")[0]
        tried = [(dict(setting), best)]
        for opt, values in options.items() if self.quant_settings else ():
            alts = [{**setting, opt: v} for v in values[1:]]
            evs = self.evaluate([Point.of(quant=a) for a in alts], phase=f"int8 {opt}")
            tried += list(zip(alts, evs))
            for a, ev in zip(alts, evs):
                if ev.ok and (not best.ok or self._rank(ev) < self._rank(best)):
                    setting, best = a, ev
        info: dict[str, Any] = {"setting": setting, "tried": [
            {"setting": s, "budget_used": round(scalar(self._usage(e)), 6), "error": e.error,
             "latency_ms": e.latency_ms.get(self.objective)} for s, e in tried]}
        if not best.ok:
            info["reason"] = f"int8 failed: {best.error}"
            return info
        whole_saved = self._saved(base, best)
        if whole_saved.get(self.objective, 0.0) <= EPS_US:
            info["reason"] = f"int8 predicted slower on {self.objective}"
            return info
        sites = self.space.quant_sites()
        n = min(self.quant_groups, len(sites))
        groups = [tuple(sites[i * len(sites) // n:(i + 1) * len(sites) // n]) for i in range(n)] if n else []
        evs = self.evaluate([Point.of(quant=setting, float_ops=g) for g in groups], phase="int8 groups")
        whole_u = self._usage(best)
        gains = []
        for i, (g, ev) in enumerate(zip(groups, evs)):
            if not ev.ok:
                continue
            gain = {k: max(0.0, whole_u.get(k, 0.0) - v) for k, v in self._usage(ev).items()}
            lost = max(EPS_US, 1000.0 * (ev.latency_ms[self.objective] - best.latency_ms[self.objective]))
            gains.append((scalar(gain) / lost, i, g, gain, self._saved(best, ev)))
        gains.sort(key=lambda x: -x[0])  # most error removed per µs given up first
        levels = []  # level k: the first k ranked groups kept in float
        u, saved, kept = dict(whole_u), dict(whole_saved), ()
        levels.append({"float_ops": kept, "usage": dict(u), "saved_us": dict(saved)})
        for _, _, g, gain, lost_saved in gains[:-1] if len(gains) > 1 else []:
            u = {k: max(0.0, v - gain.get(k, 0.0)) for k, v in u.items()}
            saved = {t: saved[t] + lost_saved.get(t, 0.0) for t in saved}  # lost_saved is negative
            kept = kept + g
            if saved.get(self.objective, 0.0) <= EPS_US:
                break
            levels.append({"float_ops": kept, "usage": dict(u), "saved_us": dict(saved)})
        info.update(groups=[list(g) for g in groups], levels=levels, whole={"usage": whole_u, "saved_us": whole_saved})
        return info

    def _rank(self, ev: Evaluation) -> tuple[float, float]:
        return scalar(self._usage(ev)), ev.latency_ms.get(self.objective, math.inf)

    # -- step 2 -------------------------------------------------------------------------------------------
    def greedy(self, options: dict[str, list[tuple[str, dict[str, float], float]]], cap: float = 1.0,
               start: Mapping[str, str] | None = None, total: Mapping[str, float] | None = None
               ) -> dict[str, str]:
        """Multiple-choice knapsack by µs per unit of error: site → option key.

        ``options[site]`` = [(key, usage per budget key, µs saved on the objective)]. Usage is summed per
        budget key; a move is allowed while every key stays within ``cap``. ``start`` (site → key) and
        ``total`` (its usage, e.g. measured) continue from an earlier selection.
        """
        chosen: dict[str, tuple[str, dict[str, float], float]] = {}
        for site, key in (start or {}).items():
            chosen[site] = next(o for o in options[site] if o[0] == key)
        if total is None:
            total = {k: sum(c[1].get(k, 0.0) for c in chosen.values()) for k in self.budget}
        total = dict(total)
        while True:
            best = None
            for site, opts in options.items():
                cur = chosen.get(site, ("", {}, 0.0))
                for key, u, s in opts:
                    ds = s - cur[2]
                    if ds <= EPS_US:
                        continue
                    new = {k: total.get(k, 0.0) - cur[1].get(k, 0.0) + u.get(k, 0.0) for k in set(total) | set(u)}
                    if scalar(new) > cap + 1e-12:
                        continue
                    de = max(EPS_ERR, scalar(new) - scalar(total))
                    ratio = ds / de
                    if best is None or ratio > best[0] + 1e-12:
                        best = (ratio, site, (key, u, s), new)
            if best is None:
                return {site: c[0] for site, c in chosen.items()}
            _, site, opt, total = best
            chosen[site] = opt

    # -- the whole search ---------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        base = self.evaluate([Point()], phase="input")[0]
        if not base.ok:
            raise RuntimeError(f"the input model could not be evaluated: {base.error}")
        cands = {c.key: c for c in self.space.candidates()}
        if self.robust_z > 0:
            self.log.append(f"robust: mean metrics judged at +{self.robust_z:g} standard error over the "
                            "validation images")
        # never a choice predicted slower on the objective: a-priori slower choices are not even built
        pre = [c for c in cands.values() if dict(c.prior_us).get(self.objective, 1.0) > 0]
        if len(pre) < len(cands):
            self.log.append(f"{len(cands) - len(pre)} choice(s) predicted slower on {self.objective} before "
                            "building: not evaluated")
        sens = self.sensitivities(base, pre)
        for c in cands.values():
            if c.key not in sens:
                sens[c.key] = Sensitivity(c.key, c.site, {}, {t: v for t, v in c.prior_us}, False,
                                          f"skip: predicted slower on {self.objective}")
        quant = self.quant_sensitivity(base)
        options: dict[str, list[tuple[str, dict[str, float], float]]] = {}
        for s in sens.values():
            if s.ok:
                options.setdefault(s.site, []).append((s.key, s.usage, s.saved_us[self.objective]))
        for i, lv in enumerate(quant.get("levels", [])):
            if scalar(lv["usage"]) <= 1.0:
                options.setdefault(INT8_SITE, []).append((f"L{i}", lv["usage"], lv["saved_us"][self.objective]))
        picked = self.greedy(options)
        float_keys = sorted(k for site, k in picked.items() if site != INT8_SITE)
        self.log.append(f"greedy: {len(float_keys)} float choice(s)"
                        + (f", int8 level {picked[INT8_SITE]}" if INT8_SITE in picked else ", no int8"))
        # step 3: the float choices together (applied in pass order; dwpw refits on the rewritten model)
        float_keys, _ = self._recalibrate(float_keys, options, sens)
        float_keys, fev = self._backoff_float(float_keys, sens)
        for _ in range(REFILLS):
            before = float_keys
            float_keys, fev = self._refill(float_keys, fev, picked, options, sens)
            if float_keys == before:
                break
        # step 4: INT8 last, at the most aggressive level the measured remaining budget allows
        point = Point.of(float_keys)
        final = fev
        if quant.get("levels"):
            point, final = self._quantize_last(float_keys, fev, quant, sens)
            if point.quant is None:  # INT8 did not fit beside the float choices: INT8 first, floats after
                point, final = self._int8_first(point, final, quant, options, sens)
        # step 4b: whatever budget INT8 (or its rejection) left is spent on more float choices
        point, final = self._spend_leftover(point, final, options, sens)
        # never slower than the input on any requested target
        point, final = self._never_slower(point, final, base, sens, quant)
        test = self.evaluate([point], split="test", phase="test split")[0]
        return SearchResult(point, final, test, base, self.budget, self.objective, self.targets, cands, sens,
                            quant, self.history, self.log)

    def _recalibrate(self, keys: list[str], options: dict[str, list[tuple[str, dict[str, float], float]]],
                     sens: dict[str, Sensitivity]) -> tuple[list[str], Evaluation | None]:
        """Over budget by a wide margin: scale the estimate by measured/estimated and select again.

        One drop per verification is slow when the estimate is far off (every verification rebuilds the
        float model); a few rounds at a recalibrated cap get close, and the backoff finishes the job.
        """
        floats = {s: o for s, o in options.items() if s != INT8_SITE}
        cap = 1.0
        for _ in range(RECALIBRATIONS):
            if not keys:
                break
            ev = self.evaluate([Point.of(keys)], phase="verify")[0]
            measured = scalar(self._usage(ev)) if ev.ok else math.inf
            if measured <= 1.0 or not math.isfinite(measured):
                break
            estimated = scalar({k: sum(sens[c].usage.get(k, 0.0) for c in keys) for k in self.budget})
            if estimated <= 0:
                break
            cap = min(cap, estimated / measured) * RECALIBRATION_MARGIN
            new = sorted(self.greedy(floats, cap=cap).values())
            self.log.append(f"recalibrate: {len(keys)} choice(s) measured {measured:.3g} of the budget vs "
                            f"{estimated:.3g} estimated; cap {cap:.3g} → {len(new)} choice(s)")
            if new == keys:
                break
            keys = new
        return keys, None

    def _backoff_float(self, keys: list[str], sens: dict[str, Sensitivity]) -> tuple[list[str], Evaluation]:
        keys = list(keys)
        while True:
            ev = self.evaluate([Point.of(keys)], phase="verify")[0]
            if self._fits(ev):
                return keys, ev
            if not keys:
                return keys, ev
            worst = max(keys, key=lambda k: (sens[k].error, -sens[k].saved_us.get(self.objective, 0.0)))
            why = "failed to build" if not ev.ok else f"{scalar(self._usage(ev)):.3g} of the budget"
            self.log.append(f"backoff: {why}; dropped {worst} (alone {sens[worst].error:.3g} of the budget)")
            keys.remove(worst)

    def _refill(self, keys: list[str], fev: Evaluation, picked: dict[str, str],
                options: dict[str, list[tuple[str, dict[str, float], float]]], sens: dict[str, Sensitivity]
                ) -> tuple[list[str], Evaluation]:
        """Errors often add up to less than the estimate: spend the measured slack once more, greedily."""
        if not fev.ok:
            return keys, fev
        measured = self._usage(fev)
        start = {sens[k].site: k for k in keys}
        reserved: dict[str, float] = dict(measured)
        if INT8_SITE in picked:  # keep the INT8 level the first pass chose in the budget
            start[INT8_SITE] = picked[INT8_SITE]
            lv = next(o for o in options[INT8_SITE] if o[0] == picked[INT8_SITE])
            reserved = {k: v + lv[1].get(k, 0.0) for k, v in measured.items()}
        if scalar(reserved) >= 0.95:
            return keys, fev
        more = self.greedy(options, start=start, total=reserved)
        added = sorted(k for site, k in more.items() if site != INT8_SITE and k not in keys)
        if not added:
            return keys, fev
        new = sorted(set(keys + added) - {start[sens[k].site] for k in added if sens[k].site in start})
        ev = self.evaluate([Point.of(new)], phase="refill")[0]
        if self._fits(ev) and \
                ev.latency_ms[self.objective] < fev.latency_ms[self.objective]:
            self.log.append(f"refill: measured {scalar(measured):.3g} of the budget; added {', '.join(added)}")
            return new, ev
        self.log.append(f"refill: adding {', '.join(added)} went over the budget; kept the verified selection")
        return keys, fev

    def _quantize_last(self, keys: list[str], fev: Evaluation, quant: dict[str, Any],
                       sens: dict[str, Sensitivity]) -> tuple[Point, Evaluation]:
        used = self._usage(fev)
        levels = quant["levels"]
        # most aggressive level whose predicted total (measured float usage + int8 alone) fits
        start = next((i for i, lv in enumerate(levels)
                      if scalar({k: used.get(k, 0.0) + lv["usage"].get(k, 0.0) for k in used}) <= 1.0), 0)
        for i in range(start, len(levels)):
            p = Point.of(keys, quant["setting"], levels[i]["float_ops"])
            ev = self.evaluate([p], phase="int8 last")[0]
            if self._fits(ev) and \
                    ev.latency_ms[self.objective] < fev.latency_ms[self.objective]:
                self.log.append(f"int8 level L{i}: {len(levels[i]['float_ops'])} op(s) kept in float")
                return p, ev
            self.log.append(f"int8 level L{i} " + ("failed to build" if not ev.ok else
                                                  f"uses {scalar(self._usage(ev)):.3g} of the budget"))
        self.log.append("int8 off: no level fits the remaining budget")
        return Point.of(keys), fev

    def _floats(self, options: dict[str, list[tuple[str, dict[str, float], float]]]
                ) -> dict[str, list[tuple[str, dict[str, float], float]]]:
        return {site: o for site, o in options.items() if site != INT8_SITE}

    def _spend_leftover(self, point: Point, ev: Evaluation,
                        options: dict[str, list[tuple[str, dict[str, float], float]]],
                        sens: dict[str, Sensitivity]) -> tuple[Point, Evaluation]:
        """Greedy float choices on top of ``point`` (INT8 kept as it is) while the measured budget has room.

        The float selection reserved room for the INT8 level the first greedy pass chose; INT8 often uses
        less than that estimate, or is rejected and uses none. Each round selects from the measured usage of
        the current point, at the full budget and then at half the remaining room, and keeps a verified gain.
        """
        floats = self._floats(options)
        q = None if point.quant is None else dict(point.quant)
        for _ in range(REFILLS):
            if not ev.ok:
                break
            measured = self._usage(ev)
            used = scalar(measured)
            if used >= LEFTOVER_MIN:
                break
            start = {sens[k].site: k for k in point.choices
                     if sens[k].site in floats and any(o[0] == k for o in floats[sens[k].site])}
            gained = False
            for cap in (1.0, (1.0 + used) / 2):
                more = self.greedy(floats, cap=cap, start=start, total=measured)
                keys = sorted(set(point.choices) - set(start.values()) | set(more.values()))
                if keys == list(point.choices):
                    break
                cand = Point.of(keys, q, point.float_ops)
                cev = self.evaluate([cand], phase="leftover")[0]
                added = sorted(set(keys) - set(point.choices))
                if self._fits(cev) and cev.latency_ms[self.objective] < ev.latency_ms[self.objective] - EPS_US / 1000:
                    self.log.append(f"leftover: {used:.3g} of the budget used"
                                    + (" with int8" if q is not None else "") + f"; added {', '.join(added)}")
                    point, ev, gained = cand, cev, True
                    break
                self.log.append(f"leftover: adding {', '.join(added)} at cap {cap:.3g} "
                                + ("failed to build" if not cev.ok else f"uses {scalar(self._usage(cev)):.3g}")
                                + "; not taken")
            if not gained:
                break
        return point, ev

    def _int8_first(self, point: Point, ev: Evaluation, quant: dict[str, Any],
                    options: dict[str, list[tuple[str, dict[str, float], float]]],
                    sens: dict[str, Sensitivity]) -> tuple[Point, Evaluation]:
        """INT8 rejected after the float choices: try the other order, INT8 first and floats in what it leaves.

        The most aggressive INT8 level whose measured usage alone leaves room is taken first; the float
        choices are selected greedily in the rest of the budget, then in half of it, then none, until one
        verifies within budget. The faster of the two orders is kept.
        """
        levels = [(i, lv) for i, lv in enumerate(quant.get("levels", [])) if scalar(lv["usage"]) <= 0.9]
        if not levels:
            self.log.append("int8 first: no INT8 level leaves room for float choices even alone")
            return point, ev
        i, lv = levels[0]  # levels go from most to least aggressive
        lv_used = scalar(lv["usage"])
        tried: set[tuple[str, ...]] = set()
        # the float share of the budget at full, at half, and none (INT8 alone, measured to fit)
        for room in (1.0, 0.5, 0.0):
            cap = lv_used + (1.0 - lv_used) * room
            keys = tuple(sorted(self.greedy(self._floats(options), cap=cap, total=dict(lv["usage"])).values()))
            if keys in tried:
                continue
            tried.add(keys)
            cand = Point.of(keys, quant["setting"], lv["float_ops"])
            cev = self.evaluate([cand], phase="int8 first")[0]
            if not self._fits(cev):
                continue
            if cev.latency_ms[self.objective] < ev.latency_ms[self.objective]:
                self.log.append(f"int8 first: level L{i} then {len(keys)} float choice(s), "
                                f"{scalar(self._usage(cev)):.3g} of the budget: faster than floats alone")
                return cand, cev
            self.log.append("int8 first: within budget but not faster than the float choices alone")
            return point, ev
        self.log.append(f"int8 first: level L{i} with float choices stayed over the budget")
        return point, ev

    def _never_slower(self, point: Point, ev: Evaluation, base: Evaluation, sens: dict[str, Sensitivity],
                      quant: dict[str, Any]) -> tuple[Point, Evaluation]:
        while True:
            slower = [t for t in self.targets if ev.ok and ev.latency_ms[t] > base.latency_ms[t] * (1 + 1e-9)]
            if ev.ok and not slower:
                return point, ev
            if point == Point():
                return point, base
            t = slower[0] if slower else self.objective
            # drop the choice that costs most on that target (int8 counts as one choice)
            items = [(sens[k].saved_us.get(t, 0.0), k) for k in point.choices]
            if point.quant is not None:
                items.append((quant.get("whole", {}).get("saved_us", {}).get(t, 0.0), INT8_SITE))
            _, worst = min(items)
            self.log.append(f"never slower: predicted slower on {t}; dropped {worst}")
            if worst == INT8_SITE:
                point = Point.of(point.choices)
            else:
                q = None if point.quant is None else dict(point.quant)
                point = Point.of([k for k in point.choices if k != worst], q, point.float_ops)
            ev = self.evaluate([point], phase="never slower")[0]
