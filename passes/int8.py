"""``int8``: post-training INT8 quantization through NNCF, optionally accuracy-aware.

OpenVINO IR in → INT8 IR (FakeQuantize on activations, int8-compressed weights); ONNX in → QDQ ONNX
(QuantizeLinear/DequantizeLinear). Calibration uses real images (``--calib DIR``, else the scikit-image photos)
preprocessed the way the model expects. With ``max_drop`` set, ``nncf.quantize_with_accuracy_control`` keeps
the layers that cost the most depth accuracy in float until the drop (on the validation images, vs the float
model's own outputs) is within ``max_drop``. Each weighted op is a site (``keep`` / ``int8``); a site selected
to ``keep`` joins NNCF's ignored scope. NNCF plumbing lives in :mod:`rewriter.quant`.

Overflow: on CPUs without VNNI, OpenVINO computes u8×s8 products with 16-bit intermediate sums that can
saturate; NNCF's ``overflow_fix`` quantizes weights to 7 bits to avoid it. ``overflow_fix=auto`` enables it
when the CPU is a target and this host lacks VNNI/AMX, and disables it for NPU-only targets (no saturation there).
"""

from __future__ import annotations

import re
from typing import Any

from rewriter.errors import RewriteError
from rewriter.graph import GraphView
from rewriter.graph import view as graph_view
from rewriter.inputs import PREPROCESS_MODES, InputSet
from rewriter.model import ModelHandle
from rewriter.passbase import KEEP, Decision, Option, Outcome, Pass, PassContext, register
from rewriter.quant import (
    METRICS,
    OVERFLOW_FIX,
    already_quantized,
    backend_name,
    choose_overflow_fix,
    host_has_vnni,
    ignored_nodes,
    op_quantization,
    quantize_model,
    quantized_op_counts,
    quantizer_counts,
)

__all__ = ["Int8", "choose_overflow_fix", "host_has_vnni"]
INT8 = "int8"
WEIGHTED = ("conv", "depthwise", "grouped", "pointwise", "deconv", "matmul")


@register
class Int8(Pass):
    name = "int8"
    description = ("post-training INT8 quantization with NNCF (IR → FakeQuantize, ONNX → QDQ); "
                   "max_drop keeps the most sensitive layers in float")
    exact = False
    quantizes = True
    options = {
        "subset_size": Option(300, int, "calibration images used, at most (all of --calib up to this)"),
        "preset": Option("performance", str, "performance: symmetric activations; mixed: asymmetric "
                         "activations (better for signed inputs)", ("performance", "mixed")),
        "fast_bias_correction": Option(True, bool, "fast bias correction (false: slower, often more accurate)"),
        "overflow_fix": Option("auto", str, "7-bit weights against 16-bit saturation on CPUs without VNNI; "
                               "auto: from the targets and this CPU", OVERFLOW_FIX),
        "preprocess": Option("auto", str, "calibration image preprocessing; auto: detected from the graph",
                             PREPROCESS_MODES),
        "ignore_names": Option([], list, "node names kept in float, separated by |"),
        "ignore_regex": Option(None, str, "regular expression on node names (matched from the start) "
                               "of nodes kept in float"),
        "ignore_types": Option([], list, "op types kept in float, separated by | (Conv/Convolution, ...)"),
        "max_drop": Option(None, float, "accuracy control: largest allowed drop of the depth metric vs the "
                           "float model on the validation images (absrel: 0.01 = +1%)"),
        "metric": Option("absrel", str, "depth metric for max_drop", METRICS),
        "max_float_layers": Option(None, int, "accuracy control: revert at most this many layers to float "
                                   "(bounds the run time; default: no limit)"),
    }

    def check_options(self) -> None:
        o = self.opts
        if o["subset_size"] < 1:
            raise RewriteError(f"option int8.subset_size={o['subset_size']}: must be at least 1")
        if o["max_drop"] is not None and not o["max_drop"] >= 0:
            raise RewriteError(f"option int8.max_drop={o['max_drop']}: must be >= 0")
        if o["max_float_layers"] is not None:
            if o["max_drop"] is None:
                raise RewriteError("option int8.max_float_layers needs int8.max_drop (accuracy control)")
            if o["max_float_layers"] < 1:
                raise RewriteError(f"option int8.max_float_layers={o['max_float_layers']}: must be at least 1")
        if o["ignore_regex"]:
            try:
                re.compile(o["ignore_regex"])
            except re.error as e:
                raise RewriteError(f"option int8.ignore_regex={o['ignore_regex']!r}: not a regular "
                                   f"expression ({e})") from e

    # ---- plan ----------------------------------------------------------------------------------------------
    def plan(self, view: GraphView, ctx: PassContext) -> list[Decision]:
        """Every weighted op (conv, matmul): int8, or why it stays float (already quantized, ignored)."""
        done = already_quantized(view)
        ignored = {} if done else self._ignored(view)
        out = []
        for n in view.of_kind(*WEIGHTED):
            details = {"op_type": n.op_type}
            if done:
                out.append(Decision(n.id, self.name, n.kind, (KEEP,), KEEP, done, details))
            elif n.id in ignored:
                out.append(Decision(n.id, self.name, n.kind, (KEEP, INT8), KEEP, ignored[n.id], details))
            else:
                out.append(Decision(n.id, self.name, n.kind, (KEEP, INT8), INT8, "quantized by NNCF", details))
        return out

    def _ignored(self, view: GraphView) -> dict[str, str]:
        o = self.opts
        return ignored_nodes(view, list(o.ignore_names or []), o.ignore_regex, list(o.ignore_types or []))

    # ---- emit ----------------------------------------------------------------------------------------------
    def emit_all(self, decisions: list[Decision], model: ModelHandle, ctx: PassContext) -> Outcome:
        """Quantize ``model`` in place with NNCF; report quantizers, INT8 ops and the layers left in float."""
        ignored = self._ignored(graph_view(model))  # every matched node, weighted or not (ignore_types=...)
        ignored.update({d.site: d.reason for d in decisions if not d.will_change and INT8 in d.choices})
        calib = self._inputs(model, ctx, ctx.calib_dir)
        vnni = host_has_vnni()
        fix, fix_why = choose_overflow_fix(self.opts.overflow_fix, tuple(ctx.targets), vnni)
        notes = list(calib.notes)
        n = min(self.opts.subset_size, len(calib.feeds))
        if calib.is_images and n < 20:
            notes.append(f"calibrated on {n} images: 50-300 frames of your own scenes usually quantize better")
        accuracy = None
        if self.opts.max_drop is not None:
            val = ctx.validation(model, preprocess=self.opts.preprocess)  # judged apart from the calibration
            accuracy = {"validation": val, "metric": self.opts.metric, "max_drop": self.opts.max_drop,
                        "max_float_layers": self.opts.max_float_layers}
        new_nodes, more, facts = quantize_model(
            model, calib, subset_size=n, preset=self.opts.preset, fast_bias_correction=self.opts.fast_bias_correction,
            overflow_fix=fix, ignored=list(ignored), verbosity=getattr(ctx, "verbosity", 0), accuracy=accuracy)
        return self._result(model, decisions, new_nodes, notes + more, calib, n, fix, fix_why, vnni, facts)

    def _inputs(self, model: ModelHandle, ctx: PassContext, folder: str | None) -> InputSet:
        return ctx.calibration(model, preprocess=self.opts.preprocess, folder=folder)

    def _result(self, model: ModelHandle, sites: list[Decision], new_nodes: list[str], notes: list[str],
                calib: InputSet, n: int, fix: str, fix_why: str, vnni: bool | None,
                accuracy: dict[str, Any] | None) -> Outcome:
        state = op_quantization(model)
        reverted = set(accuracy["reverted_by_nncf"]) if accuracy else set()
        out_sites, kept_float = [], []
        for s in sites:
            q = state.get(s.node, {})
            is_int8 = bool(q.get("weights") and q.get("activations"))
            details = {"weights_int8": bool(q.get("weights")), "activations_int8": bool(q.get("activations"))}
            if not s.will_change:
                d = s
            elif is_int8:
                d = s
            elif s.node in reverted:
                d = s.with_choice(KEEP, "kept in float by accuracy control (max_drop)")
            else:
                d = s.with_choice(KEEP, "left in float by NNCF (no quantizer inserted)")
            if not d.will_change:
                kept_float.append({"node": d.node, "op": d.details.get("op_type", d.op), "reason": d.reason})
            out_sites.append(d.with_choice(d.choice, d.reason, **details))
        changed = sum(s.will_change for s in out_sites)
        counts = quantizer_counts(model)
        notes.append(f"{changed} of {len(out_sites)} weighted ops in INT8; {counts['activation']} activation "
                     f"and {counts['weight']} weight quantizers; overflow_fix={fix}")
        if accuracy is not None:
            verdict = "met" if accuracy["met"] else "NOT met"
            notes.append(f"accuracy control: {accuracy['metric']} {accuracy['float']:.4g} → {accuracy['int8']:.4g} "
                         f"(drop {accuracy['drop']:.4g}, max_drop {accuracy['max_drop']}: {verdict}); "
                         f"{len(kept_float)} weighted ops kept in float")
            if accuracy["all_reverted"] or changed == 0:
                notes.append("accuracy control kept every layer in float: the model is not quantized; "
                             "loosen int8.max_drop or calibrate on your own scenes (--calib)")
        extra = {
            "backend": backend_name(model),
            "quantizers": counts,
            "quantized_ops": quantized_op_counts(model),
            "kept_float": kept_float,
            "calibration": {"source": calib.source, "samples": n, "preprocess": calib.preprocess,
                            "images": calib.names[:n], "notes": list(calib.notes)},
            "settings": {"preset": self.opts["preset"], "subset_size": n,
                         "fast_bias_correction": self.opts["fast_bias_correction"],
                         "overflow_fix": fix, "overflow_fix_reason": fix_why, "host_vnni": vnni},
        }
        if accuracy is not None:
            extra["accuracy_control"] = accuracy
        return Outcome(notes=notes, extra=extra, decisions=out_sites, modified=new_nodes)
