"""Structural before/after diff of two models (any mix of ONNX and OpenVINO IR).

Both models become a small normalised graph: constants (initializers, Constant nodes, IR Constant/Convert and
anything computed only from constants) are *weights* attached to the ops that read them, not ops. ONNX vs IR
is compared as two OpenVINO graphs (the ONNX side converted by OpenVINO's ONNX frontend, node names mapped
back to the ONNX names through tensor names), so the attribute vocabularies agree exactly. Op types are shown
in ONNX vocabulary (Convolution → Conv, Interpolate → Resize, ...); IR bias ``Add`` after a convolution and
``Maximum``/``Minimum`` clamps are folded back into ``Conv`` and ``Clip``.

Nodes are matched by connectivity, not by name, so renames by exporters and passes do not break the diff:
anchors are the graph inputs/outputs and ops whose weights hash the same (after FP16 rounding, so an
FP16-compressed IR matches its FP32 source); matches then propagate to producers and consumers of equal
op "kind" (op type, and for convolutions the kernel size and depthwise/grouped/full form). Names only break
ties and seed what connectivity cannot reach.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from .errors import RewriteError
from .jsonable import jsonable
from .model import ModelHandle

# IR op types shown in ONNX vocabulary (anything not listed keeps its IR name)
IR_TO_ONNX = {
    "Convolution": "Conv", "GroupConvolution": "Conv", "ConvolutionBackpropData": "ConvTranspose",
    "GroupConvolutionBackpropData": "ConvTranspose", "Interpolate": "Resize", "Multiply": "Mul",
    "Subtract": "Sub", "Divide": "Div", "Power": "Pow", "Maximum": "Max", "Minimum": "Min", "Clamp": "Clip",
    "ShapeOf": "Shape", "StridedSlice": "Slice", "Convert": "Cast", "AvgPool": "AveragePool",
    "HSwish": "HardSwish", "HSigmoid": "HardSigmoid", "SoftMax": "Softmax", "VariadicSplit": "Split",
    "Broadcast": "Expand", "Select": "Where", "Negative": "Neg", "Ceiling": "Ceil", "LogicalNot": "Not",
    "LogicalAnd": "And", "LogicalOr": "Or", "SquaredDifference": "SquaredDifference",
}
CONV_OPS = {"Conv", "ConvTranspose"}
# ops whose float constant inputs are learned parameters (weights, biases, BN statistics)
PARAM_OPS = CONV_OPS | {"Gemm", "MatMul", "BatchNormalization", "PRelu", "InstanceNormalization",
                        "LayerNormalization"}
# elementwise ops whose per-channel constant operand is a parameter (decomposed BN, preprocessing)
AFFINE_OPS = {"Add", "Mul", "Sub", "Div"}
COMMUTATIVE = {"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Equal"}
WEIGHT_RTOL = 1e-3  # weight changes below this × the largest weight are rounding (FP16 storage: ≤ 4.9e-4)
SMALL_CONST = 16  # constant inputs up to this many elements are compared by value, as pseudo-attributes
PSEUDO_OPS = ("<input>", "<output>")
_NO_DEFAULT = object()


# ---- normalised graph ------------------------------------------------------------------------------------
@dataclass
class Const:
    """A constant input of an op: where it enters, its shape, a content hash and (when known) its value."""

    port: str  # input name (ONNX schema name, e.g. "scales") or "in<k>" for IR
    shape: tuple[int, ...] | None
    digest: str
    value: np.ndarray | None = None
    ident: str = ""  # tensor id, so shared constants count once in parameter totals

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.shape is not None else 0


@dataclass(eq=False)  # nodes compare and hash by identity
class Node:
    """One op of a normalised graph (or a pseudo node for a graph input/output)."""

    name: str
    op: str  # ONNX vocabulary
    raw_op: str  # op type in its own format
    inputs: list[str]  # activation tensor ids, in port order (constants and empty inputs left out)
    outputs: list[str]
    consts: list[Const] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    aliases: set[str] = field(default_factory=set)  # names usable for name matching (node, member, tensors)
    tag: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)  # schema defaults (ONNX) of this op's attributes
    out_shape: list[int] | None = None
    in_shape: list[int] | None = None

    @property
    def pseudo(self) -> bool:
        return self.op in PSEUDO_OPS

    @property
    def weights(self) -> list[Const]:
        """Constant inputs that are weights (compared by shape and content, not shown as attributes)."""
        if self.op in PARAM_OPS:
            return [c for c in self.consts if c.shape is not None and (c.value is None or c.value.dtype.kind == "f")]
        return [c for c in self.consts if c.size > SMALL_CONST]

    @property
    def kind(self) -> tuple:
        """What must agree for two nodes to be 'the same node': op and, for convolutions, their form."""
        if self.op not in CONV_OPS:
            return (self.op,)
        w = self.consts[0].shape if self.consts and self.consts[0].shape else None
        group = int(self.attrs.get("group", 1) or 1)
        spatial = tuple(w[2:]) if w else ()
        form = "full" if group == 1 else ("depthwise" if w and w[1] == 1 else "grouped")
        return (self.op, form, spatial)

    def describe(self) -> str:
        """Short human description, e.g. 'Conv depthwise 3x3, 64 ch'."""
        if self.op in CONV_OPS and len(self.kind) == 3:
            _, form, spatial = self.kind
            w = self.consts[0].shape if self.consts else None
            k = "x".join(map(str, spatial))
            if w:
                cin = w[1] * int(self.attrs.get("group", 1) or 1) if self.op == "Conv" else w[0]
                cout = w[0] if self.op == "Conv" else w[1] * int(self.attrs.get("group", 1) or 1)
                chans = f"{cin}→{cout} ch" if form != "depthwise" else f"{cout} ch"
            else:
                chans = ""
            return " ".join(s for s in (self.op, "" if form == "full" else form, k, chans) if s)
        return self.op

    @property
    def param_consts(self) -> list[Const]:
        """Constant inputs counted as learned parameters (weights, biases, per-channel affine operands)."""
        if self.op in PARAM_OPS:
            return self.weights
        if self.op in AFFINE_OPS:
            return [c for c in self.consts if c.size > 1 and (c.value is None or c.value.dtype.kind == "f")]
        return []

    @property
    def params(self) -> int:
        return sum(c.size for c in self.param_consts)

    @property
    def macs(self) -> int | None:
        """Multiply-accumulates of convolutions and matrix products (0 for other ops; None if shapes unknown)."""
        if self.op == "Conv":
            w = self.consts[0].shape if self.consts else None
            if not w or not self.out_shape:
                return None
            return int(np.prod(self.out_shape)) * int(np.prod(w[1:]))
        if self.op == "ConvTranspose":
            w = self.consts[0].shape if self.consts else None
            if not w or not self.in_shape:
                return None
            return int(np.prod(self.in_shape)) * int(np.prod(w[1:]))
        if self.op in ("MatMul", "Gemm"):
            if not self.out_shape or not self.in_shape:
                return None
            k = self.in_shape[-1] if not (self.op == "Gemm" and self.attrs.get("transA")) else self.in_shape[0]
            return int(np.prod(self.out_shape)) * int(k)
        return 0


@dataclass
class Graph:
    """Normalised graph: nodes (including pseudo input/output nodes), producers and consumers of tensors."""

    nodes: list[Node]
    label: str
    format: str
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.producer: dict[str, tuple[Node, int]] = {}
        self.consumers: dict[str, list[tuple[Node, int]]] = defaultdict(list)
        for n in self.nodes:
            for i, t in enumerate(n.outputs):
                self.producer[t] = (n, i)
            for i, t in enumerate(n.inputs):
                self.consumers[t].append((n, i))

    @property
    def ops(self) -> list[Node]:
        return [n for n in self.nodes if not n.pseudo]


def _digest(a: np.ndarray) -> str:
    """Content hash robust to FP16 weight compression: floats are hashed after rounding to float16."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        with np.errstate(over="ignore"):
            a = a.astype(np.float16)
    elif a.dtype.kind in "iub":
        a = a.astype(np.int64)
    h = hashlib.sha1(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def _small(value: np.ndarray | None) -> Any:
    """A small constant as a JSON-able list (floats rounded for display)."""
    if value is None:
        return None
    v = np.asarray(value)
    if v.dtype.kind == "f":
        return [float(f"{x:.6g}") for x in v.ravel()]
    if v.dtype.kind in "iub":
        return [int(x) for x in v.ravel()]
    return [str(x) for x in v.ravel()]


def _onnx_special(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return _small(onnx.numpy_helper.to_array(x))
    if isinstance(x, onnx.GraphProto):
        return f"<graph {x.name}>"
    return None


def _jsonable(x: Any) -> Any:
    return jsonable(x, _onnx_special)


# ---- ONNX → normalised graph -----------------------------------------------------------------------------
def _onnx_attr_defaults(op: str, domain: str, opset: int) -> dict[str, Any]:
    try:
        schema = onnx.defs.get_schema(op, opset, domain)
    except Exception:  # custom or unknown op: no defaults to fill
        return {}
    out = {}
    for name, a in schema.attributes.items():
        if a.default_value is not None and a.default_value.type != 0:
            out[name] = _jsonable(onnx.helper.get_attribute_value(a.default_value))
    return out


def _onnx_input_names(op: str, domain: str, opset: int, count: int) -> list[str]:
    try:
        formal = [i.name for i in onnx.defs.get_schema(op, opset, domain).inputs]
    except Exception:
        formal = []
    return [formal[i] if i < len(formal) else f"in{i}" for i in range(count)]


def _onnx_const_value(node: onnx.NodeProto) -> np.ndarray | None:
    for a in node.attribute:
        if a.name == "value":
            return onnx.numpy_helper.to_array(a.t)
        if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
            return np.array(onnx.helper.get_attribute_value(a))
    return None


def _shape_of(vi: onnx.ValueInfoProto) -> list[int] | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
    return None if any(d is None for d in dims) else dims


def _onnx_graph(handle: ModelHandle, label: str) -> Graph:
    model = handle.onnx
    notes: list[str] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    # constants: initializers, Constant nodes, and ops computing only from constants (evaluated)
    consts: dict[str, Const] = {}
    for init in model.graph.initializer:
        v = onnx.numpy_helper.to_array(init)
        consts[init.name] = Const("", tuple(v.shape), _digest(v), v, init.name)
    init_names = set(consts)
    const_nodes: list[onnx.NodeProto] = []
    known = set(consts)
    for n in model.graph.node:
        live = [t for t in n.input if t]
        if n.op_type == "Constant" or (live and all(t in known for t in live) and "Random" not in n.op_type):
            const_nodes.append(n)
            known.update(o for o in n.output if o)
    _fold_onnx_constants(model, const_nodes, consts)
    shapes = _onnx_shapes(handle, label, notes)
    tags = handle.tags()
    nodes: list[Node] = []
    for i, vi in enumerate(x for x in model.graph.input if x.name not in init_names):
        nodes.append(Node(f"<input {i}>", "<input>", "<input>", [], [vi.name], aliases={vi.name}))
    folded = {id(n) for n in const_nodes}
    for idx, n in enumerate(model.graph.node):
        if id(n) in folded:
            continue
        formal = _onnx_input_names(n.op_type, n.domain, opset, len(n.input))
        defaults = _onnx_attr_defaults(n.op_type, n.domain, opset)
        attrs = dict(defaults)
        attrs.update({a.name: _jsonable(onnx.helper.get_attribute_value(a)) for a in n.attribute})
        node_consts = [Const(formal[k], consts[t].shape or _tuple(shapes.get(t)), consts[t].digest,
                             consts[t].value, t) for k, t in enumerate(n.input) if t and t in consts]
        name = n.name or (n.output[0] if n.output else f"{n.op_type}_{idx}")
        node = Node(name, n.op_type, n.op_type, [t for t in n.input if t and t not in consts], list(n.output),
                    node_consts, attrs, aliases={name, *[o for o in n.output if o]}, tag=tags.get(n.name))
        node.defaults = defaults
        node.out_shape = shapes.get(n.output[0]) if n.output else None
        node.in_shape = shapes.get(node.inputs[0]) if node.inputs else None
        _canonical_onnx_attrs(node)
        nodes.append(node)
    for i, vi in enumerate(model.graph.output):
        nodes.append(Node(f"<output {i}>", "<output>", "<output>", [vi.name], [], aliases={vi.name}))
    return Graph(nodes, label, "onnx", notes)


def _tuple(s: list[int] | None) -> tuple[int, ...] | None:
    return tuple(s) if s is not None else None


def _fold_onnx_constants(model: onnx.ModelProto, const_nodes: list[onnx.NodeProto],
                         consts: dict[str, Const]) -> None:
    """Values of constant-only subgraphs (shape chains, ConstantOfShape, Cast of weights), so they hash by
    content. Evaluated with the ONNX reference runtime; a node it cannot run hashes by structure instead."""
    values: dict[str, np.ndarray] = {}
    todo = [n for n in const_nodes if n.op_type != "Constant"]
    if todo:
        try:
            from onnx.reference import ReferenceEvaluator

            produced = {o for n in const_nodes for o in n.output}
            needed = {t for n in const_nodes for t in n.input if t and t not in produced}
            sub = onnx.helper.make_graph(
                list(const_nodes), "constants", [],
                [onnx.helper.make_empty_tensor_value_info(o) for n in todo for o in n.output if o],
                initializer=[i for i in model.graph.initializer if i.name in needed])
            sub_model = onnx.helper.make_model(sub, opset_imports=list(model.opset_import))
            outs = [o for n in todo for o in n.output if o]
            values = dict(zip(outs, ReferenceEvaluator(sub_model).run(None, {})))
        except Exception:  # exotic op in a constant chain: fall back to structural hashes below
            values = {}
    for n in const_nodes:
        attrs = _jsonable([(a.name, onnx.helper.get_attribute_value(a)) for a in n.attribute])
        h = hashlib.sha1(f"{n.op_type}|{attrs}".encode())
        for t in n.input:
            if t:
                h.update(consts[t].digest.encode())
        for j, out in enumerate(n.output):
            v = _onnx_const_value(n) if n.op_type == "Constant" else values.get(out)
            if v is not None:
                v = np.asarray(v)
                consts[out] = Const("", tuple(v.shape), _digest(v), v, out)
            else:
                consts[out] = Const("", None, f"{h.hexdigest()[:16]}:{j}", None, out)


def _onnx_shapes(handle: ModelHandle, label: str, notes: list[str]) -> dict[str, list[int]]:
    """Static tensor shapes (for MACs), from the graph view's one shape-inference path."""
    from .graph import view

    v = view(handle)
    shapes: dict[str, list[int]] = {}
    for t in [*v.inputs, *(x for n in v.nodes for x in (*n.inputs, *n.outputs))]:
        if t and t not in shapes and (s := v.static_shape(t)) is not None:
            shapes[t] = [int(d) for d in s]
    if any(o and o not in shapes for n in v.nodes for o in n.outputs):
        notes.append(f"{label}: some tensor shapes are unknown; their MACs are left out")
    return shapes


def _canonical_onnx_attrs(node: Node) -> None:
    """Make implicit convolution/pooling attributes explicit so 'absent' and 'default' compare equal."""
    if node.op in CONV_OPS and node.consts and node.consts[0].shape:
        k = len(node.consts[0].shape) - 2
        node.attrs.setdefault("kernel_shape", list(node.consts[0].shape[2:]))
        node.attrs.setdefault("strides", [1] * k)
        node.attrs.setdefault("dilations", [1] * k)
        if node.attrs.get("auto_pad", "NOTSET") == "NOTSET":
            node.attrs.setdefault("pads", [0] * 2 * k)
    elif node.op in ("MaxPool", "AveragePool") and "kernel_shape" in node.attrs:
        k = len(node.attrs["kernel_shape"])
        node.attrs.setdefault("strides", [1] * k)
        if node.attrs.get("auto_pad", "NOTSET") == "NOTSET":
            node.attrs.setdefault("pads", [0] * 2 * k)
    for key, v in list(node.attrs.items()):
        if isinstance(v, bytes):
            node.attrs[key] = v.decode(errors="replace")


# ---- OpenVINO IR → normalised graph ----------------------------------------------------------------------
def _ir_graph(handle: ModelHandle, label: str, onnx_names: dict[str, str] | None = None,
              moc: bool = False) -> Graph:
    """IR (or ONNX converted by OpenVINO) → normalised graph. ``onnx_names``: tensor name → ONNX node name;
    ``moc``: apply OpenVINO's offline (convert_model) fusions first, so an ONNX model read at run time and an
    IR made by ``ovc``/``convert_model`` are in the same form (Pad folded into Conv, zero biases dropped)."""
    from openvino import passes

    model = handle.ov_model().clone()
    if moc:
        from openvino._offline_transformations import apply_moc_transformations

        apply_moc_transformations(model, cf=True)
    pm = passes.Manager()  # fold weight decompression, shape-of-static-shape chains, weight reshapes
    pm.register_pass(passes.ConstantFolding())
    pm.run_passes(model)
    tags = handle.tags()
    notes = [f"{label}: constant subgraphs (weight decompression, shape computations) folded into weights"
             + ("; OpenVINO offline fusions applied (as convert_model does)" if moc else "")]

    def tid(output) -> str:
        return f"{output.get_node().get_name()}:{output.get_index()}"

    consts: dict[str, Const] = {}
    nodes: list[Node] = []
    params = {p.get_name(): i for i, p in enumerate(model.get_parameters())}
    results = {r.get_name(): i for i, r in enumerate(model.get_results())}
    for op in model.get_ordered_ops():
        t = op.get_type_name()
        if t == "Constant":
            v = op.get_data()
            consts[tid(op.output(0))] = Const("", tuple(v.shape), _digest(v), v, tid(op.output(0)))
            continue
        out_ids = [tid(o) for o in op.outputs()]
        tensor_names = {nm for o in op.outputs() for nm in o.get_names()}
        if t == "Parameter":
            i = params[op.get_name()]
            nodes.append(Node(f"<input {i}>", "<input>", t, [], out_ids,
                              aliases={op.get_friendly_name(), *tensor_names}))
            continue
        if t == "Result":
            i = results[op.get_name()]
            nodes.append(Node(f"<output {i}>", "<output>", t, [tid(op.input_value(0))], [],
                              aliases=set(op.input_value(0).get_names())))
            continue
        ins, node_consts = [], []
        for k, inp in enumerate(op.inputs()):
            src = tid(inp.get_source_output())
            if src in consts:
                c = consts[src]
                node_consts.append(Const(f"in{k}", c.shape, c.digest, c.value, src))
            else:
                ins.append(src)
        name = op.get_friendly_name().removesuffix("/WithoutBiases")  # OpenVINO's bias-split artefact
        if onnx_names:  # ONNX side of an ONNX-vs-IR diff: report the ONNX node name
            name = next((onnx_names[nm] for nm in sorted(tensor_names) if nm in onnx_names), name)
        attrs = {k: _jsonable(v) for k, v in op.get_attributes().items()}
        node = Node(name, IR_TO_ONNX.get(t, t), t, ins, out_ids, node_consts, attrs,
                    aliases={name, op.get_friendly_name(), *tensor_names},
                    tag=tags.get(op.get_friendly_name()) or tags.get(name))
        node.out_shape = _static(op.get_output_partial_shape(0)) if op.get_output_size() else None
        node.in_shape = _static(op.get_input_partial_shape(0)) if op.get_input_size() else None
        _canonical_ir_attrs(node)
        nodes.append(node)
    nodes = _fuse_ir(nodes)
    return Graph(nodes, label, "ir", notes)


def _static(ps) -> list[int] | None:
    return [d.get_length() for d in ps] if ps.is_static else None


def _canonical_ir_attrs(node: Node) -> None:
    """Group convolutions: weights reshaped to the ONNX layout and an explicit ``group``."""
    if node.raw_op in ("GroupConvolution", "GroupConvolutionBackpropData") and node.consts:
        w = node.consts[0]
        if w.shape and len(w.shape) >= 4:
            g = w.shape[0]
            shape = (g * w.shape[1], *w.shape[2:])
            value = w.value.reshape(shape) if w.value is not None else None
            node.consts[0] = Const(w.port, shape, w.digest, value, w.ident)
            node.attrs["group"] = int(g)
    elif node.raw_op in ("Convolution", "ConvolutionBackpropData"):
        node.attrs["group"] = 1
    elif node.raw_op == "Clamp":
        node.attrs = {"min": node.attrs.get("min"), "max": node.attrs.get("max")}


def _fuse_ir(nodes: list[Node]) -> list[Node]:
    """Fold IR bias Adds into their convolution and Maximum/Minimum pairs into Clip (ONNX-like ops)."""
    consumers: dict[str, list[Node]] = defaultdict(list)
    for n in nodes:
        for t in n.inputs:
            consumers[t].append(n)
    gone: set[int] = set()
    for n in nodes:
        if id(n) in gone or len(n.outputs) != 1 or len(consumers[n.outputs[0]]) != 1:
            continue
        nxt = consumers[n.outputs[0]][0]
        if id(nxt) in gone or len(nxt.inputs) != 1 or len(nxt.consts) != 1:
            continue
        c = nxt.consts[0]
        if n.op in CONV_OPS and nxt.op == "Add" and n.consts and n.consts[0].shape and c.shape:
            cout = n.consts[0].shape[0] if n.op == "Conv" else n.consts[0].shape[1] * n.attrs.get("group", 1)
            if c.size == cout:
                n.consts.append(Const("bias", (cout,), c.digest, c.value, c.ident))
                _absorb(n, nxt)
                gone.add(id(nxt))
        elif {n.op, nxt.op} == {"Max", "Min"} and n.consts and len(n.consts) == 1 and c.size == 1 \
                and n.consts[0].size == 1 and n.consts[0].value is not None and c.value is not None:
            lo, hi = (n.consts[0], c) if n.op == "Max" else (c, n.consts[0])
            n.op, n.raw_op = "Clip", f"{n.raw_op}+{nxt.raw_op}"
            n.attrs = {"min": float(lo.value.ravel()[0]), "max": float(hi.value.ravel()[0])}
            n.consts = []
            _absorb(n, nxt)
            gone.add(id(nxt))
    return [n for n in nodes if id(n) not in gone]


def _absorb(n: Node, nxt: Node) -> None:
    """``n`` takes over ``nxt``'s outputs and name (the outer op carries the exported node name)."""
    n.outputs = nxt.outputs
    n.aliases |= nxt.aliases
    n.name = nxt.name
    n.tag = n.tag or nxt.tag
    n.out_shape = nxt.out_shape


def _onnx_tensor_to_node(handle: ModelHandle) -> dict[str, str]:
    out = {}
    for idx, n in enumerate(handle.onnx.graph.node):
        for o in n.output:
            if o:
                out[o] = n.name or n.output[0] or f"{n.op_type}_{idx}"
    return out


def build_graph(handle: ModelHandle, label: str, as_ir: bool = False) -> Graph:
    """Normalised graph of a model; ``as_ir`` converts an ONNX model through OpenVINO (for ONNX-vs-IR)."""
    if handle.format == "onnx" and not as_ir:
        return _onnx_graph(handle, label)
    names = _onnx_tensor_to_node(handle) if handle.format == "onnx" else None
    try:
        return _ir_graph(handle, label, names, moc=as_ir)
    except RewriteError:
        raise
    except Exception as e:
        raise RewriteError(f"{label}: OpenVINO cannot read it for the diff: {str(e).splitlines()[0][:200]}") from e


# ---- matching ------------------------------------------------------------------------------------------
class _Matcher:
    def __init__(self, a: Graph, b: Graph):
        self.a, self.b = a, b
        self.ab: dict[int, Node] = {}
        self.ba: dict[int, Node] = {}
        self.queue: list[tuple[Node, Node]] = []

    def pair(self, x: Node, y: Node) -> bool:
        if id(x) in self.ab or id(y) in self.ba or x.kind != y.kind:
            return False
        self.ab[id(x)], self.ba[id(y)] = y, x
        self.queue.append((x, y))
        return True

    def free_a(self, n: Node) -> bool:
        return id(n) not in self.ab

    def free_b(self, n: Node) -> bool:
        return id(n) not in self.ba

    def run(self) -> dict[int, Node]:
        self.anchor_io()
        self.anchor_unique(lambda n: (n.kind, tuple(c.digest for c in n.consts)) if n.consts else None)
        self.propagate()
        self.anchor_unique(self._name_keys, consistent=True)
        self.propagate()
        self.match_by_producers()
        return self.ab

    # anchors
    def anchor_io(self) -> None:
        for op in PSEUDO_OPS:
            xs = [n for n in self.a.nodes if n.op == op]
            ys = [n for n in self.b.nodes if n.op == op]
            if len(xs) == len(ys):
                for x, y in zip(xs, ys):
                    self.pair(x, y)
            else:  # different arity: match the ones whose tensor names agree
                for x in xs:
                    y = next((y for y in ys if self.free_b(y) and x.aliases & y.aliases), None)
                    if y is not None:
                        self.pair(x, y)

    @staticmethod
    def _name_keys(n: Node) -> list:
        return [(n.kind, a) for a in sorted(n.aliases)]

    def anchor_unique(self, key, consistent: bool = False) -> None:
        """Pair free nodes whose key is unique on both sides (key may return one key or a list)."""
        def index(nodes, free):
            idx: dict[Any, list[Node]] = defaultdict(list)
            for n in nodes:
                if n.pseudo or not free(n):
                    continue
                ks = key(n)
                for k in (ks if isinstance(ks, list) else [ks]):
                    if k is not None:
                        idx[k].append(n)
            return idx
        ia, ib = index(self.a.nodes, self.free_a), index(self.b.nodes, self.free_b)
        for k, xs in ia.items():
            ys = ib.get(k, [])
            if len(xs) == 1 and len(ys) == 1 and self.free_a(xs[0]) and self.free_b(ys[0]):
                if not consistent or self.consistent(xs[0], ys[0]):
                    self.pair(xs[0], ys[0])

    def consistent(self, x: Node, y: Node) -> bool:
        """No matched producer of x maps to something other than the producer on the same port of y."""
        for i, t in enumerate(x.inputs):
            px = self.a.producer.get(t)
            if px is None or self.free_a(px[0]):
                continue
            if i >= len(y.inputs):
                return False
            py = self.b.producer.get(y.inputs[i])
            if py is not None and self.ab[id(px[0])] is not py[0]:
                return False
        return True

    # propagation through producers and consumers
    def propagate(self) -> None:
        while self.queue:
            x, y = self.queue.pop()
            self._producers(x, y)
            self._consumers(x, y)

    def _producers(self, x: Node, y: Node) -> None:
        px = [self.a.producer.get(t, (None, 0))[0] for t in x.inputs]
        py = [self.b.producer.get(t, (None, 0))[0] for t in y.inputs]
        if len(px) == len(py):
            for u, v in zip(px, py):
                if u is not None and v is not None and self.free_a(u) and self.free_b(v) and u.kind == v.kind:
                    self.pair(u, v)
        if x.op in COMMUTATIVE or len(px) != len(py):  # fall back to unique kinds among the free producers
            self._pair_groups([u for u in px if u is not None and self.free_a(u)],
                              [v for v in py if v is not None and self.free_b(v)])

    def _consumers(self, x: Node, y: Node) -> None:
        for tx, ty in zip(x.outputs, y.outputs):
            cx = [n for n, _ in self.a.consumers.get(tx, []) if self.free_a(n)]
            cy = [n for n, _ in self.b.consumers.get(ty, []) if self.free_b(n)]
            self._pair_groups(cx, cy)

    def _pair_groups(self, xs: list[Node], ys: list[Node]) -> None:
        """Pair nodes of equal kind: unique kinds directly; equal-size groups by weights, then by name."""
        gx: dict[tuple, list[Node]] = defaultdict(list)
        gy: dict[tuple, list[Node]] = defaultdict(list)
        for n in dict.fromkeys(xs):
            gx[n.kind].append(n)
        for n in dict.fromkeys(ys):
            gy[n.kind].append(n)
        for k, group_x in gx.items():
            group_y = gy.get(k, [])
            if len(group_x) == 1 and len(group_y) == 1:
                self.pair(group_x[0], group_y[0])
                continue
            for keyf in (lambda n: tuple(c.digest for c in n.consts), lambda n: n.name,
                         lambda n: tuple(c.shape for c in n.consts)):
                fx, fy = defaultdict(list), defaultdict(list)
                for n in group_x:
                    if self.free_a(n):
                        fx[keyf(n)].append(n)
                for n in group_y:
                    if self.free_b(n):
                        fy[keyf(n)].append(n)
                for kk, u in fx.items():
                    if len(u) == 1 and len(fy.get(kk, [])) == 1:
                        self.pair(u[0], fy[kk][0])

    def match_by_producers(self) -> None:
        """Last resort in topological order: free nodes of equal kind fed by the same matched producers."""
        changed = True
        while changed:
            changed = False
            index: dict[tuple, list[Node]] = defaultdict(list)
            for y in self.b.ops:
                if self.free_b(y):
                    src = tuple(sorted(id(self.b.producer[t][0]) for t in y.inputs if t in self.b.producer))
                    index[(y.kind, src)].append(y)
            for x in self.a.ops:
                if not self.free_a(x):
                    continue
                prods = [self.a.producer[t][0] for t in x.inputs if t in self.a.producer]
                if not prods or any(self.free_a(p) for p in prods):
                    continue
                src = tuple(sorted(id(self.ab[id(p)]) for p in prods))
                ys = index.get((x.kind, src), [])
                free = [y for y in ys if self.free_b(y)]
                if len(free) == 1 and self.pair(x, free[0]):
                    changed = True
            self.propagate()


# ---- the diff ------------------------------------------------------------------------------------------
def _load(m: Any, which: str) -> ModelHandle:
    if isinstance(m, ModelHandle):
        return m
    try:
        return ModelHandle.load(m)
    except RewriteError:
        raise
    except Exception as e:
        raise RewriteError(f"{which} model {m!s:.200}: cannot load it: {e}") from e


def _settings(n: Node) -> dict[str, tuple[str, Any]]:
    """Attributes and small constant inputs in one namespace (``axes`` may be either, depending on the opset):
    {name: (digest-or-value for comparison, display value)}; empty constant inputs count as absent."""
    out: dict[str, tuple[str, Any]] = {k: (repr(v), v) for k, v in n.attrs.items()}
    weights = {id(c) for c in n.weights}
    for c in n.consts:
        if id(c) in weights or c.size == 0 and c.shape is not None:
            continue
        key = c.port if c.port not in out else f"input:{c.port}"
        out[key] = (repr(_small(c.value)) if c.value is not None else c.digest, _const_view(c))
    return out


def _attr_changes(x: Node, y: Node) -> dict[str, list]:
    """{name: [old, new]} of attributes / small constant inputs that differ. A setting one side lacks is
    not a change when the other side holds its schema default (a newer opset's added attribute)."""
    sx, sy = _settings(x), _settings(y)
    out: dict[str, list] = {}
    for k in sorted(set(sx) | set(sy)):
        a, b = sx.get(k), sy.get(k)
        if a is not None and b is not None:
            if a[0] != b[0]:
                out[k] = [a[1], b[1]]
        elif (a or b)[1] != (x.defaults if a else y.defaults).get(k, _NO_DEFAULT):
            out[k] = [a[1] if a else None, b[1] if b else None]
    return out


def _const_view(c: Const | None) -> Any:
    if c is None:
        return None
    if c.value is not None:
        return _small(c.value)
    return f"<computed constant{'' if c.shape is None else ' ' + 'x'.join(map(str, c.shape))}>"


def _weight_changes(x: Node, y: Node) -> list[dict]:
    out = []
    wx, wy = x.weights, y.weights
    for k in range(max(len(wx), len(wy))):
        cx = wx[k] if k < len(wx) else None
        cy = wy[k] if k < len(wy) else None
        if cx is not None and cy is not None and cx.digest == cy.digest:
            continue
        entry: dict[str, Any] = {"input": (cx or cy).port,
                                 "before_shape": list(cx.shape) if cx and cx.shape else None,
                                 "after_shape": list(cy.shape) if cy and cy.shape else None}
        if cx is not None and cy is not None and cx.value is not None and cy.value is not None \
                and cx.shape == cy.shape and cx.value.dtype.kind == "f":
            d = np.abs(cx.value.astype(np.float64) - cy.value.astype(np.float64))
            scale = float(np.abs(cx.value).max()) or 1.0
            if d.max() <= WEIGHT_RTOL * scale:  # float noise or FP16 compression, not a rewrite
                continue
            entry["max_abs_change"] = float(f"{d.max():.4g}")
            entry["max_rel_change"] = float(f"{d.max() / scale:.4g}")  # relative to the largest old weight
        out.append(entry)
    return out


def _node_entry(n: Node) -> dict[str, Any]:
    return {"name": n.name, "op": n.op, "ir_op": n.raw_op if n.raw_op != n.op else None,
            "description": n.describe(), "tag": n.tag,
            "weights": [list(c.shape) for c in n.weights if c.shape is not None],
            "params": n.params, "macs": n.macs}


def _regions(g: Graph, free: set[int]) -> list[list[Node]]:
    """Connected groups of unmatched nodes (through shared tensors), in graph order."""
    parent = {id(n): id(n) for n in g.nodes if id(n) in free}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n in g.nodes:
        if id(n) not in free:
            continue
        for t in n.inputs:
            p = g.producer.get(t)
            if p and id(p[0]) in free:
                parent[find(id(n))] = find(id(p[0]))
    groups: dict[int, list[Node]] = defaultdict(list)
    for n in g.nodes:
        if id(n) in free:
            groups[find(id(n))].append(n)
    return list(groups.values())


def _boundary(g: Graph, region: list[Node]) -> tuple[set[int], set[int]]:
    ids = {id(n) for n in region}
    prods, cons = set(), set()
    for n in region:
        for t in n.inputs:
            p = g.producer.get(t)
            if p and id(p[0]) not in ids:
                prods.add(id(p[0]))
        for t in n.outputs:
            for c, _ in g.consumers.get(t, []):
                if id(c) not in ids:
                    cons.add(id(c))
    return prods, cons


def _replacements(a: Graph, b: Graph, ab: dict[int, Node]) -> list[dict[str, Any]]:
    """Pair regions of removed nodes with the regions of added nodes that took their place."""
    free_a = {id(n) for n in a.ops if id(n) not in ab}
    matched_b = {id(v) for v in ab.values()}
    free_b = {id(n) for n in b.ops if id(n) not in matched_b}
    ra, rb = _regions(a, free_a), _regions(b, free_b)
    bounds_b = [_boundary(b, r) for r in rb]
    out, used = [], set()
    for r in ra:
        pa, ca = _boundary(a, r)
        pa_b = {id(ab[i]) for i in pa if i in ab}
        ca_b = {id(ab[i]) for i in ca if i in ab}
        hits = [j for j, (pb, cb) in enumerate(bounds_b) if j not in used and pa_b & pb and ca_b & cb]
        if hits:
            used.update(hits)
            out.append({"removed": [n.name for n in r], "added": [n.name for j in hits for n in rb[j]]})
    return out


def diff(a: Any, b: Any, *, fidelity: bool = False, targets: tuple[str, ...] | list[str] = (),
         images: str | None = None, pictures: str | os.PathLike | None = None) -> dict[str, Any]:
    """Structural diff of two models (paths, ``onnx.ModelProto``, ``openvino.Model`` or ``ModelHandle``).

    Returns a JSON-able dict: ``op_counts`` {op: [before, after]}, ``added`` / ``removed`` node entries,
    ``changed`` [{before, after, op, attributes: {attr: [old, new]}, weights: [...], tag}], ``renamed``,
    ``replaced`` (removed region → added region), ``weight_changes``, ``params`` and ``macs`` totals, ``tags``,
    and with ``fidelity`` / ``targets`` the output comparison and predicted per-target latency change
    (``pictures``: folder for the before/after depth and error PNGs of the worst input).
    """
    ha, hb = _load(a, "before"), _load(b, "after")
    la, lb = _label(a, ha), _label(b, hb)
    if la == lb and not isinstance(b, (str, os.PathLike)):  # an in-memory rewrite of the same file
        lb = f"{lb} (modified in memory)"
    as_ir = ha.format != hb.format
    ga, gb = build_graph(ha, la, as_ir), build_graph(hb, lb, as_ir)
    ab = _Matcher(ga, gb).run()
    matched_b = {id(v) for v in ab.values()}

    changed, renamed, weight_changes = [], [], []
    for x in ga.ops:
        y = ab.get(id(x))
        if y is None:
            continue
        if x.name != y.name:
            renamed.append({"before": x.name, "after": y.name, "op": x.op})
        attrs, weights = _attr_changes(x, y), _weight_changes(x, y)
        if attrs or weights:
            entry = {"before": x.name, "after": y.name, "op": x.op, "attributes": attrs, "tag": y.tag}
            if weights:
                entry["weights"] = weights
                weight_changes += [{"node": y.name, "op": x.op, **w} for w in weights
                                   if w["before_shape"] != w["after_shape"]]
            changed.append(entry)
    removed = [_node_entry(x) for x in ga.ops if id(x) not in ab]
    added = [_node_entry(y) for y in gb.ops if id(y) not in matched_b]
    replaced = _replacements(ga, gb, ab)

    ca, cb = _counts(ga), _counts(gb)
    tag_map: dict[str, list[str]] = defaultdict(list)
    for y in gb.ops:
        if y.tag:
            tag_map[y.tag].append(y.name)
    report: dict[str, Any] = {
        "kind": "diff",
        "before": {"model": la, "format": ha.format, "nodes": len(ga.ops)},
        "after": {"model": lb, "format": hb.format, "nodes": len(gb.ops)},
        "compared_as": "ir" if as_ir or ha.format == "ir" else "onnx",
        "op_counts": {op: [ca.get(op, 0), cb.get(op, 0)] for op in sorted(set(ca) | set(cb))},
        "matched": len(ab) - sum(1 for n in ga.nodes if n.pseudo and id(n) in ab),
        "added": added, "removed": removed, "changed": changed, "renamed": renamed, "replaced": replaced,
        "weight_changes": weight_changes,
        "params": {"before": _params(ga), "after": _params(gb), "unit": "parameters"},
        "macs": _macs(ga, gb),
        "tags": {"by_pass": {k: sorted(v) for k, v in sorted(tag_map.items())},
                 "changed_or_added": sum(1 for e in changed if e.get("tag")) + sum(1 for e in added if e["tag"])},
        "notes": list(dict.fromkeys(ga.notes + gb.notes)),
    }
    if as_ir:
        report["notes"].insert(0, "ONNX vs IR: the ONNX model was converted by OpenVINO's ONNX frontend and "
                                  "both compared as OpenVINO graphs (ONNX node names kept where they map)")
    if fidelity:
        report["fidelity"] = _fidelity(ha, hb, images, pictures, report["notes"])
    if targets:
        report["latency"] = _latency(ha, hb, tuple(targets), report["notes"])
    return _jsonable(report)


def _label(src: Any, h: ModelHandle) -> str:
    return str(src) if isinstance(src, (str, os.PathLike)) else h.name


def _counts(g: Graph) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for n in g.ops:
        out[n.op] += 1
    return dict(out)


def _params(g: Graph) -> int:
    seen: dict[str, int] = {}
    for n in g.ops:  # shared constants count once
        for c in n.param_consts:
            seen[c.ident or f"{id(n)}:{c.port}"] = c.size
    return int(sum(seen.values()))


def _macs(ga: Graph, gb: Graph) -> dict[str, Any]:
    def total(g: Graph) -> tuple[int, int]:
        vals = [n.macs for n in g.ops]
        return int(sum(v for v in vals if v)), sum(1 for v in vals if v is None)
    (ta, ua), (tb, ub) = total(ga), total(gb)
    out: dict[str, Any] = {"before": ta, "after": tb, "unit": "MAC",
                           "scope": "convolutions and matrix products, per inference"}
    if ua or ub:
        out["unknown_nodes"] = [ua, ub]  # dynamic shapes: those nodes are left out of the totals
    return out


def _fidelity(ha: ModelHandle, hb: ModelHandle, images: str | None, pictures: str | os.PathLike | None,
              notes: list[str]) -> dict[str, Any]:
    from .verify import verify_models

    kwargs: dict[str, Any] = {"images": images}
    if pictures is not None:
        kwargs["pictures"] = str(pictures)
    try:
        res = verify_models(ha, hb, **kwargs)
    except RewriteError:
        raise
    except Exception as e:  # the structural diff stays useful even when the models cannot be run
        notes.append(f"fidelity: comparison failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return {}
    return _jsonable(res if isinstance(res, dict) else getattr(res, "__dict__", {"result": str(res)}))


def _latency(ha: ModelHandle, hb: ModelHandle, targets: tuple[str, ...], notes: list[str]) -> dict[str, Any]:
    from .cost import compare

    out = {}
    for t in targets:
        try:
            out[t] = _jsonable(compare(ha, hb, t))
        except RewriteError:
            raise
        except (RuntimeError, ValueError) as e:  # one target failing must not hide the others (bugs still raise)
            notes.append(f"latency[{t}]: prediction failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return out


# ---- command line --------------------------------------------------------------------------------------
def add_diff_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rewrite diff BEFORE AFTER``."""
    parser.description = ("Structural diff of two models (ONNX or OpenVINO IR, any mix): op counts, nodes "
                          "added/removed/changed with attribute changes, weight shapes, parameters, MACs, "
                          "pass tags; optionally output fidelity and predicted latency change.")
    parser.add_argument("before", help="the model before: .onnx or OpenVINO .xml")
    parser.add_argument("after", help="the model after: .onnx or OpenVINO .xml")
    parser.add_argument("--report", metavar="FILE.json", help="write the diff as JSON")
    parser.add_argument("--md", metavar="FILE.md", help="write a Markdown report")
    parser.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report")
    parser.add_argument("--fidelity", action="store_true", help="also run both models and compare outputs")
    parser.add_argument("--target", action="append", choices=("kmb", "mtl", "cpu"),
                        help="predict per-layer latency change for this target (repeatable)")
    parser.add_argument("--images", metavar="DIR", help="images for --fidelity (default: scikit-image photos)")
    parser.add_argument("--pictures", metavar="DIR",
                        help="with --fidelity: keep the worst input's depth/error PNGs here (the HTML report "
                             "embeds them either way)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every op count and matched rename")


def run_diff(args: argparse.Namespace) -> int:
    """Run ``rewrite diff``: 0 on success, 2 on bad input (the message names the file)."""
    from .report import render_text, write_html, write_json, write_markdown

    try:
        for p in (args.report, args.md, args.html):
            if p and not Path(p).resolve().parent.is_dir():
                raise RewriteError(f"{p}: output folder {Path(p).parent} does not exist")
        with tempfile.TemporaryDirectory(prefix="rewrite-diff-") as tmp:
            # the HTML embeds the pictures, so without --pictures they only live until it is written
            pictures = getattr(args, "pictures", None) or (tmp if args.fidelity and args.html else None)
            rep = diff(args.before, args.after, fidelity=args.fidelity,
                       targets=tuple(dict.fromkeys(args.target or ())), images=args.images, pictures=pictures)
            if args.html:
                write_html(_with_subgraph(rep, args.before, args.after, tmp), args.html)
            if pictures == tmp:
                rep.get("fidelity", {}).pop("pictures", None)  # do not point the JSON/Markdown at deleted files
        if args.report:
            write_json(rep, args.report)
        if args.md:
            write_markdown(rep, args.md)
    except RewriteError as e:
        print(f"rewrite diff: error: {e}", file=sys.stderr)
        return e.exit_code
    if not args.quiet:
        print(render_text(rep, verbose=args.verbose))
    return 0


def _with_subgraph(rep: dict, before: str, after: str, folder: str) -> dict:
    """The report with ``diff_picture``: the changed subgraph drawn for the HTML (dot, else matplotlib)."""
    if not (rep.get("added") or rep.get("removed") or rep.get("changed")):
        return rep
    from .pictures import diff_graphs, draw_diff

    png = Path(folder) / "subgraph.png"
    try:
        tool = draw_diff(diff_graphs(before, after, rep), png)
    except (RewriteError, OSError, ImportError, ValueError) as e:  # the picture is optional; the tables stay
        return {**rep, "notes": [*rep.get("notes", []), f"changed subgraph not drawn: {e}"]}
    return {**rep, "diff_picture": str(png), "diff_picture_tool": tool}
