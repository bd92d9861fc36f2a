"""Convolution sites in ONNX and OpenVINO IR models: read weights/bias/geometry, write new weights back.

One reader per format describes a conv as a :class:`ConvInfo` — weights as an array whatever way they are
stored (ONNX initializer or Constant node, through Identity chains; IR Constant, or FP16-compressed
Constant → Convert), the bias (ONNX third input; IR constant of the single ``Add`` that follows the conv),
geometry for :class:`rewriter.refit.ConvGeometry`, groups, the input/output taps
:class:`rewriter.runtime.Runner` takes, and whether the weights sit behind a quantizer. :func:`write_conv`
puts new weights/bias in place, keeping the storage type (an f16 model stays f16). Used by the passes that
refit or replace convs (``dwpw``, ``asym_interp`` compensation).

Conventions: weights ``Cout x Cin/groups x kh x kw`` (an IR GroupConvolution's ``G x Cout/G x …`` is
flattened); pads ONNX order (top, left, bottom, right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from .model import ModelHandle, ir_const
from .refit import ConvGeometry

QUANT_OPS = {"DequantizeLinear", "QuantizeLinear", "FakeQuantize", "DynamicQuantizeLinear"}
IR_CONV_OPS = ("Convolution", "GroupConvolution")


@dataclass
class ConvInfo:
    """One 2-D convolution as both formats describe it (see the module docstring)."""

    name: str  # ONNX node name (first output when unnamed) / IR friendly name
    op: str  # Conv / Convolution / GroupConvolution
    in_tap: str  # conv input, as a Runner tap
    out_tap: str  # the conv's own output
    biased_tap: str  # output including the bias (IR: the bias Add's output; ONNX: out_tap)
    attrs: dict[str, Any] = field(default_factory=dict)  # strides, dilations, pads (t,l,b,r), auto_pad, groups
    groups: int = 1
    weight: np.ndarray | None = None  # None: computed or quantized (see ``quantizer``)
    weight_dtype: np.dtype | None = None  # storage type of the weights (float16 for FP16-compressed IR)
    quantizer: str | None = None  # op type the weights come through when they are quantized
    bias: np.ndarray | None = None  # Cout values, or None
    bias_dynamic: bool = False  # ONNX: a bias input that is not a constant
    bias_add: Any = None  # IR: the Add node that carries the bias
    bias_port: int = 1  # IR: the Add input the bias constant feeds
    ref: Any = None  # onnx NodeProto / ov Node

    @property
    def kernel(self) -> tuple[int, int]:
        """(kh, kw), (0, 0) when the weights are unknown."""
        return tuple(self.weight.shape[2:]) if self.weight is not None else (0, 0)

    def geometry(self, in_hw: tuple[int, int] | None = None) -> ConvGeometry:
        """Stride/dilation/explicit pads; ``in_hw`` resolves SAME auto_pad."""
        a = self.attrs
        return ConvGeometry.from_attrs(self.kernel, a.get("strides"), a.get("dilations"), a.get("pads"),
                                       a.get("auto_pad", "NOTSET"), in_hw)


# ---- ONNX ----------------------------------------------------------------------------------------------------
class OnnxIndex:
    """Initializers, producers and use counts of an ONNX graph, built once for many conv look-ups."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.inits = {t.name: t for t in g.initializer}
        self.producers = {o: n for n in g.node for o in n.output}
        self.uses: dict[str, int] = {}
        for n in g.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1

    def const(self, name: str) -> np.ndarray | None:
        """Value of a constant tensor (initializer, Constant node, or either through Identity); else None."""
        for _ in range(8):  # exporters share equal tensors through Identity chains
            if name in self.inits:
                return numpy_helper.to_array(self.inits[name])
            node = self.producers.get(name)
            if node is None:
                return None
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                return numpy_helper.to_array(node.attribute[0].t)
            if node.op_type != "Identity":
                return None
            name = node.input[0]
        return None

    def quantized(self, node, depth: int = 4) -> bool:
        """Whether a weight-producing node is (or sits just after) a quantize/dequantize op."""
        if node.op_type in QUANT_OPS:
            return True
        if depth and node.op_type in ("Cast", "Reshape", "Transpose", "Identity", "Mul", "Sub"):
            return any(self.quantized(self.producers[i], depth - 1) for i in node.input if i in self.producers)
        return False


def onnx_name(node: onnx.NodeProto) -> str:
    """A node's name, or its first output for unnamed nodes."""
    return node.name or node.output[0]


def onnx_conv(node: onnx.NodeProto, index: OnnxIndex) -> ConvInfo:
    """Describe an ONNX ``Conv`` node (weights and bias read through Identity chains and Constant nodes)."""
    a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
    groups = int(a.get("group", 1))
    c = ConvInfo(onnx_name(node), node.op_type, node.input[0], node.output[0], node.output[0], groups=groups,
                 ref=node)
    c.attrs = {"strides": a.get("strides", [1, 1]), "dilations": a.get("dilations", [1, 1]),
               "pads": a.get("pads", [0, 0, 0, 0]), "groups": groups}
    if "auto_pad" in a:
        c.attrs["auto_pad"] = a["auto_pad"].decode() if isinstance(a["auto_pad"], bytes) else a["auto_pad"]
    c.weight = index.const(node.input[1])
    if c.weight is None:
        src = index.producers.get(node.input[1])
        if src is not None and index.quantized(src):
            c.quantizer = src.op_type
    else:
        c.weight_dtype = c.weight.dtype
    if len(node.input) > 2 and node.input[2]:
        c.bias = index.const(node.input[2])
        c.bias_dynamic = c.bias is None
    return c


def onnx_convs(model: onnx.ModelProto, index: OnnxIndex | None = None) -> list[ConvInfo]:
    """Every ``Conv`` of the graph, in graph order."""
    index = index or OnnxIndex(model)
    return [onnx_conv(n, index) for n in model.graph.node if n.op_type == "Conv"]


def set_onnx_initializer(model: onnx.ModelProto, name: str, value: np.ndarray,
                         index: OnnxIndex | None = None) -> bool:
    """Overwrite initializer ``name`` with ``value`` in its own dtype; False when there is no such initializer.

    ``index`` (an :class:`OnnxIndex` of ``model``) saves a scan of the initializers per call.
    """
    inits = index.inits if index is not None else {t.name: t for t in model.graph.initializer}
    t = inits.get(name)
    if t is None:
        return False
    dtype = numpy_helper.to_array(t).dtype
    t.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value).astype(dtype), name))
    return True


def _write_onnx(model: onnx.ModelProto, conv: ConvInfo, w: np.ndarray, b: np.ndarray | None) -> None:
    index = OnnxIndex(model)
    node = conv.ref

    def put(slot: int, value: np.ndarray, suffix: str, dtype) -> None:
        old = node.input[slot] if len(node.input) > slot else ""
        if old in index.inits:
            dtype = numpy_helper.to_array(index.inits[old]).dtype
            if index.uses.get(old, 0) == 1:  # sole user: overwrite in place
                index.inits[old].CopyFrom(numpy_helper.from_array(value.astype(dtype), old))
                return
        name = f"{conv.name}/{suffix}"  # shared, computed or missing: a fresh initializer for this conv only
        model.graph.initializer.append(numpy_helper.from_array(value.astype(dtype), name))
        while len(node.input) <= slot:
            node.input.append("")
        node.input[slot] = name

    wdtype = conv.weight_dtype or np.float32
    put(1, w, "weight_refit", wdtype)
    if b is not None:
        put(2, b, "bias_refit", conv.bias.dtype if conv.bias is not None else wdtype)


# ---- OpenVINO IR ----------------------------------------------------------------------------------------------
def ir_tap(output) -> str:
    """Runner tap of an IR output: a Parameter's tensor name, else ``"friendly_name:port"``."""
    node = output.get_node()
    if node.get_type_name() == "Parameter":
        return output.get_any_name()
    return f"{node.get_friendly_name()}:{output.get_index()}"


def ir_quantized(node, depth: int = 4) -> bool:
    """Whether IR weights come through FakeQuantize or an integer Constant → Convert dequantization."""
    t = node.get_type_name()
    if t == "FakeQuantize":
        return True
    if t == "Convert":
        src = node.input_value(0).get_node()
        return src.get_type_name() == "Constant" and src.get_output_element_type(0).is_integral()
    if depth and t in ("Multiply", "Subtract", "Reshape", "Transpose"):
        return any(ir_quantized(node.input_value(i).get_node(), depth - 1) for i in range(node.get_input_size()))
    return False


def _ir_storage(node) -> np.dtype | None:
    """Storage dtype of a Constant, or of the Constant behind a Convert (FP16 compression)."""
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_output_element_type(0).to_dtype() if node.get_type_name() == "Constant" else None


def ir_conv(op) -> ConvInfo:
    """Describe an IR ``Convolution`` / ``GroupConvolution`` (and the bias of a single following ``Add``)."""
    name = op.get_friendly_name()
    a = op.get_attributes()
    c = ConvInfo(name, op.get_type_name(), ir_tap(op.input_value(0)), f"{name}:0", f"{name}:0", ref=op)
    c.attrs = {"strides": list(a["strides"]), "dilations": list(a["dilations"]),
               "pads": [a["pads_begin"][0], a["pads_begin"][1], a["pads_end"][0], a["pads_end"][1]],
               "auto_pad": a.get("auto_pad", "explicit").upper()}
    src = op.input_value(1).get_node()
    if ir_quantized(src):
        c.quantizer = src.get_type_name()
        return c
    w = ir_const(src)
    if w is None:
        return c
    if c.op == "GroupConvolution":  # G x Cout/G x Cin/G x kh x kw → Cout x Cin/G x kh x kw
        c.groups = int(w.shape[0])
        c.attrs["groups"] = c.groups
        w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
    c.weight, c.weight_dtype = w, _ir_storage(src)
    users = list(op.output(0).get_target_inputs())
    if len(users) == 1 and users[0].get_node().get_type_name() == "Add":
        add = users[0].get_node()
        bv = ir_const(add.input_value(1 - users[0].get_index()).get_node())
        if bv is not None and bv.size == w.shape[0]:
            c.bias, c.bias_add, c.bias_port = bv.reshape(-1), add, 1 - users[0].get_index()
            c.biased_tap = f"{add.get_friendly_name()}:0"
    return c


def ir_convs(model) -> list[ConvInfo]:
    """Every Convolution / GroupConvolution of an ``openvino.Model``, in topological order."""
    return [ir_conv(op) for op in model.get_ops() if op.get_type_name() in IR_CONV_OPS]


def _new_ir_constant(like, value: np.ndarray):
    """A Constant holding ``value`` in the shape, element type and friendly name of Constant ``like``."""
    import openvino.opset13 as ops

    new = ops.constant(np.ascontiguousarray(value).reshape(like.get_output_shape(0)).astype(
        like.get_output_element_type(0).to_dtype()))
    new.set_friendly_name(like.get_friendly_name())
    return new


def replace_ir_constant(const, value: np.ndarray):
    """Replace Constant node ``const`` (every use of it) by one holding ``value`` in its dtype; returns it."""
    new = _new_ir_constant(const, value)
    const.output(0).replace(new.output(0))
    return new


def set_ir_input_constant(inp, value: np.ndarray) -> None:
    """Feed node input ``inp`` a new constant ``value``, keeping an FP16-compressed Constant → Convert form."""
    src = inp.get_source_output().get_node()
    if src.get_type_name() == "Convert":  # FP16-compressed: keep the f16 constant + Convert form
        src.input(0).replace_source_output(_new_ir_constant(src.input_value(0).get_node(), value).output(0))
    else:
        inp.replace_source_output(_new_ir_constant(src, value).output(0))


def _write_ir(conv: ConvInfo, w: np.ndarray, b: np.ndarray | None) -> None:
    node = conv.ref
    set_ir_input_constant(node.input(1), w)
    if b is not None:
        if conv.bias_add is None:
            raise ValueError(f"{conv.name}: IR conv has no bias Add to write a bias into")
        set_ir_input_constant(conv.bias_add.input(conv.bias_port), b)


# ---- both -----------------------------------------------------------------------------------------------------
def write_conv(model: ModelHandle, conv: ConvInfo, weight: np.ndarray, bias: np.ndarray | None = None) -> None:
    """Give ``conv`` (described on ``model``) new weights (``Cout x Cin/g x kh x kw``) and optionally bias.

    ONNX: an initializer only this conv uses is overwritten in place, otherwise the conv gets a fresh
    ``<conv>/weight_refit`` (``bias_refit``) initializer; a bias input is added when the conv had none.
    IR: the weight Constant (and the bias Add's constant) is replaced; IR convs without a bias Add cannot
    take a bias. The storage dtype of the old tensor is kept (f16 stays f16).
    """
    if model.format == "onnx":
        _write_onnx(model.onnx, conv, weight, bias)
    else:
        _write_ir(conv, weight, bias)
        model.ov.validate_nodes_and_infer_types()
