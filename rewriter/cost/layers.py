"""One op-level description of a model, from either format (ONNX or OpenVINO IR).

Each adapter (``_onnx_layers``, ``_ir_layers``) only reads shapes and attributes; ``make_layer`` does the
arithmetic (MACs, element counts) once for both. Constant subgraphs (weights, shape computations such as the
TF-"same" pad chains) become kind ``shape`` and cost nothing: a compiler folds them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import RewriteError
from ..graph import GraphView, Node, view
from ..model import ModelHandle

KINDS = ("conv", "dwconv", "gconv", "convtranspose", "dwconvtranspose", "resize", "eltwise", "activation",
         "pool", "concat", "pad", "quant", "reshape", "shape", "other")
DEFAULT_HW = (288, 512)  # dynamic spatial dims are costed at the 512x288 video resolution

_PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
_DPU_ACTS = {"Relu", "Clip", "Clamp", "LeakyRelu", "PRelu"}  # activations a DPU/CPU conv fuses (PPE/post-op)

_ONNX_ELTWISE = {"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "Where", "Equal", "Less",
                 "Greater", "And", "Or"}
_ONNX_ACT = {"Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu",
             "Selu", "Softplus", "Mish", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal",
             "Floor", "Ceil", "Round", "Sign", "Cast", "Softmax", "LogSoftmax", "Swish"}
_ONNX_POOL = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
              "LpPool"}
_ONNX_VIEW = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}
_ONNX_QUANT = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}

_IR_ELTWISE = {"Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "SquaredDifference", "Power",
               "Select", "Equal", "Less", "Greater", "LogicalAnd", "LogicalOr"}
_IR_ACT = {"Relu", "Clamp", "PRelu", "Sigmoid", "HSigmoid", "HSwish", "Swish", "Mish", "Elu", "Selu", "Tanh",
           "Gelu", "Erf", "Exp", "Log", "Sqrt", "Negative", "Abs", "SoftPlus", "Floor", "Ceiling", "Round",
           "Sign", "Convert", "SoftMax", "Softmax", "LogSoftmax"}
_IR_POOL = {"MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "ReduceMean", "ReduceMax"}
_IR_VIEW = {"Reshape", "Squeeze", "Unsqueeze", "Result", "Parameter"}
_IR_SHAPE = {"Constant", "ShapeOf"}


@dataclass
class LayerInfo:
    """One operation as the cost model sees it (shapes NCHW, element counts include the batch)."""

    node: str
    op: str                                    # kind, one of KINDS
    op_type: str                               # the graph's op type (Conv, GroupConvolution, Resize, ...)
    in_shapes: list[list[int]]                 # activation inputs only (no weights / constants)
    out_shape: list[int]
    weight_shape: list[int] | None = None
    groups: int = 1
    stride: tuple[int, int] = (1, 1)
    kernel: tuple[int, int] = (1, 1)
    macs: int = 0
    in_elems: int = 0
    out_elems: int = 0
    weight_elems: int = 0
    precision: str = "fp32"                    # fp32 | fp16 | int8
    tag: str | None = None                     # pass that made/changed the node (model.tags())
    attrs: dict[str, Any] = field(default_factory=dict)
    producers: list[str] = field(default_factory=list)   # nodes feeding the activation inputs
    consumers: list[str] = field(default_factory=list)   # nodes reading the (first) output

    @property
    def bytes(self) -> int:
        """Bytes moved (activations in + out, weights) at the layer's own precision."""
        return self.bytes_at(self.precision)

    def bytes_at(self, precision: str) -> int:
        """Bytes moved if the layer ran at ``precision`` (weights int8 when the layer is int8)."""
        b = _PRECISION_BYTES[precision]
        return (self.in_elems + self.out_elems) * b + self.weight_elems * b

    @property
    def multiplier(self) -> int:
        """Depthwise channel multiplier (output channels per group); 1 for plain depthwise."""
        if self.op in ("dwconv", "dwconvtranspose") and self.groups:
            return max(1, self.out_shape[1] // self.groups) if len(self.out_shape) > 1 else 1
        return 1

    @property
    def cost_kind(self) -> str:
        """Kind used for per-kind CPU throughput: depthwise with channel multiplier > 1 and pointwise (1x1)
        convs run different kernels from their op kind's (slow grouped path; memory-bound 1x1)."""
        if self.op == "dwconv" and self.multiplier > 1:
            return "dwconv_mult"
        if self.op == "conv" and self.kernel == (1, 1) and self.op_type not in ("Gemm", "MatMul"):
            return "pwconv"
        return self.op

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["bytes"] = self.bytes
        d["stride"], d["kernel"] = list(self.stride), list(self.kernel)
        return d


# ---- public entry point ----------------------------------------------------------------------------------
def layers(model: ModelHandle | Any, input_shape: dict[str, list[int]] | list[int] | None = None
           ) -> list[LayerInfo]:
    """Op-level description of ``model`` (a ModelHandle, path, ModelProto or ov.Model), in graph order.

    ``input_shape`` fixes dynamic inputs ({input name: shape} or one shape for a single-input model); dynamic
    dims not given are set to batch 1, 3 channels, 288x512.
    """
    handle = model if isinstance(model, ModelHandle) else ModelHandle.load(model)
    fixed = fixed_input_shapes(handle, input_shape)
    if handle.format == "ir":
        return _ir_layers(handle, fixed)
    return _onnx_layers(handle, fixed)


def fixed_input_shapes(handle: ModelHandle, input_shape) -> dict[str, list[int]]:
    ins = handle.inputs()
    given: dict[str, list[int]] = {}
    if isinstance(input_shape, dict):
        given = {k: list(v) for k, v in input_shape.items()}
    elif input_shape is not None:
        if len(ins) != 1:
            raise RewriteError(f"{handle.name}: has {len(ins)} inputs; give input_shape as {{name: shape}}")
        given = {ins[0][0]: list(input_shape)}
    out = {}
    for name, shape, _ in ins:
        if name in given:
            out[name] = given[name]
            continue
        if all(d is not None for d in shape):
            out[name] = [int(d) for d in shape]
            continue
        fill = [1, 3, *DEFAULT_HW] if len(shape) == 4 else [1] * len(shape)
        out[name] = [int(d) if d is not None else fill[i] for i, d in enumerate(shape)]
    return out


def _prod(shape) -> int:
    return int(np.prod(shape)) if shape else 1


# ---- the shared arithmetic -------------------------------------------------------------------------------
def make_layer(node: str, op_type: str, kind: str, in_shapes: list[list[int]], out_shape: list[int],
                *, weight_shape: list[int] | None = None, groups: int = 1, stride=(1, 1), kernel=(1, 1),
                precision: str = "fp32", tag: str | None = None, attrs: dict | None = None,
                weight_layout: str = "oihw") -> LayerInfo:
    """Build a LayerInfo and compute its MACs and element counts.

    ``weight_layout``: ``oihw`` (conv: [Cout, Cin/g, kh, kw]), ``iohw`` (transposed conv: [Cin, Cout/g, kh,
    kw]) or ``goihw`` / ``giohw`` (OpenVINO group forms with a leading G axis).
    """
    attrs = dict(attrs or {})
    out_elems = _prod(out_shape)
    main_in = in_shapes[0] if in_shapes else []
    in_elems = sum(_prod(s) for s in in_shapes)
    w_elems = _prod(weight_shape) if weight_shape else 0
    macs = 0
    if kind in ("conv", "dwconv", "gconv") and weight_shape:
        w = weight_shape[1:] if weight_layout.startswith("g") else weight_shape
        cin_per_group = w[1] if len(w) > 1 else 1
        k = _prod(w[2:]) if len(w) > 2 else 1
        if op_type in ("Gemm", "MatMul") and len(w) == 2:  # fully connected: out * K
            k, cin_per_group = 1, (w[0] if op_type == "MatMul" else w[1])
        macs = out_elems * cin_per_group * k
    elif kind in ("convtranspose", "dwconvtranspose") and weight_shape:
        w = weight_shape[1:] if weight_layout.startswith("g") else weight_shape
        cout_per_group = w[1] if len(w) > 1 else 1
        macs = _prod(main_in) * cout_per_group * (_prod(w[2:]) if len(w) > 2 else 1)
    elif kind == "pool":
        macs = out_elems * max(1, kernel[0] * kernel[1])
    elif kind == "resize":
        taps = 4 if attrs.get("mode") in ("linear", "linear_onnx", "bilinear") else (
            16 if attrs.get("mode") == "cubic" else 0)
        macs = out_elems * taps
    elif kind in ("eltwise", "activation"):
        macs = out_elems
    if kind == "concat":
        in_elems = out_elems  # a concat reads what it writes
    return LayerInfo(node=node, op=kind, op_type=op_type, in_shapes=[list(s) for s in in_shapes],
                     out_shape=list(out_shape), weight_shape=list(weight_shape) if weight_shape else None,
                     groups=int(groups), stride=tuple(int(s) for s in stride), kernel=tuple(int(k) for k in kernel),
                     macs=int(macs), in_elems=int(in_elems), out_elems=int(out_elems), weight_elems=int(w_elems),
                     precision=precision, tag=tag, attrs=attrs)


def _conv_kind(groups: int, cin: int | None, cout: int | None, transposed: bool) -> str:
    if groups > 1 and cin is not None and groups == cin:
        return "dwconvtranspose" if transposed else "dwconv"
    if transposed:
        return "convtranspose"
    return "gconv" if groups > 1 else "conv"


def resize_attrs(mode: str, coordinate_mode: str, in_shape: list[int], out_shape: list[int]) -> dict[str, Any]:
    scales = [o / i if i else 0.0 for i, o in zip(in_shape[2:], out_shape[2:])]
    integer = bool(scales) and all(s >= 1 and abs(s - round(s)) < 1e-6 for s in scales)
    return {"mode": mode, "coordinate_mode": coordinate_mode, "scale": [round(s, 6) for s in scales],
            "integer_scale": integer}


_FUSING_PRODUCERS = ("conv", "dwconv", "gconv", "eltwise", "convtranspose", "dwconvtranspose")
_CONV_KINDS = ("conv", "dwconv", "gconv", "convtranspose", "dwconvtranspose")
# eltwise ops with a constant operand after a conv: bias / scale / clamp bounds, folded by every compiler
_AFFINE = {"Add", "Sub", "Mul", "Div", "Subtract", "Multiply", "Divide", "Max", "Min", "Maximum", "Minimum"}


def _mark_fusions(out: list[LayerInfo]) -> list[LayerInfo]:
    """Mark what every target's compiler fuses: ReLU-like activations into their single-use producer
    (DPU PPE / CPU post-op), zero Pads into the conv they feed (conv padding). Eltwise adds on a
    single-use conv output get ``cpu_fused_into`` (OpenVINO CPU sum post-op; the NPU runs them apart)."""
    by_name = {li.node: li for li in out}
    for li in out:
        src = by_name.get(li.producers[0]) if li.producers else None
        fn = li.attrs.get("function")
        fusable = fn in _DPU_ACTS or (li.attrs.get("const_operand") and fn in _AFFINE)
        if li.op == "activation" and fusable and src is not None and len(src.consumers) == 1:
            # conv -> bias Add -> Maximum -> Minimum chains fold into the conv one link at a time
            root = src.attrs.get("fused_into") if src.op == "activation" else None
            if root or src.op in _FUSING_PRODUCERS:
                li.attrs["fused_into"] = root or src.node
        elif li.op == "pad" and len(li.consumers) == 1:
            dst = by_name.get(li.consumers[0])
            if dst is not None and dst.op in _CONV_KINDS and li.attrs.get("mode", "constant") == "constant":
                li.attrs["fused_into"] = dst.node
        elif li.op == "quant" and li.op_type in ("QuantizeLinear", "FakeQuantize"):
            # OpenVINO CPU fuses an activation quantizer into a single-use conv/eltwise producer (post-op);
            # after a Resize, Concat or the input it runs as its own FakeQuantize node
            root = src.attrs.get("fused_into") if src is not None and src.op == "activation" else None
            prod = by_name.get(root) if root else src
            if prod is not None and prod.op in _FUSING_PRODUCERS and len(prod.consumers) == 1:
                li.attrs["cpu_fused_into"] = prod.node
            else:
                li.attrs["cpu_standalone"] = True
        elif li.op == "eltwise" and li.op_type in ("Add", "Sum") and len(li.producers) == 2:
            for p in li.producers:
                q = by_name.get(p)
                if q is not None and q.op in _CONV_KINDS and len(q.consumers) == 1:
                    li.attrs["cpu_fused_into"] = q.node
                    break
    return out


# ---- ONNX adapter (reads the graph view) -----------------------------------------------------------------
_FOLDED = ("Constant", "ConstantOfShape", "Shape", "Size")


def _view_shapes(v: GraphView) -> dict[str, list[int]]:
    """{tensor: static shape} from the view's one shape-inference path (weight-free skeleton)."""
    out: dict[str, list[int]] = {}
    for t in [*v.inputs, *(o for n in v.nodes for o in n.outputs), *(i for n in v.nodes for i in n.inputs)]:
        if t and t not in out and (s := v.static_shape(t)) is not None:
            out[t] = [int(d) for d in s]
    return out


def _onnx_layers(handle: ModelHandle, fixed: dict[str, list[int]]) -> list[LayerInfo]:
    ins = {name: shape for name, shape, _ in handle.inputs()}
    pin = None if all(ins.get(k) == v for k, v in fixed.items()) else fixed  # static models share the engine's view
    v = view(handle, pin)
    shapes = _view_shapes(v)
    readers: dict[str, list[str]] = {}
    for n in v.nodes:
        if n.op_type in ("Shape", "Size"):  # shape reads fold away; they do not keep a tensor alive
            continue
        for t in n.inputs:
            if t:
                readers.setdefault(t, []).append(n.id)
    for o in v.outputs:
        readers.setdefault(o, []).append("<output>")
    const = {t for t in shapes if v.producer.get(t) is None and t not in v.inputs}
    base_prec = "fp16" if any(v.dtypes.get(i) == np.float16 for i in v.inputs) else "fp32"
    out: list[LayerInfo] = []
    for n in v.nodes:
        ins_ = [i for i in n.inputs if i]
        if n.op_type in _FOLDED or (ins_ and all(i in const for i in ins_)):
            const.update(o for o in n.outputs if o)  # folded by any compiler: weights, shape chains
            out.append(make_layer(n.id, n.op_type, "shape", [], shapes.get(n.outputs[0], []), tag=v.tags.get(n.id)))
            continue
        act_ins = [i for i in ins_ if i not in const]
        in_shapes = [shapes[i] for i in act_ins if i in shapes]
        out_shape = shapes.get(n.outputs[0], []) if n.outputs else []
        layer = _onnx_layer(n, act_ins, in_shapes, out_shape, shapes, const, _onnx_precision(n, v, base_prec),
                            v.tags.get(n.id))
        layer.producers = [v.producer[i].id for i in act_ins if i in v.producer]
        layer.consumers = list(readers.get(n.outputs[0], [])) if n.outputs else []
        out.append(layer)
    return _mark_fusions(out)


def _onnx_precision(n: Node, v: GraphView, base: str) -> str:
    """int8 when the activation input comes from a DequantizeLinear (QDQ); else the model's float type."""
    if n.op_type in _ONNX_QUANT:
        return "int8"
    p = v.producer.get(n.inputs[0]) if n.inputs else None
    if p is not None and p.op_type == "DequantizeLinear":
        return "int8"
    if n.outputs and v.dtypes.get(n.outputs[0]) == np.float16:
        return "fp16"
    return base


def _onnx_layer(n: Node, act_ins, in_shapes, out_shape, shapes, const, prec, tag) -> LayerInfo:
    op, name, attrs = n.op_type, n.id, n.attrs
    common = {"precision": prec, "tag": tag}
    if op in ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv"):
        w_name = n.inputs[3] if op == "QLinearConv" else n.inputs[1]
        w = shapes.get(w_name)
        groups = int(attrs.get("group", 1))
        transposed = op == "ConvTranspose"
        cin = in_shapes[0][1] if in_shapes and len(in_shapes[0]) > 1 else None
        kernel = tuple(attrs.get("kernel_shape", w[2:] if w and len(w) >= 4 else [1, 1]))[:2]
        stride = tuple(attrs.get("strides", [1, 1]))[:2]
        kind = _conv_kind(groups, cin, out_shape[1] if len(out_shape) > 1 else None, transposed)
        return make_layer(name, op, kind, in_shapes[:1], out_shape, weight_shape=w, groups=groups,
                           stride=stride or (1, 1), kernel=kernel or (1, 1),
                           weight_layout="iohw" if transposed else "oihw", **common)
    if op in ("Gemm", "MatMul") and len(n.inputs) > 1 and n.inputs[1] in const:
        w = shapes.get(n.inputs[1])
        if w is not None and op == "Gemm" and not attrs.get("transB", 0):
            w = list(reversed(w))  # Gemm stores [K, N] unless transB; use [N, K]
        return make_layer(name, op, "conv", in_shapes[:1], out_shape, weight_shape=w, **common)
    if op in ("Resize", "Upsample"):
        mode = attrs.get("mode", b"nearest")
        mode = mode.decode() if isinstance(mode, bytes) else str(mode)
        cm = attrs.get("coordinate_transformation_mode", b"half_pixel" if op == "Resize" else b"asymmetric")
        cm = cm.decode() if isinstance(cm, bytes) else str(cm)
        ra = resize_attrs(mode, cm, in_shapes[0] if in_shapes else out_shape, out_shape)
        return make_layer(name, op, "resize", in_shapes[:1], out_shape, attrs=ra, **common)
    if op in _ONNX_POOL:
        k = attrs.get("kernel_shape")
        if k is None and in_shapes and len(in_shapes[0]) == 4:  # global pool: the whole plane
            k = in_shapes[0][2:]
        return make_layer(name, op, "pool", in_shapes[:1], out_shape, kernel=tuple(k or (1, 1))[:2],
                           stride=tuple(attrs.get("strides", [1, 1]))[:2] or (1, 1), **common)
    mode = attrs.get("mode", "constant")
    family = ("quant" if op in _ONNX_QUANT else "eltwise" if op in _ONNX_ELTWISE else "activation"
              if op in _ONNX_ACT else "reshape" if op in _ONNX_VIEW else op.lower())
    return _plain_layer(name, op, family, in_shapes, out_shape, common, const_operand=len(act_ins) == 1,
                        mode=mode.decode() if isinstance(mode, bytes) else str(mode))


def _plain_layer(name: str, op: str, family: str, in_shapes, out_shape, common: dict, *, const_operand: bool,
                 mode: str) -> LayerInfo:
    """Layers both adapters build alike once they have named the op's family (quant, eltwise, activation,
    concat, pad, reshape; anything else is ``other``). ``const_operand``: an eltwise with one activation input."""
    if family == "quant":
        return make_layer(name, op, "quant", in_shapes[:1], out_shape, **common)
    if family == "eltwise":
        if const_operand:  # per-tensor/per-channel constant operand (bias, scale, clamp bound): an activation
            return make_layer(name, op, "activation", in_shapes, out_shape,
                               attrs={"function": op, "const_operand": True}, **common)
        return make_layer(name, op, "eltwise", in_shapes, out_shape, **common)
    if family == "activation":
        return make_layer(name, op, "activation", in_shapes[:1], out_shape, attrs={"function": op}, **common)
    if family == "concat":
        return make_layer(name, op, "concat", in_shapes, out_shape, **common)
    if family == "pad":
        return make_layer(name, op, "pad", in_shapes[:1], out_shape, attrs={"mode": mode}, **common)
    if family == "reshape":
        return make_layer(name, op, "reshape", in_shapes[:1], out_shape, **common)
    return make_layer(name, op, "other", in_shapes, out_shape, **common)


# ---- OpenVINO IR adapter ---------------------------------------------------------------------------------
def _ir_layers(handle: ModelHandle, fixed: dict[str, list[int]]) -> list[LayerInfo]:
    m = handle.ov
    dynamic = any(not p.get_partial_shape().is_static for p in m.inputs)
    if dynamic:
        m = m.clone()
        m.reshape({p.get_any_name(): fixed[p.get_any_name()] for p in m.inputs})
    tags = handle.tags()
    ops = m.get_ordered_ops()
    const_ops: set[str] = set()
    base_prec = "fp16" if any(p.get_element_type().get_type_name() == "f16" for p in m.inputs) else "fp32"
    out: list[LayerInfo] = []
    for op in ops:
        t = op.get_type_name()
        name = op.get_friendly_name()
        src_ops = [op.input_value(i).get_node() for i in range(op.get_input_size())]
        if t in _IR_SHAPE or (src_ops and all(s.get_friendly_name() in const_ops for s in src_ops)):
            const_ops.add(name)
            if t not in ("Constant",):  # Constants are not layers at all
                out.append(make_layer(name, t, "shape", [], _ov_shape(op, 0), tag=tags.get(name)))
            continue
        if t in ("Parameter", "Result"):
            continue
        act_idx = [i for i, s in enumerate(src_ops) if s.get_friendly_name() not in const_ops]
        in_shapes = [_ov_in_shape(op, i) for i in act_idx]
        out_shape = _ov_shape(op, 0)
        prec = _ir_precision(op, src_ops, base_prec)
        layer = _ir_layer(op, t, name, in_shapes, out_shape, prec, tags.get(name))
        layer.producers = [src_ops[i].get_friendly_name() for i in act_idx]
        if op.get_output_size():
            layer.consumers = [ti.get_node().get_friendly_name() for ti in op.output(0).get_target_inputs()
                               if ti.get_node().get_type_name() != "ShapeOf"]  # shape reads fold away
        out.append(layer)
    return _mark_fusions(out)


def _ov_shape(op, port: int) -> list[int]:
    if op.get_output_size() <= port:
        return []
    ps = op.get_output_partial_shape(port)
    return [int(d) for d in ps.to_shape()] if ps.is_static else []


def _ov_in_shape(op, port: int) -> list[int]:
    ps = op.input_value(port).get_partial_shape()
    return [int(d) for d in ps.to_shape()] if ps.is_static else []


def _ir_precision(op, src_ops, base: str) -> str:
    """int8 when the activation input comes from a FakeQuantize (levels <= 256); else the output type."""
    if op.get_type_name() == "FakeQuantize":
        return "int8"
    if src_ops and src_ops[0].get_type_name() == "FakeQuantize":
        levels = src_ops[0].get_attributes().get("levels", 256)
        if levels <= 256:
            return "int8"
    et = op.get_output_element_type(0).get_type_name() if op.get_output_size() else "f32"
    if et == "f16":
        return "fp16"
    if et in ("i8", "u8"):
        return "int8"
    return base if et != "f32" else "fp32"


def _ir_layer(op, t: str, name: str, in_shapes, out_shape, prec: str, tag: str | None) -> LayerInfo:
    common = {"precision": prec, "tag": tag}
    attrs = op.get_attributes()
    if t in ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"):
        w = _ov_in_shape(op, 1)
        grouped = t.startswith("Group")
        transposed = "Backprop" in t
        groups = w[0] if grouped and w else 1
        cin = in_shapes[0][1] if in_shapes and len(in_shapes[0]) > 1 else None
        kind = _conv_kind(groups, cin, out_shape[1] if len(out_shape) > 1 else None, transposed)
        kernel = tuple(w[-2:]) if len(w) >= 4 else (1, 1)
        layout = ("g" if grouped else "") + ("iohw" if transposed else "oihw")
        return make_layer(name, t, kind, in_shapes[:1], out_shape, weight_shape=w, groups=groups,
                           stride=tuple(attrs.get("strides", [1, 1]))[:2], kernel=kernel, weight_layout=layout,
                           **common)
    if t == "MatMul" and len(in_shapes) == 1:
        w = _ov_in_shape(op, 1)
        if w and not attrs.get("transpose_b", False):
            w = list(reversed(w))
        return make_layer(name, t, "conv", in_shapes, out_shape, weight_shape=w, **common)
    if t == "Interpolate":
        mode = str(attrs.get("mode", "nearest"))
        cm = str(attrs.get("coordinate_transformation_mode", "half_pixel"))
        ra = resize_attrs(mode, cm, in_shapes[0] if in_shapes else out_shape, out_shape)
        return make_layer(name, t, "resize", in_shapes[:1], out_shape, attrs=ra, **common)
    if t in _IR_POOL:
        k = attrs.get("kernel")
        if k is None and in_shapes and len(in_shapes[0]) == 4:
            k = in_shapes[0][2:]
        return make_layer(name, t, "pool", in_shapes[:1], out_shape, kernel=tuple(k or (1, 1))[:2],
                           stride=tuple(attrs.get("strides", [1, 1]))[:2] or (1, 1), **common)
    family = ("quant" if t == "FakeQuantize" else "eltwise" if t in _IR_ELTWISE else "activation"
              if t in _IR_ACT else "reshape" if t in _IR_VIEW else t.lower())
    return _plain_layer(name, t, family, in_shapes, out_shape, common,
                        const_operand=len(in_shapes) == 1 and op.get_input_size() > 1,
                        mode=str(attrs.get("pad_mode", "constant")))


def synthetic_conv(*, cin: int, cout: int, k: int, h: int, w: int, groups: int = 1, stride: int = 1,
                   precision: str = "fp16", transposed: bool = False, node: str = "synthetic") -> LayerInfo:
    """A single conv layer (input 1 x cin x h x w, 'same' padding) for what-if costing."""
    if cin % groups or cout % groups:
        raise RewriteError(f"conv {cin}->{cout} cannot have groups={groups}")
    if transposed:
        ho, wo = h * stride, w * stride
        wshape = [cin, cout // groups, k, k]
    else:
        ho, wo = math.ceil(h / stride), math.ceil(w / stride)
        wshape = [cout, cin // groups, k, k]
    kind = _conv_kind(groups, cin, cout, transposed)
    return make_layer(node, "ConvTranspose" if transposed else "Conv", kind, [[1, cin, h, w]],
                       [1, cout, ho, wo], weight_shape=wshape, groups=groups, stride=(stride, stride),
                       kernel=(k, k), precision=precision, weight_layout="iohw" if transposed else "oihw")
