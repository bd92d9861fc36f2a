"""``dwpw``: full KxK convolutions → depthwise KxK + pointwise 1x1, with rank control and data-aware refit.

The math (per-input-channel truncated SVD) lives once in :mod:`rewriter.lowrank`, the refit (captured
activations + ridge least squares) in :mod:`rewriter.refit`; this module holds the site selection and two
thin graph adapters (ONNX through onnx-graphsurgeon, OpenVINO IR through the opset API).

Per site: ``<conv>/dw`` (or ``<conv>/dw0..`` + ``<conv>/dw_concat`` in split form) and ``<conv>/pw``; the
pointwise conv produces the original output tensor, so downstream nodes, diffs and the locator still find it.
At full rank (``r >= min(Cout, K²)``) the pair is exact and is not refit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rewriter import lowrank
from rewriter.convs import (
    IR_CONV_OPS,
    ConvInfo,
    OnnxIndex,
    ir_conv,
    ir_tap,
    onnx_conv,
    onnx_name,
    replace_ir_constant,
    set_onnx_initializer,
)
from rewriter.errors import RewriteError
from rewriter.model import ModelHandle
from rewriter.passbase import WILL_CHANGE, Option, Pass, PassContext, PassResult, Site, register
from rewriter.refit import (
    ConvGeometry,
    capture,
    gather_outputs,
    im2col,
    refit_dwpw,
    rel_l2,
    split_positions,
)

FORMS = ("auto", "multiplier", "split")
NPU_TARGETS = ("kmb", "mtl")
_OWN_NAME = re.compile(r"/(dw|pw|dw\d+|dw_concat|pw_bias)$")  # names this pass gives its nodes


@dataclass
class ConvSite:
    """A conv as both adapters see it: geometry, weights, shapes, and why it is not a candidate."""

    node: str
    op: str
    reason: str | None = None  # None: candidate
    weight: np.ndarray | None = None  # Cout x Cin x kh x kw
    bias: np.ndarray | None = None  # ONNX bias input (IR keeps bias in a following Add)
    attrs: dict[str, Any] = field(default_factory=dict)  # strides, dilations, pads (t,l,b,r), auto_pad
    in_hw: tuple[int, int] | None = None
    out_hw: tuple[int, int] | None = None
    x_tap: str = ""  # conv input / output tensors, as rewriter.runtime taps
    y_tap: str = ""
    ref: Any = None  # gs.Node or ov Node

    @property
    def kernel(self) -> tuple[int, int]:
        return tuple(self.weight.shape[2:]) if self.weight is not None else (0, 0)

    def geometry(self) -> ConvGeometry:
        return ConvGeometry.from_attrs(self.kernel, self.attrs.get("strides"), self.attrs.get("dilations"),
                                       self.attrs.get("pads"), self.attrs.get("auto_pad", "NOTSET"), self.in_hw)


@dataclass
class Plan:
    """What the pass will do to one candidate."""

    site: ConvSite
    fact: lowrank.Factorisation
    form: str
    details: dict[str, Any]
    refit_bias: np.ndarray | None = None  # pointwise bias found by the refit (None: keep the original)


@register
class DwpwPass(Pass):
    name = "dwpw"
    description = ("full KxK convs → depthwise KxK + pointwise 1x1 (per-channel SVD at a chosen rank), "
                   "refit on calibration activations")
    formats = ("onnx", "ir")
    exact = False
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
        "min_gain": Option(0.0, (float, str), "skip a site unless the pair is predicted at least this fraction "
                                              "cheaper than the conv on the first target; none: never skip"),
        "samples": Option(8, int, "calibration feeds used by the refit"),
        "positions": Option(4096, int, "sampled output positions per site for the refit (2048 more are "
                                       "held out to report its error)"),
    }

    def check_options(self) -> None:
        o = self.opts
        if o["rank"] is not None and o["energy"] is not None:
            raise RewriteError("dwpw: give rank or energy, not both")
        if o["rank"] is not None and o["rank"] < 1:
            raise RewriteError(f"option dwpw.rank={o['rank']}: must be >= 1")
        if o["energy"] is not None and not 0 < o["energy"] <= 1:
            raise RewriteError(f"option dwpw.energy={o['energy']}: must be in (0, 1]")
        if isinstance(o["min_gain"], str):
            if o["min_gain"].lower() not in ("none", "off"):
                raise RewriteError(f"option dwpw.min_gain={o['min_gain']!r}: expected a number or none")
            o["min_gain"] = None
        for key in ("include", "exclude"):
            if o[key]:
                try:
                    re.compile(o[key])
                except re.error as e:
                    raise RewriteError(f"option dwpw.{key}={o[key]!r}: bad regex ({e})") from e
        if o["refit_depthwise"] < 0 or o["samples"] < 1 or o["positions"] < 16:
            raise RewriteError("dwpw: refit_depthwise >= 0, samples >= 1 and positions >= 16 please")
        self._exact_result: bool | None = None

    def is_exact(self) -> bool:
        """Exact when every changed site was factorised at full rank (known after ``apply``)."""
        return bool(self._exact_result)

    # ---- match -------------------------------------------------------------------------------------------
    def match(self, model: ModelHandle, ctx: PassContext) -> list[Site]:
        return [s for s, _ in self._plan(model, ctx)]

    def _plan(self, model: ModelHandle, ctx: PassContext) -> list[tuple[Site, Plan | None]]:
        adapter = _adapter(model, ctx)
        tags = model.tags()
        target = ctx.targets[0] if ctx.targets else "cpu"
        form = self.opts["form"]
        if form == "auto":
            form = "split" if target == "cpu" else "multiplier"
        out = []
        for cs in adapter.convs():
            own = tags.get(cs.node) == self.name or _OWN_NAME.search(cs.node)
            reason = "made by dwpw earlier (not factored twice)" if own else cs.reason or self._select(cs)
            details = _describe(cs)
            plan = None
            if reason is None:
                plan, reason = self._factor(cs, form, target, details)
            out.append((Site(cs.node, cs.op, reason or WILL_CHANGE, details), plan))
        return out

    def _select(self, cs: ConvSite) -> str | None:
        o = self.opts
        if o["include"] and not re.search(o["include"], cs.node):
            return f"name does not match include={o['include']!r}"
        if o["exclude"] and re.search(o["exclude"], cs.node):
            return f"name matches exclude={o['exclude']!r}"
        stride = tuple(cs.attrs.get("strides") or (1, 1))
        if any(s > 1 for s in stride) and not o["strided"]:
            return f"strided conv (stride {stride[0]}x{stride[1]}): select it with dwpw.strided=true"
        return None

    def _factor(self, cs: ConvSite, form: str, target: str,
                details: dict[str, Any]) -> tuple[Plan | None, str | None]:
        w = cs.weight
        cout, cin, kh, kw = w.shape
        if self.opts["energy"] is not None:
            rank = lowrank.rank_for_energy(w, self.opts["energy"])
        else:
            rank = self.opts["rank"] or 1
        fact = lowrank.factorize(w, rank)
        ho, wo = cs.out_hw or (1, 1)
        dw_macs, pw_macs = lowrank.pair_macs(cin, cout, kh, kw, ho, wo, fact.rank)
        has_bias = cs.bias is not None
        details.update(
            rank=fact.rank, full_rank=lowrank.full_rank(cout, kh, kw), exact=fact.exact,
            energy=round(fact.energy, 6), form=form if fact.rank > 1 else "multiplier",
            macs_before=lowrank.conv_macs(cin, cout, kh, kw, ho, wo), macs_after=dw_macs + pw_macs,
            params_before=int(w.size) + (cout if has_bias else 0),
            params_after=lowrank.pair_params(cin, cout, kh, kw, fact.rank, has_bias))
        if cs.out_hw is None:
            details["macs_note"] = "spatial size unknown: MACs are per output pixel"
        cost = _costs(target, cin, cout, (kh, kw), cs.out_hw or (1, 1), fact.rank, details["form"])
        details["cost"] = cost
        plan = Plan(cs, fact, details["form"], details)
        min_gain = self.opts["min_gain"]
        if min_gain is not None:
            gain = 1.0 - cost["after"] / cost["before"] if cost["before"] > 0 else 0.0
            details["gain"] = round(gain, 4)
            if gain < min_gain or (min_gain == 0 and gain <= 0):
                unit = "µs" if cost["source"] == "cost model" else "MACs"
                return None, (f"not cheaper on {target} at rank {fact.rank}: pair {cost['after']:.4g} vs conv "
                              f"{cost['before']:.4g} {unit} (gain {gain:+.0%}, min_gain {min_gain:g}; "
                              f"dwpw.min_gain=none forces it)")
        return plan, None

    # ---- apply -------------------------------------------------------------------------------------------
    def apply(self, model: ModelHandle, ctx: PassContext) -> PassResult:
        planned = self._plan(model, ctx)
        sites = [s for s, _ in planned]
        plans = [p for _, p in planned if p is not None]
        notes: list[str] = []
        self._exact_result = bool(plans) and all(p.fact.exact for p in plans)
        if not plans:
            return PassResult(sites, notes=notes, extra=_totals([]))
        to_refit = [p for p in plans if not p.fact.exact] if self.opts["refit"] else []
        reference = model.clone() if to_refit else None
        adapter = _adapter(model, ctx)
        new_nodes = adapter.rewrite(plans, refit=bool(to_refit))
        for p in plans:
            p.details["refit"] = ("off" if not self.opts["refit"] else
                                  "skipped: exact at full rank" if p.fact.exact else "pending")
        if to_refit:
            notes += self._refit(model, reference, to_refit, ctx)
        model.tag(sorted(set(new_nodes)), self.name)
        exact_n = sum(p.fact.exact for p in plans)
        notes.append(f"{len(plans)} conv(s) factored ({exact_n} exact at full rank)")
        return PassResult(sites, new_nodes=sorted(set(new_nodes)), notes=notes, extra=_totals(plans))

    def _refit(self, model: ModelHandle, reference: ModelHandle, plans: list[Plan],
               ctx: PassContext) -> list[str]:
        """Refit site by site, in waves of mutually independent sites, on the rewritten model's inputs."""
        calib = ctx.calibration(reference)
        feeds = calib.feeds[: self.opts["samples"]]
        notes = list(calib.notes)
        if not calib.is_images:
            notes.append("dwpw refit used seeded random inputs (the model input is not an image): layer "
                         "errors below are on random data")
        n = len(feeds)
        fit_n, held_n = self.opts["positions"], max(256, self.opts["positions"] // 2)
        pos = {}
        for i, p in enumerate(plans):
            out_hw = p.site.out_hw or _probe_hw(reference, feeds[0], p.site)
            pos[p.site.node] = split_positions(n, out_hw, fit_n, held_n, seed=ctx.seed + i)
        by_out = {p.site.y_tap: p for p in plans}
        targets = _Samples()
        capture(reference, feeds, list(by_out),
                reduce=lambda tap, k, y: targets.add(by_out[tap], k, pos, lambda r: gather_outputs(y, r)))
        deps = _adapter(reference, ctx).dependencies([p.site.node for p in plans])
        done: set[str] = set()
        while len(done) < len(plans):
            wave = [p for p in plans if p.site.node not in done and deps[p.site.node] <= done]
            if not wave:  # cannot happen in a DAG; refit the rest together rather than loop forever
                wave = [p for p in plans if p.site.node not in done]
            adapter = _adapter(model, ctx)
            by_in: dict[str, list[Plan]] = {}
            for p in wave:  # convs may share an input tensor
                by_in.setdefault(adapter.input_tap(p.site), []).append(p)
            inputs = _Samples()

            def pick_patches(tap, k, x, by_in=by_in, inputs=inputs):
                for p in by_in[tap]:
                    g = p.site.geometry()
                    inputs.add(p, k, pos, lambda r, g=g: im2col(x, g.kernel, g.stride, g.dilation, g.pads, r))
                return np.empty(0)

            capture(model, feeds, list(by_in), reduce=pick_patches)
            for p in wave:
                self._refit_site(p, inputs.get(p, "fit"), targets.get(p, "fit"), inputs.get(p, "held"),
                                 targets.get(p, "held"))
                done.add(p.site.node)
            adapter.stage_weights(wave)
        return notes

    def _refit_site(self, p: Plan, x_fit, y_fit, x_held, y_held) -> None:
        f = p.fact
        bias = p.site.bias if p.site.bias is not None else np.zeros(f.pw.shape[0], np.float32)
        before = _pair_error(x_held, y_held, f.dw, f.pw, bias, f.rank)
        dw, pw, b = refit_dwpw(x_fit, y_fit, f.dw, f.pw, bias, depthwise_iters=self.opts["refit_depthwise"])
        after = _pair_error(x_held, y_held, dw, pw, b, f.rank)
        d = p.details
        d.update(error_svd=round(before, 6), refit_positions=[len(x_fit), len(x_held)])
        if after < before:
            f.dw, f.pw, p.refit_bias = dw, pw, b
            d.update(error_refit=round(after, 6), refit="pointwise" + (
                f"+depthwise ({self.opts['refit_depthwise']} ALS rounds)" if self.opts["refit_depthwise"] else ""))
        else:  # the held-out error says the fit overfitted: keep the SVD weights
            p.refit_bias = None
            d.update(error_refit=round(before, 6), refit="kept SVD weights (refit did not lower held-out error)")


class _Samples:
    """Per-site fit / held-out samples, gathered feed by feed while a capture runs (memory stays bounded)."""

    def __init__(self) -> None:
        self.parts: dict[tuple[str, str], list[np.ndarray]] = {}

    def add(self, plan: Plan, k: int, pos: dict, take) -> np.ndarray:
        fit, held = pos[plan.site.node]
        for key, rows in (("fit", fit), ("held", held)):
            self.parts.setdefault((plan.site.node, key), []).append(take(_feed_rows(rows, k)))
        return np.empty(0)  # capture itself keeps nothing

    def get(self, plan: Plan, key: str) -> np.ndarray:
        return np.concatenate(self.parts[(plan.site.node, key)])


def _feed_rows(positions: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``positions`` in feed ``k``, renumbered to batch index 0 (each feed is captured alone)."""
    rows = positions[positions[:, 0] == k].copy()
    rows[:, 0] = 0
    return rows


def _pair_error(x: np.ndarray, y: np.ndarray, dw: np.ndarray, pw: np.ndarray, b: np.ndarray | None,
                rank: int) -> float:
    p, cin = x.shape[:2]
    z = np.einsum("pit,ijt->pij", x.reshape(p, cin, -1).astype(np.float64),
                  dw.reshape(cin, rank, -1).astype(np.float64)).reshape(p, -1)
    pred = z @ pw.reshape(pw.shape[0], -1).T.astype(np.float64)
    return rel_l2(pred + (0 if b is None else b), y)


def _probe_hw(model: ModelHandle, feed: dict, cs: ConvSite) -> tuple[int, int]:
    out = capture(model, [feed], [cs.y_tap])[cs.y_tap]
    return out.shape[2], out.shape[3]


def _describe(cs: ConvSite) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if cs.weight is not None:
        cout, cin, kh, kw = cs.weight.shape
        d.update(cin=cin, cout=cout, kernel=[kh, kw])
    for k in ("strides", "dilations", "pads", "auto_pad", "groups"):
        if k in cs.attrs:
            v = cs.attrs[k]
            d[k] = list(v) if isinstance(v, (tuple, list)) else v
    if cs.in_hw:
        d["in_hw"] = list(cs.in_hw)
    if cs.out_hw:
        d["out_hw"] = list(cs.out_hw)
    return d


def _costs(target: str, cin: int, cout: int, k: tuple[int, int], hw: tuple[int, int], rank: int,
           form: str) -> dict[str, Any]:
    """Predicted cost of the conv and of the pair on ``target`` (cost model; MACs until it exists)."""
    try:
        from rewriter.cost import conv_cost_us, dwpw_pair_cost_us

        before = float(conv_cost_us(target, cin, cout, k[0], hw[0], hw[1]))
        after = float(dwpw_pair_cost_us(target, cin, cout, k[0], hw[0], hw[1], rank, form))
        return {"target": target, "before": before, "after": after, "source": "cost model"}
    except (ImportError, TypeError, AttributeError, ValueError):  # no (compatible) cost model yet
        dw, pw = lowrank.pair_macs(cin, cout, k[0], k[1], hw[0], hw[1], rank)
        return {"target": target, "before": float(lowrank.conv_macs(cin, cout, k[0], k[1], hw[0], hw[1])),
                "after": float(dw + pw), "source": "MACs (no cost model for this shape)"}


def _totals(plans: list[Plan]) -> dict[str, Any]:
    t: dict[str, Any] = {"sites_factored": len(plans),
                         "macs_before": sum(p.details["macs_before"] for p in plans),
                         "macs_after": sum(p.details["macs_after"] for p in plans),
                         "params_before": sum(p.details["params_before"] for p in plans),
                         "params_after": sum(p.details["params_after"] for p in plans),
                         "per_site": {p.site.node: {k: p.details.get(k) for k in (
                             "rank", "energy", "exact", "macs_before", "macs_after", "error_svd",
                             "error_refit", "refit")} for p in plans}}
    errs = [(p.details["error_svd"], p.details["error_refit"]) for p in plans if "error_svd" in p.details]
    if errs:
        t["layer_error_svd_mean"] = round(float(np.mean([a for a, _ in errs])), 6)
        t["layer_error_refit_mean"] = round(float(np.mean([b for _, b in errs])), 6)
    return t


def _adapter(model: ModelHandle, ctx: PassContext):
    return _OnnxAdapter(model, ctx) if model.format == "onnx" else _IrAdapter(model, ctx)


# ---- shapes (both formats, through OpenVINO: robust to Pad chains and dynamic inputs) -------------------------
def _ov_static(model: ModelHandle, ctx: PassContext):
    """An ``openvino.Model`` of ``model`` with static shapes (dynamic inputs fixed to the calibration feeds)."""
    m = model.ov_model()
    if model.format == "ir":
        m = m.clone()
    if any(p.get_partial_shape().is_dynamic for p in m.inputs):
        feed = ctx.calibration(model).feeds[0]
        try:
            m.reshape({p.get_any_name(): list(feed[p.get_any_name()].shape) for p in m.inputs})
        except Exception:  # shapes stay unknown: MACs are reported per pixel
            return m
    return m


def _static_hw(shape) -> tuple[int, int] | None:
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or not shape.is_static:
        return None
    return int(shape[2].get_length()), int(shape[3].get_length())


# ---- ONNX adapter --------------------------------------------------------------------------------------------
class _OnnxAdapter:
    def __init__(self, model: ModelHandle, ctx: PassContext):
        self.model, self.ctx = model, ctx

    def _shapes(self) -> dict[str, tuple[int, int]]:
        out = {}
        try:
            m = _ov_static(self.model, self.ctx)
        except Exception:  # an unconvertible model still gets sites, with per-pixel MACs
            return out
        for p in m.inputs:
            for n in p.get_names():
                if (hw := _static_hw(p.get_partial_shape())) is not None:
                    out[n] = hw
        for op in m.get_ops():
            for o in op.outputs():
                hw = _static_hw(o.get_partial_shape())
                if hw is not None:
                    for n in o.get_names():
                        out[n] = hw
        return out

    def convs(self) -> list[ConvSite]:
        g = self.model.onnx.graph
        convs = [n for n in g.node if n.op_type == "Conv"]
        index = OnnxIndex(self.model.onnx) if convs else None
        shapes = self._shapes() if convs else {}
        return [self._site(n, index, shapes) for n in convs]

    def _site(self, n, index: OnnxIndex, shapes) -> ConvSite:
        c = onnx_conv(n, index)
        cs = ConvSite(c.name, "Conv", attrs=c.attrs, x_tap=c.in_tap, y_tap=c.out_tap, ref=n)
        if _weight_reason(c, cs):
            return cs
        cs.in_hw, cs.out_hw = shapes.get(n.input[0]), shapes.get(n.output[0])
        cs.reason = _shape_reason(cs)
        if cs.reason is None:
            cs.bias = c.bias
            if c.bias_dynamic:
                cs.reason = "dynamic bias (computed at run time): not rewritten"
        return cs

    def dependencies(self, names: list[str]) -> dict[str, set[str]]:
        """{conv: the convs among ``names`` upstream of its input}, on this (unrewritten) model."""
        g = self.model.onnx.graph
        producers = {o: n for n in g.node for o in n.output}
        by_name = {onnx_name(n): n for n in g.node}
        return {c: _ancestors(by_name[c].input[0], producers.get, lambda n: list(n.input), onnx_name, set(names))
                for c in names}

    def input_tap(self, cs: ConvSite) -> str:
        return cs.x_tap  # the input tensor keeps its name (upstream pw outputs keep the conv's name)

    def rewrite(self, plans: list[Plan], refit: bool) -> list[str]:
        import onnx_graphsurgeon as gs

        g = gs.import_onnx(self.model.onnx)
        nodes = {n.name or n.outputs[0].name: n for n in g.nodes if n.op == "Conv"}  # as onnx_name
        made: list[str] = []
        for p in plans:
            conv = nodes[p.site.node]
            made += self._rewrite_one(g, conv, p, refit and not p.fact.exact)
        g.toposort()
        self.model.set_onnx(gs.export_onnx(g))
        return made

    def _rewrite_one(self, g, conv, p: Plan, with_bias: bool) -> list[str]:
        import onnx_graphsurgeon as gs

        name, f, x = p.site.node, p.fact, conv.inputs[0]
        dtype = p.site.weight.dtype
        cin, r = f.cin, f.rank
        base = {k: v for k, v in conv.attrs.items() if k not in ("group", "kernel_shape")}
        base["kernel_shape"] = list(p.site.kernel)
        made = []
        if p.form == "split" and r > 1:
            parts = []
            for j, k in enumerate(lowrank.split_kernels(f)):
                out = gs.Variable(f"{name}/dw{j}_out", dtype=x.dtype)
                g.nodes.append(gs.Node("Conv", f"{name}/dw{j}", {**base, "group": cin},
                                       [x, gs.Constant(f"{name}/dw{j}.weight", k.astype(dtype))], [out]))
                parts.append(out)
                made.append(f"{name}/dw{j}")
            mid = gs.Variable(f"{name}/dw_out", dtype=x.dtype)
            g.nodes.append(gs.Node("Concat", f"{name}/dw_concat", {"axis": 1}, parts, [mid]))
            made.append(f"{name}/dw_concat")
            pw = f.pw[:, lowrank.split_permutation(cin, r)]
        else:
            mid = gs.Variable(f"{name}/dw_out", dtype=x.dtype)
            g.nodes.append(gs.Node("Conv", f"{name}/dw", {**base, "group": cin},
                                   [x, gs.Constant(f"{name}/dw.weight", f.dw.astype(dtype))], [mid]))
            made.append(f"{name}/dw")
            pw = f.pw
        ins = [mid, gs.Constant(f"{name}/pw.weight", np.ascontiguousarray(pw).astype(dtype))]
        bias = p.site.bias
        if bias is None and with_bias:  # a refit fits an offset; give it a home (zeros until then)
            bias = np.zeros(pw.shape[0], dtype)
        if bias is not None:
            ins.append(gs.Constant(f"{name}/pw.bias", np.asarray(bias).astype(dtype)))
        outs = list(conv.outputs)
        conv.outputs.clear()
        conv.inputs.clear()
        g.nodes.remove(conv)
        g.nodes.append(gs.Node("Conv", f"{name}/pw", {"kernel_shape": [1, 1]}, ins, outs))
        made.append(f"{name}/pw")
        return made

    def stage_weights(self, plans: list[Plan]) -> None:
        self.update_weights(plans)

    def update_weights(self, plans: list[Plan]) -> list[str]:
        """Write each plan's (refit) factorisation into its initializers; returns the touched nodes."""
        m = self.model.onnx
        index = OnnxIndex(m)
        touched = []
        for p in plans:
            name, f = p.site.node, p.fact
            dtype = p.site.weight.dtype
            if p.form == "split" and f.rank > 1:
                for j, k in enumerate(lowrank.split_kernels(f)):
                    set_onnx_initializer(m, f"{name}/dw{j}.weight", k.astype(dtype), index)
                pw = f.pw[:, lowrank.split_permutation(f.cin, f.rank)]
            else:
                set_onnx_initializer(m, f"{name}/dw.weight", f.dw.astype(dtype), index)
                pw = f.pw
            set_onnx_initializer(m, f"{name}/pw.weight", np.ascontiguousarray(pw).astype(dtype), index)
            b = getattr(p, "refit_bias", None)
            if b is not None:
                set_onnx_initializer(m, f"{name}/pw.bias", b.astype(dtype), index)
            touched.append(f"{name}/pw")
        return touched


def _weight_reason(c: ConvInfo, cs: ConvSite) -> bool:
    """Copy the weights into ``cs``, or set why there are none to factor; True when there are none."""
    cs.weight = c.weight
    if c.quantizer:
        cs.reason = f"already quantized (weights behind {c.quantizer}): not dequantizing"
    elif c.weight is None:
        cs.reason = "dynamic weights (computed at run time): nothing to factor"
    return cs.reason is not None


def _shape_reason(cs: ConvSite) -> str | None:
    """Why a conv with known weights is not a full KxK conv (None when it is)."""
    w = cs.weight
    if w.ndim != 4:
        return f"not a 2-D conv ({w.ndim - 2}-D kernel)"
    groups = int(cs.attrs.get("groups", 1))
    cout, cin_g = w.shape[:2]
    if groups > 1:
        if cin_g == 1:
            return "depthwise conv: already the cheap form"
        return f"grouped conv (groups={groups}, e.g. ResNeXt): not a full conv"
    if w.shape[2] == 1 and w.shape[3] == 1:
        return "1x1 conv: nothing to factor"
    return None


def _ancestors(start, producer_of, inputs_of, name_of, wanted: set[str]) -> set[str]:
    """Names in ``wanted`` among the nodes upstream of tensor ``start``."""
    seen, found, stack = set(), set(), [start]
    while stack:
        node = producer_of(stack.pop())
        key = None if node is None else name_of(node)
        if key is None or key in seen:  # names, not ids: bindings hand out fresh wrapper objects
            continue
        seen.add(key)
        if key in wanted:
            found.add(key)
        stack.extend(inputs_of(node))
    return found


# ---- OpenVINO IR adapter -------------------------------------------------------------------------------------
class _IrAdapter:
    def __init__(self, model: ModelHandle, ctx: PassContext):
        self.model, self.ctx = model, ctx

    def convs(self) -> list[ConvSite]:
        ops = [op for op in self.model.ov.get_ops() if op.get_type_name() in IR_CONV_OPS]
        if not ops:
            return []
        static = None
        if any(op.get_output_partial_shape(0).is_dynamic for op in ops):
            static = {op.get_friendly_name(): op for op in _ov_static(self.model, self.ctx).get_ops()}
        return [self._site(op, static) for op in ops]

    def _site(self, op, static) -> ConvSite:
        c = ir_conv(op)  # its bias (a following Add) stays outside the site: y_tap is the conv's own output
        cs = ConvSite(c.name, c.op, attrs=c.attrs, x_tap=c.in_tap, y_tap=c.out_tap, ref=op)
        if _weight_reason(c, cs):
            return cs
        shaped = static.get(c.name, op) if static else op
        cs.in_hw = _static_hw(shaped.get_input_partial_shape(0))
        cs.out_hw = _static_hw(shaped.get_output_partial_shape(0))
        cs.reason = _shape_reason(cs)
        return cs

    def dependencies(self, names: list[str]) -> dict[str, set[str]]:
        """{conv: the convs among ``names`` upstream of its input}, on this (unrewritten) model."""
        by_name = {op.get_friendly_name(): op for op in self.model.ov.get_ops()}
        return {c: _ancestors(by_name[c].input_value(0), lambda o: o.get_node(),
                              lambda n: [n.input_value(i) for i in range(n.get_input_size())],
                              lambda n: n.get_friendly_name(), set(names)) for c in names}

    def _find(self, name: str):
        for op in self.model.ov.get_ops():
            if op.get_friendly_name() == name:
                return op
        raise RewriteError(f"{self.model.name}: node '{name}' disappeared during dwpw")

    def input_tap(self, cs: ConvSite) -> str:
        dw = self._find(f"{cs.node}/dw" if self._has(f"{cs.node}/dw") else f"{cs.node}/dw0")
        return ir_tap(dw.input_value(0))

    def _has(self, name: str) -> bool:
        return any(op.get_friendly_name() == name for op in self.model.ov.get_ops())

    def rewrite(self, plans: list[Plan], refit: bool) -> list[str]:
        made: list[str] = []
        for p in plans:
            made += self._rewrite_one(p, refit and not p.fact.exact)
        self.model.ov.validate_nodes_and_infer_types()
        return made

    def _rewrite_one(self, p: Plan, with_bias: bool) -> list[str]:
        import openvino.opset13 as ops

        conv, name, f = p.site.ref, p.site.node, p.fact
        cin, r = f.cin, f.rank
        a = conv.get_attributes()
        x = conv.input_value(0)
        geo = dict(strides=list(a["strides"]), pads_begin=list(a["pads_begin"]), pads_end=list(a["pads_end"]),
                   dilations=list(a["dilations"]), auto_pad=a.get("auto_pad", "explicit"))
        made = []
        if p.form == "split" and r > 1:
            parts = []
            for j, k in enumerate(lowrank.split_kernels(f)):
                c = ops.constant(k.reshape(cin, 1, 1, *k.shape[2:]), name=f"{name}/dw{j}.weight")
                parts.append(ops.group_convolution(x, c, **geo, name=f"{name}/dw{j}"))
                made.append(f"{name}/dw{j}")
            mid = ops.concat(parts, 1, name=f"{name}/dw_concat")
            made.append(f"{name}/dw_concat")
            pw = f.pw[:, lowrank.split_permutation(cin, r)]
        else:
            c = ops.constant(f.dw.reshape(cin, r, 1, *f.dw.shape[2:]), name=f"{name}/dw.weight")
            mid = ops.group_convolution(x, c, **geo, name=f"{name}/dw")
            made.append(f"{name}/dw")
            pw = f.pw
        pwc = ops.constant(np.ascontiguousarray(pw), name=f"{name}/pw.weight")
        out = ops.convolution(mid, pwc, [1, 1], [0, 0], [0, 0], [1, 1], name=f"{name}/pw")
        made.append(f"{name}/pw")
        if with_bias:  # a refit fits an offset; IR convs carry no bias, so it gets its own Add (zeros for now)
            bc = ops.constant(np.zeros((1, pw.shape[0], 1, 1), np.float32), name=f"{name}/pw_bias.value")
            out = ops.add(out, bc, name=f"{name}/pw_bias")
            made.append(f"{name}/pw_bias")
        names = conv.output(0).get_names()
        conv.output(0).replace(out.output(0))
        out.output(0).set_names(names)
        return made

    def stage_weights(self, plans: list[Plan]) -> None:
        self.update_weights(plans)

    def update_weights(self, plans: list[Plan]) -> list[str]:
        by_name = {op.get_friendly_name(): op for op in self.model.ov.get_ops()}
        touched = []

        def put(cname: str, value: np.ndarray) -> None:
            old = by_name.get(cname)
            if old is not None:
                by_name[cname] = replace_ir_constant(old, value)

        for p in plans:
            name, f = p.site.node, p.fact
            cin, r = f.cin, f.rank
            if p.form == "split" and r > 1:
                for j, k in enumerate(lowrank.split_kernels(f)):
                    put(f"{name}/dw{j}.weight", k.reshape(cin, 1, 1, *k.shape[2:]))
                pw = f.pw[:, lowrank.split_permutation(cin, r)]
            else:
                put(f"{name}/dw.weight", f.dw.reshape(cin, r, 1, *f.dw.shape[2:]))
                pw = f.pw
            put(f"{name}/pw.weight", pw)
            b = getattr(p, "refit_bias", None)
            if b is not None:
                put(f"{name}/pw_bias.value", b.reshape(1, -1, 1, 1))
            touched.append(f"{name}/pw")
        self.model.ov.validate_nodes_and_infer_types()
        return touched
