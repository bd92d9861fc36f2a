"""``resize_commute``: run the 1x1 conv that follows an upsample *before* it (exact).

MiDaS's decoder (isl-org/MiDaS ``midas/blocks.py``, ``FeatureFusionBlock_custom.forward``) ends every fusion
block with ``interpolate(scale_factor=2, mode="bilinear", align_corners=True)`` → ``out_conv`` (1x1, halving the
channels when ``expand=True``). A bilinear or nearest resize maps each channel separately,
``y[c] = M x[c]`` with a spatial matrix ``M`` whose rows sum to 1 (``rewriter.interp.interp_matrix``); a 1x1
conv (stride 1, no pads, any groups) maps each pixel separately, ``z[:, p] = W y[:, p] + b``. Hence
``W (M x) + b 1 = M (W x) + b M 1 = M (W x + b)``: the two commute exactly, bias included, because ``M 1 = 1``.
Conv first runs the conv on ``1/s²`` of the pixels and the resize on ``Cout`` instead of ``Cin`` channels.

Not exact, so never taken: zero padding or ``tf_crop_and_resize`` extrapolation (``M 1 ≠ 1``), a resize that
scales N or C, quantization between or on the pair (FakeQuantize/QDQ), a conv wider than 1x1, strided or
padded. A site is taken when the cost model predicts the conv-first order faster on the first target
(``ctx.targets[0]``; with no target, when it needs fewer multiply-adds). The engine's never-slower check then
prices both orders in the whole model. The edit is the editor's ``commute`` (both formats); the resize keeps
its node id, so ``asym_interp`` and ``interp_deconv`` still find it afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rewriter.graph import CONV_KINDS, Editor, GraphView, Node
from rewriter.interp import InterpSite, NameFiltered, name_filter_options, name_filter_reason, sites
from rewriter.passbase import KEEP, Decision, Pass, PassContext, register

CONV_FIRST = "conv_first"
_QUANT_KINDS = ("quantize", "dequantize", "fake_quantize")


@register
class ResizeCommute(NameFiltered, Pass):
    name = "resize_commute"
    description = ("Move the 1x1 conv that reads a bilinear/nearest upsample ahead of it (exact: the conv runs "
                   "on 1/s² of the pixels, the resize on the conv's output channels)")
    exact = True
    options = name_filter_options("commute")

    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        include, exclude = self.name_filters()
        out = []
        for site in sites(view):
            details = site.details()
            conv, blocker = _pair(view, site)
            if conv is not None:
                details["conv"] = conv.id
                if conv.attrs.get("weight_shape"):
                    details.update(cin=site.channels, cout=int(conv.attrs["weight_shape"][0]))
            if blocker is not None:
                out.append(Decision(site.name, self.name, "resize", (KEEP,), KEEP, blocker, details))
                continue
            assert conv is not None
            choice, reason = _price(view, site, conv, tuple(ctx.targets), details)
            if (deselected := name_filter_reason(site.name, include, exclude)) is not None:
                choice, reason = KEEP, deselected  # still commutable: a selection may force it
            out.append(Decision(site.name, self.name, "resize", (KEEP, CONV_FIRST), choice, reason, details))
        return out

    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        editor.commute(decision.site, decision.details["conv"])


def _pair(view: GraphView, site: InterpSite) -> tuple[Node | None, str | None]:
    """The 1x1 conv the resize feeds, and why the pair cannot commute exactly (None when it can)."""
    node = view.node(site.name)
    if site.mode not in ("linear", "nearest"):
        return None, f"{site.attrs.get('raw_mode', site.mode)} mode: only bilinear and nearest are handled"
    if site.coordinate_mode == "tf_crop_and_resize":
        return None, "tf_crop_and_resize samples a roi and extrapolates: not a plain resize"
    if site.attrs.get("pads_begin") or site.attrs.get("pads_end"):
        return None, "Interpolate pads with zeros: the bias would not commute"
    if site.scales is None:
        return None, "scale factor is not known statically (dynamic shapes)"
    if any(abs(s - 1) > 1e-6 for s in site.scales[:2]):
        return None, f"scales the batch/channel axes ({site.scales[0]:g}, {site.scales[1]:g})"
    if site.rank != 4 or site.channels is None:
        return None, f"rank {site.rank} or dynamic channels: only NCHW resizes with static channels are handled"
    if node.outputs[0] in view.outputs:
        return None, "the resize output is a graph output"
    users = [u for t in node.outputs for u in view.users(t)]
    if len(users) != 1:
        return None, f"the resize output has {len(users)} readers (the conv must be the only one)"
    conv, idx = users[0]
    if conv.kind in _QUANT_KINDS:
        return None, f"quantized: the resize output goes through {conv.op_type} ({conv.id}) before its reader"
    if conv.kind not in CONV_KINDS:
        return None, f"its reader {conv.id} is a {conv.op_type}, not a 1x1 conv"
    if idx != 0:
        return None, f"the resize output is input {idx} of {conv.id}, not its data input"
    if (q := view.weight_quantizer(conv)) is not None:
        return conv, f"quantized: the weights of {conv.id} come through {q}"
    shape = conv.attrs.get("weight_shape")
    if shape is None:
        return conv, f"{conv.id}: weights are not a constant"
    if any(k != 1 for k in shape[2:]):
        return conv, f"{conv.id} has a {'x'.join(map(str, shape[2:]))} kernel, not 1x1"
    if any(s != 1 for s in conv.attrs.get("strides", [])):
        return conv, f"{conv.id} has strides {conv.attrs['strides']}, not 1"
    if any(p != 0 for p in conv.attrs.get("pads", [])):
        return conv, f"{conv.id} pads by {conv.attrs['pads']}: the padded border would not commute"
    return conv, None


def _price(view: GraphView, site: InterpSite, conv: Node, targets: tuple[str, ...],
           details: dict[str, Any]) -> tuple[str, str]:
    """conv_first when it is predicted faster on the first target (with no target: fewer MACs), else keep;
    fills ``details`` with the per-target µs and the resize's engine in both orders."""
    from rewriter.cost import conv_cost_us, resize_cost_us
    from rewriter.cost.lowering import resize_lowering

    n, cin, h, w = site.input_shape  # type: ignore[misc]
    _, _, ho, wo = site.output_shape or [None] * 4
    if None in (n, h, w, ho, wo):
        return KEEP, "shapes are not static: the two orders cannot be priced"
    cout, groups = details["cout"], int(conv.attrs.get("groups", 1))
    readers = sum(len(view.users(t)) for t in conv.outputs)
    if conv.attrs.get("biased_output"):  # IR: the conv's bias Add is the pair's end
        readers = len(view.users(conv.attrs["biased_output"]))
    before_in, before_out = [n, cin, h, w], [n, cin, ho, wo]
    after_in, after_out = [n, cout, h, w], [n, cout, ho, wo]
    if not targets:
        taps = 4 if site.mode == "linear" else 1
        macs_before = n * ho * wo * (cin * taps + cin // groups * cout)
        macs_after = n * (h * w * cin // groups * cout + ho * wo * cout * taps)
        if macs_after < macs_before:
            return CONV_FIRST, (f"exact: conv first needs {macs_after / macs_before:.0%} of the multiply-adds "
                                "(no target to price it)")
        return KEEP, f"conv first needs more multiply-adds ({macs_after} vs {macs_before}); no target to price it"
    precision = "fp16" if site.dtype == np.float16 else "fp32"
    cm = site.coordinate_mode
    lat, eb, ea = {}, {}, {}
    for t in targets:
        b = resize_cost_us(t, site.mode, cm, before_in, before_out, precision) + \
            conv_cost_us(t, cin, cout, 1, ho, wo, groups, precision=precision)
        a = conv_cost_us(t, cin, cout, 1, h, w, groups, precision=precision) + \
            resize_cost_us(t, site.mode, cm, after_in, after_out, precision, single_use=readers <= 1)
        lat[t] = {"before": round(b, 3), "after": round(a, 3), "saved": round(b - a, 3)}
        lb = resize_lowering(site.mode, cm, before_in, before_out, t)
        la = resize_lowering(site.mode, cm, after_in, after_out, t, single_use=readers <= 1)
        eb[t], ea[t] = {"engine": lb.engine, "rule": lb.rule}, {"engine": la.engine, "rule": la.rule}
    details.update(latency_us=lat, engine_before=eb, engine_after=ea)
    first = targets[0]
    if lat[first]["after"] < lat[first]["before"]:
        return CONV_FIRST, (f"exact: conv first predicted {lat[first]['saved']:.1f} µs faster on {first} "
                            f"({cin}→{cout} channels, resize on {cout})")
    return KEEP, (f"conv first predicted slower on {first} ({lat[first]['before']:.1f} → "
                  f"{lat[first]['after']:.1f} µs)")
