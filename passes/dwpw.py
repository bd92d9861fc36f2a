"""``dwpw``: full KxK convolutions → depthwise KxK + pointwise 1x1, with rank control and data-aware refit.

The math (per-input-channel truncated SVD) lives in :mod:`rewriter.lowrank`, the refit (captured activations
+ ridge least squares, site by site on the already-rewritten model) in :mod:`rewriter.refit`; this module
picks the sites and their rank and emits ``<conv>/dw`` (or ``<conv>/dw0..`` + ``<conv>/dw_concat`` in split
form) and ``<conv>/pw``, which produces the original output tensor. At full rank (``r >= min(Cout, K²)``) the
pair is exact and is not refit. Each site can take any rank ``rank1 .. rank<full>``.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from rewriter import lowrank
from rewriter.errors import RewriteError
from rewriter.graph import Editor, GraphView, Node
from rewriter.model import ModelHandle
from rewriter.passbase import KEEP, Decision, Option, Outcome, Pass, PassContext, register
from rewriter.refit import ConvGeometry, PairSite, refit_pairs

FORMS = ("auto", "multiplier", "split")
_OWN_NAME = re.compile(r"/(dw|pw|dw\d+|dw_concat|pw_bias)$")  # names this pass gives its nodes
_KIND_REASON = {"depthwise": "depthwise conv: already the cheap form", "pointwise": "1x1 conv: nothing to factor"}


def rank_of(choice: str) -> int:
    return int(choice[len("rank"):])


@register
class DwpwPass(Pass):
    name = "dwpw"
    description = ("full KxK convs → depthwise KxK + pointwise 1x1 (per-channel SVD at a chosen rank), "
                   "refit on calibration activations")
    options = {
        "rank": Option(None, int, "rank r (depthwise channel multiplier); exact when r >= min(Cout, K*K). "
                                  "Default 1 unless energy is given"),
        "energy": Option(None, float, "pick the smallest rank keeping this fraction of each channel's squared "
                                      "singular values (e.g. 0.9); exclusive with rank"),
        "include": Option(None, str, "only convs whose name matches this regex"),
        "exclude": Option(None, str, "skip convs whose name matches this regex"),
        "strided": Option(False, bool, "also factor stride>1 convs (off: encoder downsampling stays)"),
        "refit": Option(True, bool, "refit the pointwise weights so each pair reproduces the original conv's "
                                    "output on calibration activations (skipped when exact)"),
        "refit_depthwise": Option(0, int, "alternating least-squares rounds that also refit the depthwise "
                                          "kernels (0: pointwise only)"),
        "form": Option("auto", str, "depthwise stage: one conv with channel multiplier r, or r plain "
                                    "depthwise convs + Concat (exact, faster on OpenVINO CPU); auto: split "
                                    "when the first --target is cpu, else multiplier", FORMS),
        "min_gain": Option(0.0, (float, type(None)), "skip a site unless the pair is predicted at least this "
                                                     "fraction cheaper than the conv on the first target; "
                                                     "none: never skip"),
        "samples": Option(8, int, "calibration feeds used by the refit"),
        "positions": Option(4096, int, "sampled output positions per site for the refit (2048 more are "
                                       "held out to report its error)"),
    }

    def check_options(self) -> None:
        o = self.opts
        if o.rank is not None and o.energy is not None:
            raise RewriteError("dwpw: give rank or energy, not both")
        if o.rank is not None and o.rank < 1:
            raise RewriteError(f"option dwpw.rank={o.rank}: must be >= 1")
        if o.energy is not None and not 0 < o.energy <= 1:
            raise RewriteError(f"option dwpw.energy={o.energy}: must be in (0, 1]")
        for key in ("include", "exclude"):
            if o[key]:
                try:
                    re.compile(o[key])
                except re.error as e:
                    raise RewriteError(f"option dwpw.{key}={o[key]!r}: bad regex ({e})") from e
        if o.refit_depthwise < 0 or o.samples < 1 or o.positions < 16:
            raise RewriteError("dwpw: refit_depthwise >= 0, samples >= 1 and positions >= 16 please")

    def exact_for(self, changed: list[Decision]) -> bool:
        """Exact when every changed site is factorised at full rank."""
        return bool(changed) and all(rank_of(d.choice) >= d.details["full_rank"] for d in changed)

    # ---- plan ------------------------------------------------------------------------------------------------
    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        target = ctx.targets[0] if ctx.targets else "cpu"
        form = self.opts.form if self.opts.form != "auto" else ("split" if target == "cpu" else "multiplier")
        out = []
        for node in view.of_kind("conv", "depthwise", "grouped", "pointwise"):
            details: dict[str, Any] = _describe(view, node)
            reason, w = self._blocker(view, node)
            if reason is not None:
                out.append(Decision(node.id, self.name, node.kind, (KEEP,), KEEP, reason, details))
                continue
            cout, _, kh, kw = w.shape
            full = lowrank.full_rank(cout, kh, kw)
            choices = (KEEP, *[f"rank{r}" for r in range(1, full + 1)])
            rank = lowrank.rank_for_energy(w, self.opts.energy) if self.opts.energy is not None else \
                min(self.opts.rank or 1, full)
            details.update(self._facts(w, rank, form, target, details, view.bias(node) is not None
                                       and "bias_add" not in node.attrs))
            if "out_hw" in details:  # where the conv runs and where its pair runs, per target (the report's table)
                engines = {t: _engines(t, details, rank) for t in ctx.targets or (target,)}
                k = "x".join(map(str, details["kernel"]))
                details["engine_before"] = {t: {"engine": e[0], "rule": f"{k} conv"} for t, e in engines.items()}
                details["engine_after"] = {t: {"engine": e[1], "rule": f"depthwise {k} + pointwise 1x1, rank {rank}"}
                                           for t, e in engines.items()}
            reason = self._gain_reason(details, target)
            choice = KEEP if reason else f"rank{rank}"
            out.append(Decision(node.id, self.name, node.kind, choices, choice,
                                reason or f"rank {rank} of {full}", details))
        return out

    def _blocker(self, view: GraphView, node: Node) -> tuple[str | None, np.ndarray | None]:
        o = self.opts
        if view.tags.get(node.id) == self.name or _OWN_NAME.search(node.id):
            return "made by dwpw earlier (not factored twice)", None
        if (q := view.weight_quantizer(node)) is not None:
            return f"already quantized (weights behind {q}): not dequantizing", None
        shape = node.attrs.get("weight_shape")
        if shape is None:
            return "dynamic weights (computed at run time): nothing to factor", None
        if len(shape) != 4:
            return f"not a 2-D conv ({len(shape) - 2}-D kernel)", None
        if node.kind in _KIND_REASON:
            return _KIND_REASON[node.kind], None
        if node.kind == "grouped":
            return f"grouped conv (groups={node.attrs['groups']}, e.g. ResNeXt): not a full conv", None
        if "bias" in node.attrs and "bias_add" not in node.attrs and view.bias(node) is None:
            return "dynamic bias (computed at run time): not rewritten", None
        if o.include and not re.search(o.include, node.id):
            return f"name does not match include={o.include!r}", None
        if o.exclude and re.search(o.exclude, node.id):
            return f"name matches exclude={o.exclude!r}", None
        stride = tuple(node.attrs.get("strides") or (1, 1))
        if any(s > 1 for s in stride) and not o.strided:
            return f"strided conv (stride {stride[0]}x{stride[1]}): select it with dwpw.strided=true", None
        w = view.weight(node)  # read only for candidates: weights are most of the model
        if w is None:
            return "dynamic weights (computed at run time): nothing to factor", None
        return None, w.astype(np.float32)

    def _facts(self, w: np.ndarray, rank: int, form: str, target: str, d: dict, has_bias: bool) -> dict:
        cout, cin, kh, kw = w.shape
        ho, wo = d.get("out_hw") or (1, 1)
        dw_macs, pw_macs = lowrank.pair_macs(cin, cout, kh, kw, ho, wo, rank)
        facts = dict(rank=rank, full_rank=lowrank.full_rank(cout, kh, kw),
                     exact=rank >= lowrank.full_rank(cout, kh, kw), energy=round(lowrank.kept_energy(w, rank), 6),
                     form=form if rank > 1 else "multiplier",
                     macs_before=lowrank.conv_macs(cin, cout, kh, kw, ho, wo), macs_after=dw_macs + pw_macs,
                     params_before=int(w.size) + (cout if has_bias else 0),
                     params_after=lowrank.pair_params(cin, cout, kh, kw, rank, has_bias))
        if "out_hw" not in d:
            facts["macs_note"] = "spatial size unknown: MACs are per output pixel"
        facts["cost"] = _costs(target, cin, cout, (kh, kw), (ho, wo), rank, facts["form"])
        return facts

    def _gain_reason(self, d: dict, target: str) -> str | None:
        min_gain, cost = self.opts.min_gain, d["cost"]
        if min_gain is None:
            return None
        gain = 1.0 - cost["after"] / cost["before"] if cost["before"] > 0 else 0.0
        d["gain"] = round(gain, 4)
        if gain < min_gain or (min_gain == 0 and gain <= 0):
            unit = "µs" if cost["source"] == "cost model" else "MACs"
            return (f"not cheaper on {target} at rank {d['rank']}: pair {cost['after']:.4g} vs conv "
                    f"{cost['before']:.4g} {unit} (gain {gain:+.0%}, min_gain {min_gain:g}; "
                    "dwpw.min_gain=none forces it)")
        return None

    # ---- emit ------------------------------------------------------------------------------------------------
    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        node = editor.view.node(decision.site)
        w, a = editor.view.weight(node).astype(np.float32), node.attrs
        fact = lowrank.factorize(w, rank_of(decision.choice))
        form = decision.details["form"] if fact.rank > 1 else "multiplier"
        bias = editor.view.bias(node) if "bias_add" not in a else None  # an IR bias Add stays after the pair
        if bias is None and self.opts.refit and not fact.exact:
            bias = np.zeros(w.shape[0], np.float32)  # a refit fits an offset: give it a home
        name, geo = node.id, dict(strides=a["strides"], dilations=a["dilations"], pads=a["pads"],
                                  auto_pad=a.get("auto_pad", "NOTSET"))
        decision.details.update(rank=fact.rank, exact=fact.exact, form=form)

        def build(b):
            x = b.input(0)
            if form == "split":
                parts = [b.conv(x, k, f"{name}/dw{j}", groups=fact.cin, **geo)
                         for j, k in enumerate(lowrank.split_kernels(fact))]
                mid = b.concat(parts, 1, f"{name}/dw_concat")
            else:
                mid = b.conv(x, fact.dw, f"{name}/dw", groups=fact.cin, **geo)
            return b.conv(mid, np.ascontiguousarray(_pw(fact, form)), f"{name}/pw", strides=[1, 1],
                          dilations=[1, 1], pads=[0, 0, 0, 0], bias=bias)

        editor.replace(decision.site, build)

    # ---- refit -----------------------------------------------------------------------------------------------
    def needs_reference(self, changed: list[Decision], ctx: PassContext) -> bool:
        return bool(self.opts.refit) and not all(d.details["exact"] for d in changed)

    def finish(self, changed: list[Decision], editor: Editor, ctx: PassContext,
               reference: ModelHandle | None) -> Outcome:
        for d in changed:
            d.details["refit"] = ("off" if not self.opts.refit else
                                  "skipped: exact at full rank" if d.details["exact"] else "pending")
        todo = [d for d in changed if d.details["refit"] == "pending"]
        notes = []
        if todo and reference is not None:
            sites = [_pair_site(reference, editor, d) for d in todo]
            notes = refit_pairs(reference, editor, sites, ctx, self.opts.samples, self.opts.positions,
                                self.opts.refit_depthwise, write=_write_pair)
        exact_n = sum(d.details["exact"] for d in changed)
        notes.append(f"{len(changed)} conv(s) factored ({exact_n} exact at full rank)")
        return Outcome(notes=notes, extra=_totals(changed))


def _pw(fact: lowrank.Factorisation, form: str) -> np.ndarray:
    return fact.pw[:, lowrank.split_permutation(fact.cin, fact.rank)] if form == "split" else fact.pw


def _pair_site(reference: ModelHandle, editor: Editor, d: Decision) -> PairSite:
    from rewriter.graph import view

    ref_view = view(reference)
    node = ref_view.node(d.site)
    w = ref_view.weight(node)
    a = node.attrs
    geo = ConvGeometry.from_attrs(w.shape[2:], a["strides"], a["dilations"], a["pads"], a.get("auto_pad", "NOTSET"),
                                  tuple(d.details["in_hw"]) if "in_hw" in d.details else None)
    fact = lowrank.factorize(w, rank_of(d.choice))
    bias = ref_view.bias(node) if "bias_add" not in a else None
    dw = f"{d.site}/dw" if d.details["form"] != "split" else f"{d.site}/dw0"
    return PairSite(d.site, node.outputs[0], dw, geo, fact, bias, d.details,
                    tuple(d.details["out_hw"]) if "out_hw" in d.details else None)


def _write_pair(editor: Editor, s: PairSite) -> None:
    f, form = s.fact, s.details["form"]
    if form == "split":
        for j, k in enumerate(lowrank.split_kernels(f)):
            editor.set_const(f"{s.key}/dw{j}", 1, k)
    else:
        editor.set_const(f"{s.key}/dw", 1, f.dw)
    editor.set_const(f"{s.key}/pw", 1, np.ascontiguousarray(_pw(f, form)))
    if s.refit_bias is not None:
        editor.set_bias(f"{s.key}/pw", s.refit_bias)


def _describe(view: GraphView, node: Node) -> dict[str, Any]:
    d: dict[str, Any] = {}
    ws = node.attrs.get("weight_shape")
    if ws is not None and len(ws) == 4:
        d.update(cin=ws[1], cout=ws[0], kernel=list(ws[2:]))
    for k in ("strides", "dilations", "pads", "auto_pad", "groups"):
        if k in node.attrs:
            v = node.attrs[k]
            d[k] = list(v) if isinstance(v, (tuple, list)) else v
    for key, t in (("in_hw", node.inputs[0]), ("out_hw", node.outputs[0])):
        s = view.static_shape(t)
        if s is not None and len(s) == 4:
            d[key] = s[2:]
    return d


def _costs(target: str, cin: int, cout: int, k: tuple[int, int], hw: tuple[int, int], rank: int,
           form: str) -> dict[str, Any]:
    """Predicted cost of the conv and of the pair on ``target`` (cost model)."""
    from rewriter.cost import conv_cost_us, dwpw_pair_cost_us

    before = float(conv_cost_us(target, cin, cout, k[0], hw[0], hw[1]))
    after = float(dwpw_pair_cost_us(target, cin, cout, k[0], hw[0], hw[1], rank, form))
    return {"target": target, "before": before, "after": after, "source": "cost model"}


def _engines(target: str, d: dict[str, Any], rank: int) -> tuple[str, str]:
    from rewriter.cost import dwpw_engines

    (ho, wo), (kh, _) = d["out_hw"], d["kernel"]
    return dwpw_engines(target, d["cin"], d["cout"], kh, ho, wo, rank, d["form"])


def _totals(changed: list[Decision]) -> dict[str, Any]:
    t: dict[str, Any] = {"sites_factored": len(changed),
                         **{k: sum(d.details[k] for d in changed)
                            for k in ("macs_before", "macs_after", "params_before", "params_after")},
                         "per_site": {d.site: {k: d.details.get(k) for k in (
                             "rank", "energy", "exact", "macs_before", "macs_after", "error_svd",
                             "error_refit", "refit")} for d in changed}}
    errs = [(d.details["error_svd"], d.details["error_refit"]) for d in changed if "error_svd" in d.details]
    if errs:
        t["layer_error_svd_mean"] = round(float(np.mean([a for a, _ in errs])), 6)
        t["layer_error_refit_mean"] = round(float(np.mean([b for _, b in errs])), 6)
    return t
