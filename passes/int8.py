"""``int8``: post-training INT8 quantization through NNCF, optionally accuracy-aware.

OpenVINO IR in → INT8 IR (FakeQuantize on activations, int8-compressed weights); ONNX in → QDQ ONNX
(QuantizeLinear/DequantizeLinear). Calibration uses real images (``--calib DIR``, else the scikit-image photos)
preprocessed the way the model expects. With ``max_drop`` set, ``nncf.quantize_with_accuracy_control`` keeps
the layers that cost the most depth accuracy in float until the drop (on the validation images, vs the float
model's own outputs) is within ``max_drop``.

Overflow: on CPUs without VNNI, OpenVINO computes u8×s8 products with 16-bit intermediate sums that can
saturate; NNCF's ``overflow_fix`` quantizes weights to 7 bits to avoid it. ``overflow_fix=auto`` enables it
when the CPU is a target and this host lacks VNNI/AMX, and disables it for NPU-only targets (no saturation there).
"""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rewriter.errors import RewriteError
from rewriter.inputs import PREPROCESS_MODES, InputSet
from rewriter.metrics import depth_metrics
from rewriter.model import ModelHandle, ov_core
from rewriter.passbase import WILL_CHANGE, Option, Pass, PassContext, PassResult, Site, register
from rewriter.quant import already_quantized, op_quantization, quantizable_ops, quantized_op_counts, quantizer_counts

OVERFLOW_FIX = ("auto", "enable", "disable", "first_layer_only")
METRICS = ("absrel", "delta1")
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8")
NPU_TARGETS = ("kmb", "mtl")
# Op type spelled the other format's way → this format's spelling, so one --opt works on ONNX and IR.
TYPE_ALIASES = {
    "ir": {"Conv": ("Convolution", "GroupConvolution"), "ConvTranspose": ("ConvolutionBackpropData",),
           "Resize": ("Interpolate",), "Gemm": ("MatMul",)},
    "onnx": {"Convolution": ("Conv",), "GroupConvolution": ("Conv",), "ConvolutionBackpropData":
             ("ConvTranspose",), "Interpolate": ("Resize",)},
}


def host_has_vnni(cpuinfo: str | Path = "/proc/cpuinfo") -> bool | None:
    """True if this CPU has an int8 dot-product unit (VNNI or AMX); None when it cannot be told."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    if not flags:
        return None
    return any(f in flags for f in VNNI_FLAGS)


def choose_overflow_fix(setting: str, targets: tuple[str, ...], vnni: bool | None) -> tuple[str, str]:
    """(NNCF overflow_fix value, why) for the option value, the targets and the host CPU."""
    if setting != "auto":
        return setting, "set by the user"
    cpu = "cpu" in targets
    npu = [t for t in targets if t in NPU_TARGETS]
    if cpu and vnni is False:
        return "enable", ("cpu is a target and this CPU has no VNNI/AMX: 7-bit weights keep u8×s8 sums from "
                          "saturating in 16 bits (cut the output error by a third to a half on MiDaS-small here)")
    if cpu and vnni is None:
        return "enable", "cpu is a target and the CPU's VNNI support is unknown: the safe setting"
    if cpu:
        return "disable", "cpu is a target and this CPU has VNNI/AMX: no 16-bit saturation, full 8-bit weights"
    if npu:
        why = "NPU targets only: the NPU accumulates in 32 bits, full 8-bit weights"
        if vnni is False:
            why += ("; note that fidelity measured on this CPU (no VNNI) includes saturation the NPU does not "
                    "have (use overflow_fix=enable to measure without it)")
        return "disable", why
    return "first_layer_only", "no known target: NNCF's default"


def _ignored(model: ModelHandle, names: list[str], regex: str | None, types: list[str]) -> dict[str, str]:
    """{node name: why ignored}; raises RewriteError naming every name/type/regex that matches nothing."""
    if model.format == "onnx":
        nodes = [(n.name, n.op_type) for n in model.onnx.graph.node]
    else:
        nodes = [(op.get_friendly_name(), op.get_type_name()) for op in model.ov.get_ops()]
    present = {n for n, _ in nodes}
    missing = [n for n in names if n not in present]
    if missing:
        close = [n for n, _ in nodes if any(m.lower() in n.lower() for m in missing)][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise RewriteError(f"{model.name}: int8.ignore_names: no node named {', '.join(map(repr, missing))}"
                           f"{hint}")
    have_types = {t for _, t in nodes}
    resolved: set[str] = set()
    bad = []
    for t in types:
        if t in have_types:
            resolved.add(t)
        elif any(a in have_types for a in TYPE_ALIASES[model.format].get(t, ())):
            resolved.update(a for a in TYPE_ALIASES[model.format][t] if a in have_types)
        else:
            bad.append(t)
    if bad:
        raise RewriteError(f"{model.name}: int8.ignore_types: no node of type {', '.join(map(repr, bad))} "
                           f"(types in this {model.format.upper()} model: {', '.join(sorted(have_types))})")
    out = {n: "in ignore_names" for n in names}
    if regex:
        pattern = re.compile(regex)
        hits = [n for n, _ in nodes if pattern.match(n)]  # re.match, as NNCF's ignored scope does
        if not hits:
            raise RewriteError(f"{model.name}: int8.ignore_regex {regex!r} matches no node name "
                               "(it is matched from the start of the name, like re.match)")
        out.update({n: f"matches ignore_regex {regex!r}" for n in hits if n not in out})
    out.update({n: f"op type {t} in ignore_types" for n, t in nodes if t in resolved and n not in out})
    return out


def depth_metric(reference: np.ndarray, output: np.ndarray, metric: str) -> float:
    """A score of ``output`` against ``reference``, higher is better, 1.0 when equal: 1 - absrel, or delta1.

    NNCF needs higher-is-better and a non-zero score for the float model (it divides by it).
    """
    m = depth_metrics(reference, output)
    return 1.0 - float(m["absrel"]) if metric == "absrel" else float(m["delta1"])


class _Validator:
    """NNCF validation function: the depth metric of a model's outputs vs the float model's, per image."""

    def __init__(self, references: list[list[np.ndarray]], metric: str):
        self.references = references
        self.metric = metric
        self._last: tuple[Any, Any] | None = None  # (onnx proto, its compiled OV model): NNCF asks per item
        self.full_runs: list[float] = []  # scores of whole-set validations: float model, then all-INT8

    def _compiled(self, model: Any):
        import onnx

        if not isinstance(model, onnx.ModelProto):
            return model  # OpenVINO backend: NNCF passes an ov.CompiledModel
        if self._last is None or self._last[0] is not model:
            m = ModelHandle(model).ov_model()
            self._last = (model, ov_core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}))
        return self._last[1]

    def __call__(self, model: Any, items) -> tuple[float, list[float]]:
        compiled = self._compiled(model)
        values = []
        for index, feed in items:
            res = compiled(feed)
            outs = [np.asarray(res[o]) for o in compiled.outputs]
            ref = self.references[index]
            values.append(float(np.mean([depth_metric(r, o, self.metric) for r, o in zip(ref, outs)])))
        if len(values) == len(self.references) > 1:  # with one image NNCF's probe call would count
            self.full_runs.append(float(np.mean(values)))
        return float(np.mean(values)), values


@contextmanager
def _nncf_output(verbosity: int):
    """NNCF logs and progress bars go to stderr (stdout carries the report); quiet mode silences them."""
    import rich
    from nncf.common.logging import logger as nncf_log

    console = rich.get_console()
    saved_file, saved_quiet = getattr(console, "_file", None), console.quiet
    handler = nncf_log.stdout_handler
    saved_stream, saved_level = handler.stream, handler.level
    handler.setStream(sys.stderr)
    handler.setLevel(logging.ERROR if verbosity < 0 else logging.INFO if verbosity > 0 else logging.WARNING)
    console.file = sys.stderr
    console.quiet = verbosity < 0
    try:
        yield
    finally:
        handler.setStream(saved_stream)
        handler.setLevel(saved_level)
        console._file = saved_file  # None means "follow sys.stdout", which the public setter cannot restore
        console.quiet = saved_quiet


@contextmanager
def _capture_restorer_report(into: list):
    """Keep NNCF's accuracy-restorer report (which operations it reverted to float) for our report."""
    from nncf.quantization.algorithms.accuracy_control import algorithm as acc

    original = acc.QuantizationAccuracyRestorer._print_report

    def spy(report, max_num_iterations):
        into.append(report)
        return original(report, max_num_iterations)

    acc.QuantizationAccuracyRestorer._print_report = staticmethod(spy)
    try:
        yield
    finally:
        acc.QuantizationAccuracyRestorer._print_report = staticmethod(original)


@register
class Int8(Pass):
    name = "int8"
    description = ("post-training INT8 quantization with NNCF (IR → FakeQuantize, ONNX → QDQ); "
                   "max_drop keeps the most sensitive layers in float")
    formats = ("onnx", "ir")
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
        o["ignore_names"] = list(o["ignore_names"] or [])
        o["ignore_types"] = list(o["ignore_types"] or [])
        if o["ignore_regex"]:
            try:
                re.compile(o["ignore_regex"])
            except re.error as e:
                raise RewriteError(f"option int8.ignore_regex={o['ignore_regex']!r}: not a regular "
                                   f"expression ({e})") from e

    # ---- match ---------------------------------------------------------------------------------------------
    def match(self, model: ModelHandle, ctx: PassContext) -> list[Site]:
        """Every weighted op (conv, matmul): will be quantized, or why not (already quantized, ignored)."""
        done = already_quantized(model)
        ignored = {} if done else self._ignored(model)
        return [Site(node, op, done or ignored.get(node, WILL_CHANGE)) for node, op in quantizable_ops(model)]

    def _ignored(self, model: ModelHandle) -> dict[str, str]:
        return _ignored(model, self.opts["ignore_names"], self.opts["ignore_regex"], self.opts["ignore_types"])

    # ---- apply ---------------------------------------------------------------------------------------------
    def apply(self, model: ModelHandle, ctx: PassContext) -> PassResult:
        """Quantize ``model`` in place with NNCF; report quantizers, INT8 ops and the layers left in float."""
        done = already_quantized(model)
        if done:
            sites = self.match(model, ctx)
            return PassResult(sites, notes=[f"not quantized again: the model is {done}"],
                              extra={"skipped": done, "quantizers": quantizer_counts(model)})
        sites = self.match(model, ctx)
        ignored = self._ignored(model)  # every matched node, weighted or not (e.g. ignore_types=Interpolate)
        calib = self._inputs(model, ctx, ctx.calib_dir)
        vnni = host_has_vnni()
        fix, fix_why = choose_overflow_fix(self.opts["overflow_fix"], tuple(ctx.targets), vnni)
        notes = list(calib.notes)
        n = min(self.opts["subset_size"], len(calib.feeds))
        if calib.is_images and n < 20:
            notes.append(f"calibrated on {n} images: 50-300 frames of your own scenes usually quantize better")
        if model.format == "onnx" and _onnx_opset(model.onnx) < 13:
            notes.append(_upgrade_opset(model))
        names_before = _node_names(model)
        old_ir_tags = model.tags() if model.format == "ir" else {}
        kwargs = self._nncf_kwargs(model.format, fix, n, list(ignored))
        accuracy: dict[str, Any] | None = None
        with _nncf_output(getattr(ctx, "verbosity", 0)):
            if self.opts["max_drop"] is None:
                quantized = self._quantize(model, calib, kwargs)
            else:
                quantized, accuracy = self._quantize_with_accuracy_control(model, ctx, calib, kwargs)
        if model.format == "onnx":
            model.set_onnx(quantized)
        else:
            model.ov = quantized
            for node, pass_name in old_ir_tags.items():  # earlier passes' tags survive the swap
                if node not in model.tags():
                    model.tag([node], pass_name)
        new_nodes = sorted(_node_names(model) - names_before)
        model.tag(new_nodes, self.name)
        return self._result(model, sites, new_nodes, notes, calib, n, fix, fix_why, vnni, accuracy)

    # ---- helpers -------------------------------------------------------------------------------------------
    def _inputs(self, model: ModelHandle, ctx: PassContext, folder: str | None) -> InputSet:
        return ctx.calibration(model, preprocess=self.opts["preprocess"], folder=folder)

    def _nncf_kwargs(self, fmt: str, fix: str, subset_size: int, ignored: list[str]) -> dict[str, Any]:
        import nncf
        from nncf.quantization.advanced_parameters import (
            AdvancedQuantizationParameters,
            OverflowFix,
            QuantizationParameters,
        )

        advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(fix))
        if fmt == "onnx":
            # NNCF gives depthwise-conv inputs per-channel Q/DQ, which onnxruntime fuses into a QLinearConv
            # that then fails ("input zero point must be a scalar"): per-tensor activations run everywhere
            advanced.activations_quantization_params = QuantizationParameters(per_channel=False)
        kwargs: dict[str, Any] = {
            "preset": nncf.QuantizationPreset(self.opts["preset"]),
            "subset_size": subset_size,
            "fast_bias_correction": self.opts["fast_bias_correction"],
            "advanced_parameters": advanced,
        }
        if ignored:  # resolved and validated against the graph above; NNCF's graph may lack constants
            kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
        return kwargs

    def _quantize(self, model: ModelHandle, calib: InputSet, kwargs: dict[str, Any]):
        import nncf

        try:
            return nncf.quantize(_native_copy(model), nncf.Dataset(calib.feeds), **kwargs)
        except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError, RuntimeError) as e:
            raise RewriteError(f"{model.name}: NNCF could not quantize the model: {_first_line(e)}") from e

    def _quantize_with_accuracy_control(self, model: ModelHandle, ctx: PassContext, calib: InputSet,
                                        kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

        from rewriter.runtime import Runner

        images_dir = getattr(ctx, "images_dir", None) or ctx.calib_dir
        val = self._inputs(model, ctx, images_dir)
        runner = Runner(model)
        refs = [list(runner.run(f).values()) for f in val.feeds]
        validator = _Validator(refs, self.opts["metric"])
        items = list(enumerate(val.feeds))
        params = kwargs.pop("advanced_parameters")
        # one ranking worker: this runs beside other work; ranking in parallel buys little here
        restorer = AdvancedAccuracyRestorerParameters(num_ranking_workers=1)
        if self.opts["max_float_layers"] is not None:
            restorer.max_num_iterations = self.opts["max_float_layers"]
        reports: list = []
        try:
            with _capture_restorer_report(reports):
                q = nncf.quantize_with_accuracy_control(
                    _native_copy(model), nncf.Dataset(calib.feeds), nncf.Dataset(items),
                    validation_fn=validator, max_drop=self.opts["max_drop"],
                    drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=params,
                    advanced_accuracy_restorer_parameters=restorer,
                    **kwargs)
        except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError,
                NotImplementedError, RuntimeError) as e:
            raise RewriteError(f"{model.name}: NNCF accuracy control failed: {_first_line(e)}") from e
        float_metric = validator(runner.compiled, items)[0]
        int8_metric = validator(q if model.format == "onnx" else _compile(q), items)[0]
        report = reports[-1] if reports else None
        reverted = [n.node_name for n in report.reverted_operations] if report is not None else []
        shown = (lambda v: 1.0 - v) if self.opts["metric"] == "absrel" else (lambda v: v)  # absrel as itself
        info = {
            "metric": self.opts["metric"], "max_drop": self.opts["max_drop"],
            "validation_images": len(items), "validation_source": val.source,
            "float": shown(float_metric), "int8": shown(int8_metric), "drop": float_metric - int8_metric,
            # NNCF validates the float model, then the all-INT8 one, before reverting anything
            "int8_all_layers": shown(validator.full_runs[1]) if len(validator.full_runs) > 1 else None,
            "met": float_metric - int8_metric <= self.opts["max_drop"] + 1e-12,
            "reverted_by_nncf": reverted,
            "all_reverted": bool(report is not None and report.removed_all),
        }
        return q, info

    def _result(self, model: ModelHandle, sites: list[Site], new_nodes: list[str], notes: list[str],
                calib: InputSet, n: int, fix: str, fix_why: str, vnni: bool | None,
                accuracy: dict[str, Any] | None) -> PassResult:
        state = op_quantization(model)
        reverted = set(accuracy["reverted_by_nncf"]) if accuracy else set()
        out_sites, kept_float = [], []
        for s in sites:
            q = state.get(s.node, {})
            is_int8 = bool(q.get("weights") and q.get("activations"))
            details = {"weights_int8": bool(q.get("weights")), "activations_int8": bool(q.get("activations"))}
            if not s.will_change:
                decision = s.decision
            elif is_int8:
                decision = WILL_CHANGE
            elif s.node in reverted:
                decision = "kept in float by accuracy control (max_drop)"
            else:
                decision = "left in float by NNCF (no quantizer inserted)"
            if decision != WILL_CHANGE:
                kept_float.append({"node": s.node, "op": s.op, "reason": decision})
            out_sites.append(Site(s.node, s.op, decision, details))
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
            "backend": "openvino" if model.format == "ir" else "onnx",
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
        return PassResult(out_sites, new_nodes=new_nodes, notes=notes, extra=extra)


def _upgrade_opset(model: ModelHandle) -> str:
    """Convert an opset < 13 ONNX model to opset 13 in place: per-channel weight quantizers need it."""
    from onnx import version_converter

    old = _onnx_opset(model.onnx)
    try:
        upgraded = version_converter.convert_version(model.onnx, 13)
    except Exception as e:  # the converter raises several types; falling back to per-tensor still works
        return (f"ONNX opset {old} < 13 and the opset converter failed ({_first_line(e)}): NNCF quantizes "
                "weights per tensor, not per channel (less accurate)")
    model.set_onnx(upgraded)
    # measured on the seeded MiDaS-small ts11 export: AbsRel 0.131 per tensor, 0.086 per channel
    return f"ONNX opset {old} converted to 13 so weights are quantized per channel (more accurate)"


def _native_copy(model: ModelHandle):
    """A copy of the underlying model for NNCF (it may edit what it is given)."""
    return model.clone().onnx if model.format == "onnx" else model.ov.clone()


def _compile(ov_model):
    return ov_core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})


def _node_names(model: ModelHandle) -> set[str]:
    if model.format == "onnx":
        return {n.name for n in model.onnx.graph.node}
    return {op.get_friendly_name() for op in model.ov.get_ops() if op.get_type_name() != "Constant"}


def _onnx_opset(m) -> int:
    return next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 0)


def _first_line(e: BaseException) -> str:
    s = [line for line in str(e).strip().splitlines() if line.strip()]
    return s[0][:300] if s else type(e).__name__
