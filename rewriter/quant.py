"""Facts about quantization in a graph: is it already quantized, which ops run in INT8, how many quantizers.

Shared by the ``int8`` pass (refuse re-quantizing, report what it quantized), the cost model (an INT8 conv
costs less than an FP16 one) and the diff/report (count quantizers). Works on both formats:

- ONNX (QDQ): activations pass ``QuantizeLinear → DequantizeLinear``; weights are an int8 initializer into
  ``DequantizeLinear`` (or a Q/DQ pair on a float initializer).
- OpenVINO IR: activations pass ``FakeQuantize``; weights are ``FakeQuantize`` on a constant, or (NNCF's
  compressed form) an int8 ``Constant → Convert → [Subtract] → Multiply``.
"""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import RewriteError
from .graph import GraphView, view
from .inputs import InputSet
from .metrics import depth_metrics
from .model import ModelHandle, ov_core

# Ops whose inputs NNCF quantizes and whose cost INT8 changes (weighted ops).
QUANTIZABLE_ONNX = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QUANTIZABLE_IR = ("Convolution", "GroupConvolution", "ConvolutionBackpropData",
                  "GroupConvolutionBackpropData", "MatMul")
# ONNX ops that only appear in a quantized graph.
ONNX_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                  "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul")
# Ops a quantizer may sit in front of without changing the quantized op's input (NNCF moves FQs past them).
_ONNX_TRANSPARENT = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Pad", "Identity")
_IR_TRANSPARENT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Pad", "Convert")
_IR_WEIGHT_CHAIN = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")


def quantizable_ops(model: ModelHandle) -> list[tuple[str, str]]:
    """[(node id, op type)] of the weighted ops INT8 applies to, in graph order."""
    return [(n.id, n.op_type) for n in view(model).nodes if n.op_type in QUANTIZABLE_ONNX + QUANTIZABLE_IR]


def quantizer_counts(model: ModelHandle) -> dict[str, int]:
    """Quantizers in the graph: ``activation`` (FakeQuantize / Q→DQ pairs on tensors) and ``weight``.

    Also the raw op census of quantization ops (``FakeQuantize``, ``QuantizeLinear``, ...). Read from the view:
    a DequantizeLinear counts as a weight quantizer when it (or its QuantizeLinear) reads a constant, a
    FakeQuantize when it computes from constants only, and an integer constant read by a Convert is NNCF's
    compressed weight (int8/int4 ``Constant → Convert → [Subtract] → Multiply``).
    """
    v = view(model)
    act = wts = 0
    ops: dict[str, int] = {}
    for n in v.nodes:
        if n.op_type in ONNX_QUANT_OPS or n.kind == "fake_quantize":
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        if n.kind == "dequantize":
            src = n.inputs[0]
            q = v.producer.get(src)
            paired = q is not None and q.kind == "quantize"
            if paired:
                src = q.inputs[0]
            p = v.producer.get(src)
            if (p is None and src not in v.inputs) or (p is not None and p.kind == "constant"):
                wts += 1
            elif paired:
                act += 1
        elif n.kind == "fake_quantize":
            if _from_constants(v, n.inputs[0]):
                wts += 1
            else:
                act += 1
        elif _compressed_weight(v, n):
            wts += 1
    return {"activation": act, "weight": wts, **ops}


def already_quantized(model: ModelHandle | GraphView) -> str | None:
    """A reason string when the graph already holds quantization (so it must not be quantized again)."""
    v = model if isinstance(model, GraphView) else view(model)
    ops: dict[str, int] = {}
    weights = 0
    for n in v.nodes:
        if n.op_type in ONNX_QUANT_OPS or n.kind == "fake_quantize":
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        elif _compressed_weight(v, n):
            weights += 1
    if ops:
        return "already quantized (" + ", ".join(f"{v} {k}" for k, v in ops.items()) + ")"
    if weights:
        return f"already quantized ({weights} int8/int4 compressed weights)"
    return None


def _compressed_weight(v: GraphView, n) -> bool:
    """An integer (8-bit or narrower) constant read by a Convert: a compressed weight."""
    if n.kind != "constant" or not n.outputs or not any(u.kind == "convert" for u, _ in v.users(n.outputs[0])):
        return False
    dt = v.dtype(n.outputs[0])
    return dt is None or (dt.kind in "iu" and dt.itemsize == 1)  # u4/i4/nf4 have no numpy type


def _from_constants(v: GraphView, tensor: str, budget: int = 64) -> bool:
    """Whether ``tensor`` computes from constants only (weights, possibly through a not-yet-folded reshape)."""
    stack, seen = [tensor], set()
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        p = v.producer.get(t)
        if t in v.inputs or len(seen) > budget or (p is not None and p.kind == "input"):
            return False
        if p is not None and p.kind != "constant":
            stack.extend(p.inputs)
    return True


def op_quantization(model: ModelHandle) -> dict[str, dict[str, Any]]:
    """{node id: {"op", "weights": bool, "activations": bool}} for every quantizable op (read from the view)."""
    v = view(model)
    out: dict[str, dict[str, Any]] = {}
    for n in v.nodes:
        if n.op_type not in QUANTIZABLE_ONNX + QUANTIZABLE_IR:
            continue
        w = n.inputs[1] if len(n.inputs) > 1 else ""
        out[n.id] = {"op": n.op_type, "activations": _behind_quantizer(v, n.inputs[0]),
                     "weights": bool(w) and _weights_quantized(v, w)}
    return out


def _behind_quantizer(v: GraphView, tensor: str) -> bool:
    """Whether ``tensor`` comes from a DequantizeLinear / FakeQuantize, a few transparent ops away."""
    for _ in range(8):
        p = v.producer.get(tensor)
        if p is None:
            return False
        if p.op_type in ("DequantizeLinear", "FakeQuantize"):
            return True
        if p.op_type not in _ONNX_TRANSPARENT + _IR_TRANSPARENT:
            return False
        tensor = p.inputs[0]
    return False


def _weights_quantized(v: GraphView, tensor: str) -> bool:
    """Whether weights come through a quantizer or an integer constant (NNCF's compressed IR weights)."""
    stack, seen = [tensor], 0
    while stack and seen < 16:  # the weight chain is a handful of ops
        p = v.producer.get(stack.pop())
        seen += 1
        if p is None:
            continue
        if p.op_type in ("DequantizeLinear", "FakeQuantize"):
            return True
        if p.kind == "constant":
            dt = v.dtype(p.outputs[0])
            if dt is None or (dt.kind in "iu" and dt.itemsize == 1):  # u4/i4 have no numpy type
                return True
            continue
        if p.op_type in _IR_WEIGHT_CHAIN + _ONNX_TRANSPARENT:
            stack.extend(t for t in p.inputs if t)
    return False


def quantized_op_counts(model: ModelHandle) -> dict[str, int]:
    """{op type: number running in INT8 (weights and activations both quantized)}."""
    out: dict[str, int] = {}
    for info in op_quantization(model).values():
        if info["weights"] and info["activations"]:
            out[info["op"]] = out.get(info["op"], 0) + 1
    return dict(sorted(out.items()))


# ---- NNCF plumbing for the int8 pass (format-specific parts live here, not in the pass) -------------------
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


def ignored_nodes(view: GraphView, names: list[str], regex: str | None, types: list[str]) -> dict[str, str]:
    """{node id: why ignored}; raises RewriteError naming every name/type/regex that matches nothing."""
    nodes = [(n.id, n.op_type) for n in view.nodes if n.kind not in ("input", "output")]
    present = {n for n, _ in nodes}
    missing = [n for n in names if n not in present]
    if missing:
        close = [n for n, _ in nodes if any(m.lower() in n.lower() for m in missing)][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise RewriteError(f"{view.name}: int8.ignore_names: no node named {', '.join(map(repr, missing))}"
                           f"{hint}")
    have_types = {t for _, t in nodes}
    resolved: set[str] = set()
    bad = []
    for t in types:
        if t in have_types:
            resolved.add(t)
        elif any(a in have_types for a in TYPE_ALIASES[view.format].get(t, ())):
            resolved.update(a for a in TYPE_ALIASES[view.format][t] if a in have_types)
        else:
            bad.append(t)
    if bad:
        raise RewriteError(f"{view.name}: int8.ignore_types: no node of type {', '.join(map(repr, bad))} "
                           f"(types in this {view.format.upper()} model: {', '.join(sorted(have_types))})")
    out = {n: "in ignore_names" for n in names}
    if regex:
        pattern = re.compile(regex)
        hits = [n for n, _ in nodes if pattern.match(n)]  # re.match, as NNCF's ignored scope does
        if not hits:
            raise RewriteError(f"{view.name}: int8.ignore_regex {regex!r} matches no node name "
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
    """Names of the model's operations, constants aside (what a quantizer adds is told apart by them)."""
    return {n.name for n in view(model).nodes if n.kind != "constant"}


def _onnx_opset(m) -> int:
    from .graph.onnx_backend import opset

    return opset(m)


def _first_line(e: BaseException) -> str:
    s = [line for line in str(e).strip().splitlines() if line.strip()]
    return s[0][:300] if s else type(e).__name__


def backend_name(model: ModelHandle) -> str:
    """The NNCF backend that quantizes ``model``: openvino (IR) or onnx."""
    return "openvino" if model.format == "ir" else "onnx"


def quantize_model(model: ModelHandle, calib: InputSet, *, subset_size: int, preset: str, fast_bias_correction: bool,
                   overflow_fix: str, ignored: list[str], verbosity: int = 0,
                   accuracy: dict[str, Any] | None = None) -> tuple[list[str], list[str], dict[str, Any] | None]:
    """Quantize ``model`` in place with NNCF (IR → FakeQuantize, ONNX → QDQ).

    ``accuracy`` = {"validation": InputSet, "metric", "max_drop", "max_float_layers"} runs
    ``quantize_with_accuracy_control``. Returns (new node names, notes, accuracy-control facts or None).
    """
    notes: list[str] = []
    if model.format == "onnx" and _onnx_opset(model.onnx) < 13:
        notes.append(_upgrade_opset(model))
    names_before = _node_names(model)
    old_ir_tags = model.tags() if model.format == "ir" else {}
    kwargs = _nncf_kwargs(model.format, preset, fast_bias_correction, overflow_fix, subset_size, ignored)
    facts = None
    with _nncf_output(verbosity):
        if accuracy is None:
            quantized = _quantize(model, calib, kwargs)
        else:
            quantized, facts = _quantize_with_accuracy_control(model, calib, kwargs, **accuracy)
    if model.format == "onnx":
        model.set_onnx(quantized)
    else:
        model.ov = quantized
        model.touch()
        for node, pass_name in old_ir_tags.items():  # earlier passes' tags survive the swap
            if node not in model.tags():
                model.tag([node], pass_name)
    return sorted(_node_names(model) - names_before), notes, facts


def _nncf_kwargs(fmt: str, preset: str, fast_bias_correction: bool, fix: str, subset_size: int,
                 ignored: list[str]) -> dict[str, Any]:
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
    kwargs: dict[str, Any] = {"preset": nncf.QuantizationPreset(preset), "subset_size": subset_size,
                              "fast_bias_correction": fast_bias_correction, "advanced_parameters": advanced}
    if ignored:  # resolved and validated against the graph already; NNCF's graph may lack constants
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=ignored, validate=False)
    return kwargs


def _quantize(model: ModelHandle, calib: InputSet, kwargs: dict[str, Any]):
    import nncf

    try:
        return nncf.quantize(_native_copy(model), nncf.Dataset(calib.feeds), **kwargs)
    except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError, RuntimeError) as e:
        raise RewriteError(f"{model.name}: NNCF could not quantize the model: {_first_line(e)}") from e


def _quantize_with_accuracy_control(model: ModelHandle, calib: InputSet, kwargs: dict[str, Any], *,
                                    validation: InputSet, metric: str, max_drop: float,
                                    max_float_layers: int | None) -> tuple[Any, dict[str, Any]]:
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    from .runtime import Runner

    runner = Runner(model)
    refs = [list(runner.run(f).values()) for f in validation.feeds]
    validator = _Validator(refs, metric)
    items = list(enumerate(validation.feeds))
    params = kwargs.pop("advanced_parameters")
    # one ranking worker: this runs beside other work; ranking in parallel buys little here
    restorer = AdvancedAccuracyRestorerParameters(num_ranking_workers=1)
    if max_float_layers is not None:
        restorer.max_num_iterations = max_float_layers
    reports: list = []
    try:
        with _capture_restorer_report(reports):
            q = nncf.quantize_with_accuracy_control(
                _native_copy(model), nncf.Dataset(calib.feeds), nncf.Dataset(items), validation_fn=validator,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, advanced_quantization_parameters=params,
                advanced_accuracy_restorer_parameters=restorer, **kwargs)
    except (nncf.ValidationError, nncf.InternalError, nncf.UnsupportedModelError,
            NotImplementedError, RuntimeError) as e:
        raise RewriteError(f"{model.name}: NNCF accuracy control failed: {_first_line(e)}") from e
    float_metric = validator(runner.compiled, items)[0]
    int8_metric = validator(q if model.format == "onnx" else _compile(q), items)[0]
    report = reports[-1] if reports else None
    reverted = [n.node_name for n in report.reverted_operations] if report is not None else []
    shown = (lambda v: 1.0 - v) if metric == "absrel" else (lambda v: v)  # absrel as itself
    info = {
        "metric": metric, "max_drop": max_drop, "validation_images": len(items),
        "validation_source": validation.source, "float": shown(float_metric), "int8": shown(int8_metric),
        "drop": float_metric - int8_metric,
        # NNCF validates the float model, then the all-INT8 one, before reverting anything
        "int8_all_layers": shown(validator.full_runs[1]) if len(validator.full_runs) > 1 else None,
        "met": float_metric - int8_metric <= max_drop + 1e-12,
        "reverted_by_nncf": reverted,
        "all_reverted": bool(report is not None and report.removed_all),
    }
    return q, info
