"""One op-level description of a model, from either format (ONNX or OpenVINO IR).

One reader (``_view_layers``) walks the model's :class:`~rewriter.graph.GraphView` (shapes, element types,
producers and consumers); the only per-format part is the op vocabulary (``_ONNX`` / ``_IR``).
``make_layer`` does the arithmetic (MACs, element counts). Constant subgraphs (weights, shape computations such
as the TF-"same" pad chains) become kind ``shape`` and cost nothing: a compiler folds them.
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
    return _view_layers(handle, fixed)


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


# ---- the one reader: both formats through the graph view -------------------------------------------------
@dataclass(frozen=True)
class _Vocab:
    """What one format calls the op families the cost model tells apart (the only per-format part)."""

    eltwise: frozenset[str]
    act: frozenset[str]
    pool: frozenset[str]
    view: frozenset[str]
    quant: frozenset[str]
    folded: frozenset[str]  # ops whose outputs are constants a compiler folds (weights, shape chains)
    unlisted: frozenset[str]  # folded ops that are not layers at all (IR Constant)
    shape_reads: frozenset[str]  # readers that do not keep a tensor alive
    convs: frozenset[str]
    transposed: frozenset[str]
    group_layout: frozenset[str]  # weights G x Cout/G x ... (the group count is their first dim)
    matmul: frozenset[str]
    transpose_attr: dict[str, str]  # op -> attribute that says the weights are already [N, K]
    resizes: dict[str, str]  # op -> its default coordinate mode
    dequantizers: frozenset[str]  # producers whose output is int8 data seen as float
    int_outputs: bool  # an i8/u8 output means an int8 layer (IR); else the model's float type (ONNX)


_F = frozenset
_ONNX = _Vocab(
    eltwise=_F({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min", "Mean", "Pow", "Where", "Equal", "Less", "Greater",
                "And", "Or"}),
    act=_F({"Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Elu", "Selu",
            "Softplus", "Mish", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Neg", "Abs", "Reciprocal", "Floor", "Ceil",
            "Round", "Sign", "Cast", "Softmax", "LogSoftmax", "Swish"}),
    pool=_F({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "LpPool"}),
    view=_F({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"}),
    quant=_F({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}),
    folded=_F({"Constant", "ConstantOfShape", "Shape", "Size"}), unlisted=_F(), shape_reads=_F({"Shape", "Size"}),
    convs=_F({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}), transposed=_F({"ConvTranspose"}),
    group_layout=_F(), matmul=_F({"Gemm", "MatMul"}), transpose_attr={"Gemm": "transB"},
    resizes={"Resize": "half_pixel", "Upsample": "asymmetric"}, dequantizers=_F({"DequantizeLinear"}),
    int_outputs=False)
_IR = _Vocab(
    eltwise=_F({"Add", "Subtract", "Multiply", "Divide", "Maximum", "Minimum", "SquaredDifference", "Power", "Select",
                "Equal", "Less", "Greater", "LogicalAnd", "LogicalOr"}),
    act=_F({"Relu", "Clamp", "PRelu", "Sigmoid", "HSigmoid", "HSwish", "Swish", "Mish", "Elu", "Selu", "Tanh",
            "Gelu", "Erf", "Exp", "Log", "Sqrt", "Negative", "Abs", "SoftPlus", "Floor", "Ceiling", "Round", "Sign",
            "Convert", "SoftMax", "Softmax", "LogSoftmax"}),
    pool=_F({"MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool", "ReduceMean", "ReduceMax"}),
    view=_F({"Reshape", "Squeeze", "Unsqueeze", "Result", "Parameter"}),
    quant=_F({"FakeQuantize"}),
    folded=_F({"Constant", "ShapeOf"}), unlisted=_F({"Constant"}), shape_reads=_F({"ShapeOf"}),
    convs=_F({"Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"}),
    transposed=_F({"ConvolutionBackpropData", "GroupConvolutionBackpropData"}),
    group_layout=_F({"GroupConvolution", "GroupConvolutionBackpropData"}), matmul=_F({"MatMul"}),
    transpose_attr={"MatMul": "transpose_b"}, resizes={"Interpolate": "half_pixel"},
    dequantizers=_F({"FakeQuantize"}), int_outputs=True)


def _view_shapes(v: GraphView) -> dict[str, list[int]]:
    """{tensor: static shape} from the view's one shape-inference path (weight-free skeleton)."""
    out: dict[str, list[int]] = {}
    for t in [*v.inputs, *(o for n in v.nodes for o in n.outputs), *(i for n in v.nodes for i in n.inputs)]:
        if t and t not in out and (s := v.static_shape(t)) is not None:
            out[t] = [int(d) for d in s]
    return out


def _view_layers(handle: ModelHandle, fixed: dict[str, list[int]]) -> list[LayerInfo]:
    """Every op of ``handle`` as a LayerInfo, read through its graph view (either format)."""
    ins = {name: shape for name, shape, _ in handle.inputs()}
    pin = None if all(ins.get(k) == v for k, v in fixed.items()) else fixed  # static models share the engine's view
    v = view(handle, pin)
    voc = _IR if v.format == "ir" else _ONNX
    shapes = _view_shapes(v)
    readers: dict[str, list[str]] = {}
    for n in v.nodes:
        if n.op_type in voc.shape_reads:  # shape reads fold away; they do not keep a tensor alive
            continue
        for t in n.inputs:
            if t:
                readers.setdefault(t, []).append(n.id)
    for o in v.outputs:
        if not any(u.kind == "output" for u, _ in v.users(o)):  # a graph output without a Result node
            readers.setdefault(o, []).append("<output>")
    const = {t for t in shapes if v.producer.get(t) is None and t not in v.inputs}  # initializers
    base_prec = "fp16" if any(v.dtypes.get(i) == np.float16 for i in v.inputs) else "fp32"
    out: list[LayerInfo] = []
    for n in v.nodes:
        ins_ = [i for i in n.inputs if i]
        if n.op_type in voc.folded or (ins_ and all(i in const for i in ins_)):
            const.update(o for o in n.outputs if o)  # folded by any compiler: weights, shape chains
            if n.op_type not in voc.unlisted:
                out.append(make_layer(n.id, n.op_type, "shape", [], shapes.get(n.outputs[0], []) if n.outputs else [],
                                      tag=v.tags.get(n.id)))
            continue
        if n.kind in ("input", "output"):
            continue
        act_ins = [i for i in ins_ if i not in const]
        in_shapes = [shapes[i] for i in act_ins if i in shapes]
        out_shape = shapes.get(n.outputs[0], []) if n.outputs else []
        common = {"precision": _precision(n, v, voc, base_prec), "tag": v.tags.get(n.id)}
        layer = _layer(n, voc, act_ins, ins_, in_shapes, out_shape, shapes, const, common)
        layer.producers = [v.producer[i].id for i in act_ins if i in v.producer]
        layer.consumers = list(readers.get(n.outputs[0], [])) if n.outputs else []
        out.append(layer)
    return _mark_fusions(out)


def _precision(n: Node, v: GraphView, voc: _Vocab, base: str) -> str:
    """int8 for quantizers and layers fed by a dequantizer (QDQ / FakeQuantize of <= 256 levels); else the
    output's element type (f16 → fp16) or the model's float type."""
    if n.op_type in voc.quant:
        return "int8"
    p = v.producer.get(n.inputs[0]) if n.inputs else None
    if p is not None and p.op_type in voc.dequantizers and int(p.attrs.get("levels", 256)) <= 256:
        return "int8"
    dtype = v.dtypes.get(n.outputs[0]) if n.outputs else None
    if dtype == np.float16:
        return "fp16"
    if voc.int_outputs:
        if dtype in (np.dtype(np.int8), np.dtype(np.uint8)):
            return "int8"
        if dtype == np.float32:
            return "fp32"
    return base


def _layer(n: Node, voc: _Vocab, act_ins: list[str], ins_: list[str], in_shapes, out_shape, shapes, const,
           common: dict) -> LayerInfo:
    op, name, a = n.op_type, n.id, n.attrs
    if op in voc.convs:
        w = shapes.get(n.inputs[3] if op == "QLinearConv" else n.inputs[1]) or None
        grouped, transposed = op in voc.group_layout, op in voc.transposed
        groups = (w[0] if w else 1) if grouped else int(a.get("group", 1))
        cin = in_shapes[0][1] if in_shapes and len(in_shapes[0]) > 1 else None
        kernel = tuple(a.get("kernel_shape") or (w[-2:] if w and len(w) >= 4 else [1, 1]))[:2]
        kind = _conv_kind(groups, cin, out_shape[1] if len(out_shape) > 1 else None, transposed)
        return make_layer(name, op, kind, in_shapes[:1], out_shape, weight_shape=w, groups=groups,
                          stride=tuple(a.get("strides", [1, 1]))[:2] or (1, 1), kernel=kernel or (1, 1),
                          weight_layout=("g" if grouped else "") + ("iohw" if transposed else "oihw"), **common)
    if op in voc.matmul and len(n.inputs) > 1 and n.inputs[1] in const:
        w = shapes.get(n.inputs[1]) or None
        if w is not None and op in voc.transpose_attr and not a.get(voc.transpose_attr[op], False):
            w = list(reversed(w))  # stored [K, N]; use [N, K]
        return make_layer(name, op, "conv", in_shapes[:1], out_shape, weight_shape=w, **common)
    if op in voc.resizes:
        ra = resize_attrs(str(a.get("mode", "nearest")), str(a.get("coordinate_transformation_mode", voc.resizes[op])),
                          in_shapes[0] if in_shapes else out_shape, out_shape)
        return make_layer(name, op, "resize", in_shapes[:1], out_shape, attrs=ra, **common)
    if op in voc.pool:
        k = a.get("kernel_shape", a.get("kernel"))
        if k is None and in_shapes and len(in_shapes[0]) == 4:  # global pool: the whole plane
            k = in_shapes[0][2:]
        return make_layer(name, op, "pool", in_shapes[:1], out_shape, kernel=tuple(k or (1, 1))[:2],
                          stride=tuple(a.get("strides", [1, 1]))[:2] or (1, 1), **common)
    family = ("quant" if op in voc.quant else "eltwise" if op in voc.eltwise else "activation"
              if op in voc.act else "reshape" if op in voc.view else op.lower())
    if family == "quant":
        return make_layer(name, op, "quant", in_shapes[:1], out_shape, **common)
    if family == "eltwise":
        if len(act_ins) == 1 and len(ins_) > 1:  # a constant operand (bias, scale, clamp bound): an activation
            return make_layer(name, op, "activation", in_shapes, out_shape,
                              attrs={"function": op, "const_operand": True}, **common)
        return make_layer(name, op, "eltwise", in_shapes, out_shape, **common)
    if family == "activation":
        return make_layer(name, op, "activation", in_shapes[:1], out_shape, attrs={"function": op}, **common)
    if family == "concat":
        return make_layer(name, op, "concat", in_shapes, out_shape, **common)
    if family == "pad":
        mode = str(a.get("pad_mode", a.get("mode", "constant")))
        return make_layer(name, op, "pad", in_shapes[:1], out_shape, attrs={"mode": mode}, **common)
    if family == "reshape":
        return make_layer(name, op, "reshape", in_shapes[:1], out_shape, **common)
    return make_layer(name, op, "other", in_shapes, out_shape, **common)


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
