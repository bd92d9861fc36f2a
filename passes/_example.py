"""``nearest_upsample`` (example pass): bilinear integer upsampling → nearest-neighbour.

The README's "Writing a pass" walks through this file; the test suite imports it and runs it on ONNX and
OpenVINO IR (the leading underscore keeps the registry from loading it with the real passes). A pass is two
methods: ``plan`` looks at the format-free graph view and returns one Decision per candidate site (its
choices, the default, and why: that is ``--explain``); ``emit`` rewrites one site through the editor. The
engine selects, emits, tags (pass + site), validates, checks that no site is predicted slower and builds
the result. Nearest-neighbour is cheaper than bilinear on every target but moves the output: approximate.
"""

from __future__ import annotations

from rewriter.errors import RewriteError
from rewriter.graph import Editor, GraphView
from rewriter.interp import sites
from rewriter.passbase import KEEP, Decision, Option, Pass, PassContext, register

NEAREST = "nearest"


@register
class NearestUpsample(Pass):
    name = "nearest_upsample"
    description = "example: bilinear integer-scale upsampling → nearest-neighbour (approximate)"
    exact = False
    options = {"max_scale": Option(4, int, "largest integer scale to change")}

    def check_options(self) -> None:  # validate only: options are frozen
        if self.opts.max_scale < 2:
            raise RewriteError(f"option {self.name}.max_scale={self.opts.max_scale}: must be >= 2")

    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        out = []
        for s in sites(view):  # every resize node, read the same way from ONNX and IR
            scales = s.integer_scales()
            if s.mode != "linear":
                reason = f"{s.mode} mode: not bilinear"
            elif s.mode_fixed:
                reason = f"{s.op}-{s.version} cannot change mode"
            elif scales is None or max(scales) > self.opts.max_scale:
                reason = f"scale {s.spatial_scales} is not an integer up to {self.opts.max_scale}"
            else:
                reason = None
            if reason is None:
                out.append(Decision(s.name, self.name, "resize", (KEEP, NEAREST), NEAREST,
                                    "bilinear → nearest: no interpolation arithmetic", s.details()))
            else:
                out.append(Decision(s.name, self.name, "resize", (KEEP,), KEEP, reason, s.details()))
        return out

    def emit(self, decision: Decision, editor: Editor, ctx: PassContext) -> None:
        editor.set_attr(decision.site, "mode", NEAREST)
