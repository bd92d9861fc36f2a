"""The search space of a real model: the passes' per-site decisions, built through the engine.

:class:`PassSpace` implements :class:`rewriter.optimizer.search.SearchSpace` with the per-site pass API
(``rewriter.engine.plan`` / ``apply_pass(..., selection=...)``, ``Decision``) and the held-out splits
(``rewriter.inputs.split_inputs``). Those modules are imported inside the functions that use them.

A candidate model is the input with the passes applied in their order (asym_interp, interp_deconv, dwpw,
then int8), each with a selection naming every site of the pass (so a site not chosen stays KEEP, whatever
the pass's default). ``resize_commute`` (exact) is not searched: every site it predicts faster on every target
is commuted up front, and the searched passes plan on that model (fidelity is still judged vs the input).
Models after each pass prefix are cached, so candidates that share a prefix are not rebuilt; the original's
outputs on each split are computed once. asym_interp runs with ``compensate`` (the convs consuming a changed
resize are refit on the calibration split) unless the space is built without it.
"""

from __future__ import annotations

import tempfile
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import RewriteError
from ..model import ModelHandle
from .search import KEEP, Candidate, Evaluation, Point

FREE_PASS = "resize_commute"  # exact and predicted faster: applied up front, not searched
FLOAT_PASSES = ("asym_interp", "interp_deconv", "dwpw")
QUANT_PASS = "int8"
ALL_PASSES = (FREE_PASS, *FLOAT_PASSES, QUANT_PASS)
# NNCF settings tried on the validation split (first value = the int8 pass's default); an option the pass
# does not have (e.g. a range estimator before the pass grows one) is left out
QUANT_OPTIONS: dict[str, list[Any]] = {
    "overflow_fix": ["auto", "enable", "disable"],
    "fast_bias_correction": [True, False],
    "preset": ["performance", "mixed"],
    "range_estimator": ["default", "minmax", "mean_minmax", "percentile"],
}
STATE_CACHE = 4  # partially rewritten models kept (each one is a full copy of the weights)


def build_space(spec: Any) -> Any:
    """Turn a space's ``spec()`` back into a space (in a worker process or Ray actor)."""
    return spec.build()


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _parse_prior(details: Mapping[str, Any], choice: str, targets: Sequence[str], single: bool
                 ) -> dict[str, float]:
    """µs saved per target from a decision's ``details["latency_us"]`` (per choice, or flat if ``single``)."""
    lat = details.get("latency_us")
    if not isinstance(lat, Mapping):
        return {}
    if isinstance(lat.get(choice), Mapping):
        lat = lat[choice]
    elif not single:
        return {}
    if isinstance(lat.get("before"), Mapping) and isinstance(lat.get("after"), Mapping):
        lat = {t: {"before": lat["before"].get(t), "after": lat["after"].get(t)} for t in targets}
    out = {}
    for t in targets:
        v = lat.get(t)
        if isinstance(v, Mapping):
            b, a = v.get("before", v.get("before_us")), v.get("after", v.get("after_us"))
        elif isinstance(v, (list, tuple)) and len(v) == 2:
            b, a = v
        else:
            continue
        if isinstance(b, (int, float)) and isinstance(a, (int, float)):
            out[t] = float(b) - float(a)
    return out


def _dwpw_prior(details: Mapping[str, Any], rank: int, targets: Sequence[str]) -> dict[str, float]:
    """µs saved per target by a rank-``rank`` pair, from the conv's shape in the decision details."""
    from ..cost import conv_cost_us, dwpw_pair_cost_us

    try:
        cin, cout = int(details["cin"]), int(details["cout"])
        k = int(details["kernel"][0])
        h, w = (int(x) for x in details["out_hw"])
    except (KeyError, TypeError, ValueError, IndexError):
        return {}
    out = {}
    for t in targets:
        form = "split" if targets[0] == "cpu" else "multiplier"
        out[t] = conv_cost_us(t, cin, cout, k, h, w) - dwpw_pair_cost_us(t, cin, cout, k, h, w, rank, form)
    return out


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, worst and the standard error of the mean ("sem", with 2+ rows) per metric over the rows."""
    from ..metrics import HIGHER_IS_BETTER, worst_of

    mean: dict[str, float] = {}
    worst: dict[str, float] = {}
    sem: dict[str, float] = {}
    for k in HIGHER_IS_BETTER:
        vals = [float(r[k]) for r in rows if k in r]
        if vals:
            mean[k], worst[k] = float(np.mean(vals)), float(worst_of(k, vals))
            if len(vals) > 1 and all(np.isfinite(vals)):
                sem[k] = float(np.std(vals, ddof=1) / np.sqrt(len(vals)))
    out = {"mean": mean, "worst": worst}
    if sem:
        out["sem"] = sem
    return out


@dataclass(frozen=True)
class PassSpaceSpec:
    """Picklable recipe for a PassSpace: the model file and the settings."""

    model_path: str
    targets: tuple[str, ...]
    passes: tuple[str, ...]
    calib: str | None
    images: str | None
    seed: int
    max_ranks: int
    input_shape: dict[str, list[int]] | None = None
    compensate: bool = True

    def build(self) -> PassSpace:
        return PassSpace(ModelHandle.load(self.model_path), targets=self.targets, passes=self.passes,
                         calib=self.calib, images=self.images, seed=self.seed, max_ranks=self.max_ranks,
                         input_shape=self.input_shape, compensate=self.compensate)


@dataclass
class _State:
    model: ModelHandle
    plans: dict[str, list[Any]] = field(default_factory=dict)  # pass name → decisions planned on this state


class PassSpace:
    """Per-site choices of the passes on one model, with candidate building and evaluation."""

    def __init__(self, model: ModelHandle, *, targets: Sequence[str] = ("mtl",),
                 passes: Sequence[str] = ALL_PASSES, calib: str | None = None, images: str | None = None,
                 seed: int = 0, max_ranks: int = 3, input_shape: dict[str, list[int]] | None = None,
                 splits: Any = None, compensate: bool = True):
        from ..inputs import split_inputs
        from ..passbase import PassContext, load_passes

        bad = [p for p in passes if p not in ALL_PASSES]
        if bad:
            raise RewriteError(f"--passes: optimize searches {', '.join(ALL_PASSES)}; not {', '.join(bad)}")
        self.original = model
        self.targets = tuple(targets)
        self.passes = tuple(p for p in ALL_PASSES if p in passes)  # always in pass order, int8 last
        self.calib, self.images, self.seed = calib, images, seed
        self.max_ranks = max_ranks
        self.compensate = compensate
        self.input_shape = input_shape
        self.registry = load_passes()
        self.splits = splits if splits is not None else split_inputs(model, calib, images, seed=seed)
        ctx = PassContext(calib_dir=calib, images_dir=images, targets=self.targets, seed=seed, original=model)
        ctx.splits = self.splits  # PassContext grows this field with the splits; passes fit on .calibration
        if input_shape is not None:
            ctx.input_shape = input_shape
        self.ctx = ctx
        self._pass_objs: dict[tuple, Any] = {}
        self._states: OrderedDict[tuple, _State] = OrderedDict()
        self._refs: dict[str, list[list[np.ndarray]]] = {}
        self._quantized: OrderedDict[Point, tuple[ModelHandle, list[str]]] = OrderedDict()
        self._cands: dict[str, Candidate] | None = None
        self._decisions: dict[tuple[str, str], Any] = {}  # (pass, site) → Decision on the input model
        self._prefixes: dict[str, Any] = {}  # feeds digest → refit.Prefix (None: no usable cut) above every site
        ctx.shared_prefix = self.shared_prefix
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.commuted: list[Any] = []  # resize_commute's decisions taken up front
        self.start = self._commute(model) if FREE_PASS in self.passes else model

    def _commute(self, model: ModelHandle) -> ModelHandle:
        """The input with every resize_commute site predicted faster on every target commuted (exact)."""
        from ..engine import apply_pass, plan

        p = self.pass_obj(FREE_PASS)
        decisions = plan(model, p, self.ctx)
        for d in decisions:
            self._decisions[(FREE_PASS, d.site)] = d
        faster = set()
        for d in decisions:  # never slower on any target: the search's result must not be
            saved = _parse_prior(d.details, d.choice, self.targets, True) if d.will_change else {}
            if saved and all(v > 0 for v in saved.values()):
                faster.add(d.site)
        if not faster:
            return model
        out = model.clone()
        res = apply_pass(out, p, self.ctx, selection={d.site: d.choice if d.site in faster else KEEP
                                                      for d in decisions})
        self.commuted = [d for d in res.decisions if d.will_change]
        return out

    # ---- passes and states ---------------------------------------------------------------------------
    def pass_obj(self, name: str, options: Mapping[str, Any] | None = None) -> Any:
        key = (name, tuple(sorted((options or {}).items())))
        if key not in self._pass_objs:
            opts = dict(options or {})
            if name == "dwpw" and "min_gain" in self.registry[name].options:
                opts.setdefault("min_gain", None)  # the search, not the pass, decides what is faster
            if name == "asym_interp" and "compensate" in self.registry[name].options:
                # refitting the convs after a changed resize removes ~30% of its error on the trained proxy
                opts.setdefault("compensate", self.compensate)
            self._pass_objs[key] = self.registry[name](**opts)
        return self._pass_objs[key]

    def _plan(self, state: _State, name: str, options: Mapping[str, Any] | None = None) -> list[Any]:
        from ..engine import plan

        key = name if not options else f"{name}{sorted(options.items())}"
        if key not in state.plans:
            state.plans[key] = plan(state.model, self.pass_obj(name, options), self.ctx)
        return state.plans[key]

    def _state(self, key: tuple) -> _State | None:
        if key == ():
            return self._states.setdefault((), _State(self.start))
        st = self._states.get(key)
        if st is not None:
            self._states.move_to_end(key)
        return st

    def _remember(self, key: tuple, st: _State) -> None:
        self._states[key] = st
        while len(self._states) > STATE_CACHE + 1:  # the input's state is never evicted
            old = next(k for k in self._states if k != ())
            del self._states[old]

    def _apply(self, prev: _State, name: str, chosen: Mapping[str, str], options: Mapping[str, Any] | None,
               notes: list[str], default: str = KEEP) -> _State:
        """``prev`` with pass ``name`` applied: chosen sites take their choice, every other site ``default``."""
        from ..engine import apply_pass

        decisions = self._plan(prev, name, options)
        selection = {}
        for d in decisions:
            want = chosen.get(d.site, default)
            if want not in d.choices:
                if d.site in chosen:
                    notes.append(f"{name}: {d.site} cannot take {want} here (choices {', '.join(d.choices)})")
                want = KEEP
            selection[d.site] = want
        if all(v == KEEP for v in selection.values()):
            return prev
        model = prev.model.clone()
        apply_pass(model, self.pass_obj(name, options), self.ctx, selection=selection)
        return _State(model)

    def build(self, point: Point) -> tuple[ModelHandle, list[str]]:
        """The candidate model for ``point`` and notes on choices that did not apply."""
        cands = self._candidates()
        per_pass: dict[str, dict[str, str]] = {}
        for key in point.choices:
            c = cands.get(key)
            if c is None:
                raise RewriteError(f"unknown choice {key!r}")
            for pass_name, choice in c.steps:
                per_pass.setdefault(pass_name, {})[c.site] = choice
        notes: list[str] = []
        key: tuple = ()
        st = self._state(())
        for name in FLOAT_PASSES:
            if name not in self.passes or not per_pass.get(name):
                continue
            key = key + ((name, tuple(sorted(per_pass[name].items()))),)
            nxt = self._state(key)
            if nxt is None:
                nxt = self._apply(st, name, per_pass[name], None, notes)
                self._remember(key, nxt)
            st = nxt
        if point.quant is None:
            return st.model, notes
        if point in self._quantized:  # the search evaluates its final point on two splits, then saves it
            self._quantized.move_to_end(point)
            return self._quantized[point]
        floats = {s: KEEP for s in point.float_ops}
        final = self._apply(st, QUANT_PASS, floats, dict(point.quant), notes, default="int8")
        self._quantized[point] = (final.model, notes)
        while len(self._quantized) > 2:
            self._quantized.popitem(last=False)
        return final.model, notes

    # ---- the SearchSpace protocol --------------------------------------------------------------------
    def candidates(self) -> list[Candidate]:
        return list(self._candidates().values())

    def _candidates(self) -> dict[str, Candidate]:
        if self._cands is not None:
            return self._cands
        out: dict[str, Candidate] = {}
        st0 = self._state(())

        def add(c: Candidate) -> None:
            out.setdefault(c.key, c)

        if "asym_interp" in self.passes:
            for d in self._plan(st0, "asym_interp"):
                self._decisions[("asym_interp", d.site)] = d
                others = [c for c in d.choices if c != KEEP]
                for c in others:
                    prior = _parse_prior(d.details, c, self.targets, len(others) == 1)
                    add(Candidate(d.site, (("asym_interp", c),), d.op, tuple(prior.items())))
        if "interp_deconv" in self.passes:
            for d in self._plan(st0, "interp_deconv"):
                self._decisions[("interp_deconv", d.site)] = d
                if "deconv" in d.choices:
                    prior = _parse_prior(d.details, "deconv", self.targets, True)
                    add(Candidate(d.site, (("interp_deconv", "deconv"),), d.op, tuple(prior.items())))
            if "asym_interp" in self.passes:
                # a site in align_corners can be lowered only after asym_interp: one combined choice
                for mode in ("half_pixel", "asymmetric"):
                    asym = {s: mode for (p, s), d in self._decisions.items()
                            if p == "asym_interp" and mode in d.choices}
                    if not asym:
                        continue
                    st = self._apply(st0, "asym_interp", asym, {"compensate": False}, [])  # to plan only
                    for d in self._plan(st, "interp_deconv"):
                        if "deconv" in d.choices and d.site in asym:
                            prior = _parse_prior(d.details, "deconv", self.targets, True)
                            add(Candidate(d.site, (("asym_interp", mode), ("interp_deconv", "deconv")), d.op,
                                          tuple(prior.items())))
        if "dwpw" in self.passes:
            for d in self._plan(st0, "dwpw"):
                self._decisions[("dwpw", d.site)] = d
                ranks = [c for c in d.choices if c.startswith("rank")]
                priced = []
                for c in ranks:
                    prior = _parse_prior(d.details, c, self.targets, len(ranks) == 1)
                    if not prior:
                        try:
                            prior = _dwpw_prior(d.details, int(c[4:]), self.targets)
                        except ValueError:
                            prior = {}
                    priced.append((c, prior))
                known = [(c, p) for c, p in priced if p]
                if known:  # the ranks the cost model says are faster on the objective
                    keep = [(c, p) for c, p in known if p.get(self.targets[0], 0.0) > 0][: self.max_ranks]
                else:  # no shape to price it: the lowest ranks, judged by building them
                    keep = priced[: self.max_ranks]
                for c, prior in keep:
                    add(Candidate(d.site, (("dwpw", c),), d.op, tuple(prior.items())))
        self._cands = out
        return out

    def quant_options(self) -> dict[str, list[Any]]:
        if QUANT_PASS not in self.passes:
            return {}
        have = self.registry[QUANT_PASS].options
        out = {}
        for k, values in QUANT_OPTIONS.items():
            if k in have:
                choices = have[k].choices
                vals = [v for v in values if choices is None or v in choices]
                default = have[k].default
                vals = [default] + [v for v in vals if v != default]
                if len(vals) > 1:
                    out[k] = vals
        if "overflow_fix" in out:  # "auto" is one of the others on this host: do not quantize twice for it
            try:
                from ..passes.int8 import choose_overflow_fix, host_has_vnni

                auto = choose_overflow_fix("auto", self.targets, host_has_vnni())[0]
                out["overflow_fix"] = [auto] + [v for v in out["overflow_fix"] if v not in ("auto", auto)]
            except (ImportError, AttributeError):
                pass
        return out

    def quant_sites(self) -> list[str]:
        if QUANT_PASS not in self.passes:
            return []
        decisions = self._plan(self._state(()), QUANT_PASS)
        for d in decisions:
            self._decisions[(QUANT_PASS, d.site)] = d
        return [d.site for d in decisions if "int8" in d.choices]

    def decision(self, pass_name: str, site: str) -> Any:
        """The engine's Decision for ``site`` on the input model (None if it was never planned)."""
        return self._decisions.get((pass_name, site))

    def reference(self, split: str) -> list[list[np.ndarray]]:
        """The input model's outputs on ``split`` (computed once)."""
        if split not in self._refs:
            from ..runtime import Runner

            inputs = getattr(self.splits, split)
            runner = Runner(self.original)
            self._refs[split] = [list(runner.run(f).values()) for f in inputs.feeds]
        return self._refs[split]

    def latency(self, model: ModelHandle) -> dict[str, float]:
        """Predicted ms per target."""
        from ..cost import predict

        return {t: float(predict(model, t, input_shape=self.input_shape).total_ms) for t in self.targets}

    def shared_prefix(self, feeds: list[dict[str, np.ndarray]], sites: Sequence[str]) -> Any:
        """The start model's activations on ``feeds`` at the cut upstream of every candidate site, captured once
        (:class:`rewriter.refit.Prefix`). Every model the space builds equals the start above that cut, so
        a refit or an evaluation runs only the suffix below it (for MiDaS, the decoder: never the encoder
        again). None when ``sites`` are not all candidate sites or there is no usable cut."""
        if self._cands is None or not feeds:
            return None
        every = {c.site for c in self._cands.values()}
        if not every or not set(sites) <= every:
            return None
        import hashlib

        h = hashlib.blake2b(digest_size=16)
        for f in feeds:
            for k in sorted(f):
                h.update(k.encode())
                h.update(np.ascontiguousarray(f[k]).tobytes())
        key = h.hexdigest()
        if key not in self._prefixes:
            from ..refit import Prefix

            pre = Prefix(self.start, list(feeds), sorted(every))
            self._prefixes[key] = pre if pre.acts is not None else None
        return self._prefixes[key]

    def evaluate(self, point: Point, split: str = "validation") -> Evaluation:
        from ..metrics import compare_arrays
        from ..refit import suffix
        from ..runtime import Runner

        t0 = time.perf_counter()
        model, notes = self.build(point)
        inputs = getattr(self.splits, split)
        refs = self.reference(split)
        self._candidates()
        pre = self.shared_prefix(inputs.feeds, []) if point.quant is None and point.choices else None
        if pre is not None:  # float choices only change the graph below the cut: run the suffix alone
            sub, used = suffix(model, pre.acts[0], model.outputs())
            runner = Runner(sub)
            feeds = [{t: (a[t] if t in a else f[t]) for t in used} for f, a in zip(inputs.feeds, pre.acts)]
        else:
            runner, feeds = Runner(model), inputs.feeds
        rows = []
        for name, feed, ref in zip(inputs.names, feeds, refs):
            outs = list(runner.run(feed).values())
            for r, o in zip(ref, outs):
                rows.append({"image": name, **compare_arrays(r, o, depth=True)})
        ev = Evaluation(metrics=_aggregate(rows), latency_ms=self.latency(model),
                        seconds=round(time.perf_counter() - t0, 3), info={"notes": notes} if notes else {})
        return ev

    def spec(self) -> PassSpaceSpec:
        path = self.original.source
        if path is None:  # a model given in memory: workers load it from a temporary copy
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rewrite-optimize-")
            path = Path(self._tmp.name) / ("model.xml" if self.original.format == "ir" else "model.onnx")
            if not path.exists():
                self.original.save(path)
        return PassSpaceSpec(str(path), self.targets, self.passes, self.calib, self.images, self.seed,
                             self.max_ranks, self.input_shape, self.compensate)

    def build_model(self, point: Point) -> ModelHandle:
        """The candidate model for ``point`` as a fresh copy (safe to save or edit)."""
        return self.build(point)[0].clone()


def engine_available() -> bool:
    """Whether the per-site pass API this space needs is installed (rewriter.engine)."""
    return _has("rewriter.engine")
