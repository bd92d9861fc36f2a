"""Facts about quantization in a graph: is it already quantized, which ops run in INT8, how many quantizers.

Shared by the ``int8`` pass (refuse re-quantizing, report what it quantized), the cost model (an INT8 conv
costs less than an FP16 one) and the diff/report (count quantizers). Works on both formats:

- ONNX (QDQ): activations pass ``QuantizeLinear → DequantizeLinear``; weights are an int8 initializer into
  ``DequantizeLinear`` (or a Q/DQ pair on a float initializer).
- OpenVINO IR: activations pass ``FakeQuantize``; weights are ``FakeQuantize`` on a constant, or (NNCF's
  compressed form) an int8 ``Constant → Convert → [Subtract] → Multiply``.
"""

from __future__ import annotations

from typing import Any

import onnx

from .model import ModelHandle

# Ops whose inputs NNCF quantizes and whose cost INT8 changes (weighted ops).
QUANTIZABLE_ONNX = ("Conv", "ConvTranspose", "MatMul", "Gemm")
QUANTIZABLE_IR = ("Convolution", "GroupConvolution", "ConvolutionBackpropData",
                  "GroupConvolutionBackpropData", "MatMul")
# ONNX ops that only appear in a quantized graph.
ONNX_QUANT_OPS = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                  "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul")
_INT_TYPES = ("i8", "u8", "i4", "u4", "nf4")
# Ops a quantizer may sit in front of without changing the quantized op's input (NNCF moves FQs past them).
_ONNX_TRANSPARENT = ("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "MaxPool", "Pad", "Identity")
_IR_TRANSPARENT = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "MaxPool", "Pad", "Convert")
_IR_WEIGHT_CHAIN = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")


def quantizable_ops(model: ModelHandle) -> list[tuple[str, str]]:
    """[(node name, op type)] of the weighted ops INT8 applies to, in graph order."""
    if model.format == "onnx":
        return [(n.name, n.op_type) for n in model.onnx.graph.node if n.op_type in QUANTIZABLE_ONNX]
    return [(op.get_friendly_name(), op.get_type_name()) for op in model.ov.get_ordered_ops()
            if op.get_type_name() in QUANTIZABLE_IR]


def quantizer_counts(model: ModelHandle) -> dict[str, int]:
    """Quantizers in the graph: ``activation`` (FakeQuantize / Q→DQ pairs on tensors) and ``weight``.

    Also the raw op census of quantization ops (``FakeQuantize``, ``QuantizeLinear``, ...).
    """
    if model.format == "onnx":
        g = model.onnx.graph
        inits = {i.name for i in g.initializer}
        producer = {o: n for n in g.node for o in n.output}
        const_out = {n.output[0] for n in g.node if n.op_type == "Constant"}
        act = wts = 0
        ops: dict[str, int] = {}
        for n in g.node:
            if n.op_type in ONNX_QUANT_OPS:
                ops[n.op_type] = ops.get(n.op_type, 0) + 1
            if n.op_type != "DequantizeLinear":
                continue
            src = n.input[0]
            q = producer.get(src)
            if q is not None and q.op_type == "QuantizeLinear":
                src = q.input[0]
            if src in inits or src in const_out:
                wts += 1
            elif q is not None and q.op_type == "QuantizeLinear":
                act += 1
        return {"activation": act, "weight": wts, **ops}
    act = wts = 0
    ops = {}
    for op in model.ov.get_ops():
        t = op.get_type_name()
        if t == "FakeQuantize":
            ops[t] = ops.get(t, 0) + 1
            if _ir_constant(op.input_value(0).get_node()):
                wts += 1
            else:
                act += 1
        elif t == "Constant" and op.get_output_element_type(0).get_type_name() in _INT_TYPES:
            if any(ti.get_node().get_type_name() == "Convert" for ti in op.output(0).get_target_inputs()):
                wts += 1  # compressed weight: int8 Constant → Convert → (Subtract) → Multiply
    return {"activation": act, "weight": wts, **ops}


def already_quantized(model: ModelHandle) -> str | None:
    """A reason string when the graph already holds quantization (so it must not be quantized again)."""
    counts = quantizer_counts(model)
    if model.format == "onnx":
        found = {k: v for k, v in counts.items() if k in ONNX_QUANT_OPS and v}
        if found:
            return "already quantized (" + ", ".join(f"{v} {k}" for k, v in found.items()) + ")"
        return None
    if counts.get("FakeQuantize"):
        return f"already quantized ({counts['FakeQuantize']} FakeQuantize)"
    if counts["weight"]:
        return f"already quantized ({counts['weight']} int8/int4 compressed weights)"
    return None


def op_quantization(model: ModelHandle) -> dict[str, dict[str, Any]]:
    """{node name: {"op", "weights": bool, "activations": bool}} for every quantizable op."""
    if model.format == "onnx":
        return _onnx_op_quantization(model.onnx)
    out: dict[str, dict[str, Any]] = {}
    for op in model.ov.get_ordered_ops():
        t = op.get_type_name()
        if t not in QUANTIZABLE_IR:
            continue
        out[op.get_friendly_name()] = {"op": t, "activations": _ir_input_quantized(op.input_value(0)),
                                       "weights": _ir_weight_quantized(op.input_value(1))}
    return out


def quantized_op_counts(model: ModelHandle) -> dict[str, int]:
    """{op type: number running in INT8 (weights and activations both quantized)}."""
    out: dict[str, int] = {}
    for info in op_quantization(model).values():
        if info["weights"] and info["activations"]:
            out[info["op"]] = out.get(info["op"], 0) + 1
    return dict(sorted(out.items()))


def _onnx_op_quantization(m: onnx.ModelProto) -> dict[str, dict[str, Any]]:
    producer = {o: n for n in m.graph.node for o in n.output}

    def from_dq(tensor: str, transparent: bool) -> bool:
        for _ in range(8):  # quantizers sit at most a few transparent ops away
            p = producer.get(tensor)
            if p is None:
                return False
            if p.op_type == "DequantizeLinear":
                return True
            if not transparent or p.op_type not in _ONNX_TRANSPARENT:
                return False
            tensor = p.input[0]
        return False

    out: dict[str, dict[str, Any]] = {}
    for n in m.graph.node:
        if n.op_type not in QUANTIZABLE_ONNX:
            continue
        w = n.input[1] if len(n.input) > 1 else ""
        out[n.name] = {"op": n.op_type, "activations": from_dq(n.input[0], True),
                       "weights": bool(w) and from_dq(w, True)}
    return out


def _ir_input_quantized(value) -> bool:
    node = value.get_node()
    for _ in range(8):
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t not in _IR_TRANSPARENT:
            return False
        node = node.input_value(0).get_node()
    return False


def _ir_constant(node, budget: int = 64) -> bool:
    """Whether ``node`` computes from constants only (weights, possibly through a not-yet-folded reshape)."""
    stack, seen = [node], set()
    while stack:
        n = stack.pop()
        if n.get_instance_id() in seen:
            continue
        seen.add(n.get_instance_id())
        t = n.get_type_name()
        if t == "Parameter" or len(seen) > budget:
            return False
        if t != "Constant":
            stack.extend(n.input_value(i).get_node() for i in range(n.get_input_size()))
    return True


def _ir_weight_quantized(value) -> bool:
    stack, seen = [value.get_node()], 0
    while stack and seen < 16:  # the weight chain is a handful of ops
        node = stack.pop()
        seen += 1
        t = node.get_type_name()
        if t == "FakeQuantize":
            return True
        if t == "Constant":
            if node.get_output_element_type(0).get_type_name() in _INT_TYPES:
                return True
            continue
        if t in _IR_WEIGHT_CHAIN:
            stack.extend(node.input_value(i).get_node() for i in range(node.get_input_size()))
    return False

