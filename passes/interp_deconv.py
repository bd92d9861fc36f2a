"""``interp_deconv``: bilinear upsampling by an integer factor → exact fixed-weight depthwise transposed conv.

An NPU runs interpolation on its SHAVE DSPs but convolutions on the DPU's MAC array. With asymmetric or
half-pixel coordinates and an integer scale, bilinear upsampling is a fixed triangle stencil applied with
stride ``s``: a depthwise transposed convolution. Resize clamps at the borders; replicating one edge sample
first (edge ``Pad``) and cropping the transposed conv's extra border reproduces that exactly. The math is
:func:`rewriter.interp.deconv_plan`; this file picks the sites and emits ``Pad(edge) → transposed conv``,
which keeps the replaced node's name and output tensor. align_corners sites stay (run ``asym_interp`` first).
"""

from __future__ import annotations

from rewriter.graph import Editor, GraphView
from rewriter.interp import (
    NameFiltered,
    deconv_blocker,
    deconv_plan,
    name_filter_options,
    name_filter_reason,
    site_engines,
    sites,
)
from rewriter.passbase import KEEP, Decision, Pass, PassContext, register

DECONV = "deconv"


@register
class InterpDeconv(NameFiltered, Pass):
    name = "interp_deconv"
    description = ("Replace integer-scale bilinear upsampling (asymmetric/half_pixel) with an exactly "
                   "equivalent edge Pad + fixed-weight depthwise ConvTranspose the NPU runs on its DPU")
    exact = True
    options = name_filter_options("replace")

    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        include, exclude = self.name_filters()
        out = []
        for s in sites(view):
            details = s.details()
            blocker = deconv_blocker(s)
            if blocker is not None:
                out.append(Decision(s.name, self.name, "resize", (KEEP,), KEEP, blocker, details))
                continue
            plan = deconv_plan(s.integer_scales(), s.coordinate_mode)
            details["plan"] = {"kernel": plan.kernel_shape, "strides": plan.strides,
                               "edge_pads": [plan.pads_begin, plan.pads_end],
                               "crop": [plan.crops_begin, plan.crops_end]}
            engines = site_engines(s, (s.coordinate_mode,), tuple(ctx.targets))
            if engines:  # where the resize lands today, and where its transposed conv runs
                details["engine_before"] = {t: e[s.coordinate_mode] for t, e in engines.items()}
                details["engine_after"] = {t: {"engine": "cpu" if t == "cpu" else "dpu",
                                               "rule": "depthwise transposed conv"} for t in engines}
            reason = name_filter_reason(s.name, include, exclude)
            choice = KEEP if reason else DECONV
            out.append(Decision(s.name, self.name, "resize", (KEEP, DECONV), choice,
                                reason or "exact: fixed stencil as a depthwise transposed conv", details))
        return out

    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        d = decision.details
        plan = deconv_plan(d["plan"]["strides"], d["coordinate_mode"])
        channels, name = d["channels"], editor.view.node(decision.site).name or decision.site

        def build(b):
            x = b.input(0)
            if plan.needs_pad:
                x = b.pad(x, [0, 0, *plan.pads_begin], [0, 0, *plan.pads_end], "edge", f"{name}/edge_pad")
            return b.conv_transpose(x, plan.weights(channels).astype("float64"), name, strides=plan.strides,
                                    crops_begin=plan.crops_begin, crops_end=plan.crops_end, groups=channels)

        editor.replace(decision.site, build)
