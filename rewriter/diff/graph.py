"""The diff's normalised graph: a thin layer over the :class:`~rewriter.graph.GraphView` of each model.

Constants (initializers, Constant nodes, IR Constant/Convert and anything computed only from constants) are
*weights* attached to the ops that read them, not ops; they hash by value (the view's numpy constants) or,
when the view cannot compute a value, by structure. Op types are shown in ONNX vocabulary (Convolution →
Conv, Interpolate → Resize, ...). What is specific to the diff stays here:

- ONNX schema defaults fill absent attributes and name constant inputs (``scales``), so "absent" and
  "default" compare equal;
- ONNX vs IR is compared as two OpenVINO graphs: ``build_graph(..., as_ir=True)`` converts through
  OpenVINO's ONNX frontend with its offline fusions (as ``convert_model`` does) and constant folding, and maps
  node names back to the ONNX ids through tensor names;
- IR bias ``Add`` after a convolution and ``Maximum``/``Minimum`` clamps fold back into ``Conv`` and
  ``Clip``; IR grouped weights are shown in the ONNX layout with an explicit ``group``.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ..errors import RewriteError
from ..graph import CONV_KINDS, GraphView
from ..graph import view as graph_view
from ..model import ModelHandle
from .values import digest, report_value

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
SMALL_CONST = 16  # constant inputs up to this many elements are compared by value, as pseudo-attributes
PSEUDO_OPS = ("<input>", "<output>")
# keys the graph view derives for convolutions: summaries, not attributes of the op itself
CONV_DERIVED = frozenset({"groups", "weight_shape", "bias", "weight_quantizer", "group_layout", "bias_add",
                          "biased_output"})


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


@functools.cache
def _onnx_schema(op: str, opset: int) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """(formal input names, attribute defaults) of a default-domain ONNX op; empty for ops it does not know."""
    try:
        schema = onnx.defs.get_schema(op, opset, "")
    except onnx.defs.SchemaError:  # custom or unknown op: no names or defaults to fill
        return (), ()
    defaults = tuple((name, report_value(onnx.helper.get_attribute_value(a.default_value)))
                     for name, a in schema.attributes.items()
                     if a.default_value is not None and a.default_value.type != 0)
    return tuple(i.name for i in schema.inputs), defaults


# ---- view → normalised graph ----------------------------------------------------------------------------
def _constants(v: GraphView) -> tuple[dict[str, Const], set[str]]:
    """Every constant tensor ({tensor: Const}) and the ids of the nodes computing only constants."""
    inputs = set(v.inputs)
    consts: dict[str, Const] = {}
    for n in v.nodes:  # ONNX initializers: read, never produced, not graph inputs
        for t in n.inputs:
            if t and t not in v.producer and t not in inputs and t not in consts:
                consts[t] = _const(v, t, lambda t=t: t)
    const_nodes: set[str] = set()
    for n in v.nodes:
        live = [t for t in n.inputs if t]
        if n.kind != "constant" and not (live and all(t in consts for t in live) and "Random" not in n.op_type):
            continue
        const_nodes.add(n.id)
        for j, out in enumerate(n.outputs):
            if out:
                consts[out] = _const(v, out, lambda n=n, j=j, live=live: _structural(n, [consts[t] for t in live], j))
    return consts, const_nodes


def _const(v: GraphView, tensor: str, structural: Callable[[], str]) -> Const:
    """The view's value of a constant tensor, else its static shape and a structural hash."""
    value = v.const(tensor)
    if value is None:
        shape = v.static_shape(tensor)
        return Const("", tuple(shape) if shape is not None else None, structural(), None, tensor)
    value = np.asarray(value)
    return Const("", tuple(value.shape), digest(value), value, tensor)


def _structural(n, inputs: list[Const], port: int) -> str:
    """A hash of how a constant is computed (op, attributes, inputs' hashes), for values the view cannot fold."""
    h = hashlib.sha1(f"{n.op_type}|{report_value(sorted(_own_attrs(n).items()))}".encode())
    for c in inputs:
        h.update(c.digest.encode())
    return f"{h.hexdigest()[:16]}:{port}"


def _own_attrs(n) -> dict[str, Any]:
    """The op's own attributes: what the view derives for convolutions (and its ``pads`` summary of IR pads)
    and resizes left out."""
    if n.kind in CONV_KINDS:
        derived = CONV_DERIVED | ({"pads"} if "pads_begin" in n.attrs else set())
    else:
        derived = {"resize"} if n.kind == "resize" else set()
    return {k: a for k, a in n.attrs.items() if k not in derived}


def _from_view(v: GraphView, label: str, tags: dict[str, str], notes: list[str],
               onnx_names: dict[str, str] | None = None) -> Graph:
    """The normalised graph of a view. ``onnx_names``: tensor name → ONNX node id (ONNX converted to IR)."""
    consts, const_nodes = _constants(v)
    onnx_vocabulary = v.format == "onnx"
    nodes = [Node(f"<input {i}>", "<input>", "<input>", [], [t], aliases=_aliases(v, t))
             for i, t in enumerate(v.inputs)]
    for n in v.nodes:
        if n.kind in ("input", "output") or n.id in const_nodes:
            continue
        formal, defaults = _onnx_schema(n.op_type, v.opset) if onnx_vocabulary else ((), ())
        port = [formal[k] if k < len(formal) else f"in{k}" for k in range(len(n.inputs))]
        node_consts = [Const(port[k], consts[t].shape, consts[t].digest, consts[t].value, t)
                       for k, t in enumerate(n.inputs) if t in consts]
        names = [x for o in n.outputs if o for x in v.names_of(o)]
        name = n.id.removesuffix("/WithoutBiases")  # OpenVINO's bias-split artefact
        if onnx_names:  # ONNX side of an ONNX-vs-IR diff: report the ONNX node id
            name = next((onnx_names[x] for x in sorted(names) if x in onnx_names), name)
        attrs = dict(defaults)
        attrs.update({k: report_value(a) for k, a in _own_attrs(n).items()})
        ins = [t for t in n.inputs if t and t not in consts]
        node = Node(name, IR_TO_ONNX.get(n.op_type, n.op_type) if not onnx_vocabulary else n.op_type, n.op_type,
                    ins, list(n.outputs), node_consts, attrs, aliases={name, n.name, *names} - {""},
                    tag=tags.get(n.name) or tags.get(name), defaults=dict(defaults))
        node.out_shape = v.static_shape(n.outputs[0]) if n.outputs else None
        node.in_shape = v.static_shape(ins[0]) if ins else None
        _canonical_attrs(node)
        nodes.append(node)
    nodes += [Node(f"<output {i}>", "<output>", "<output>", [t], [], aliases=set(v.names_of(t)))
              for i, t in enumerate(v.outputs)]
    if any(n.outputs and n.out_shape is None for n in nodes if not n.pseudo):
        notes.append(f"{label}: some tensor shapes are unknown; their MACs are left out")
    return Graph(nodes if onnx_vocabulary else _fuse_ir(nodes), label, v.format, notes)


def _aliases(v: GraphView, tensor: str) -> set[str]:
    p = v.producer.get(tensor)
    return {tensor, *v.names_of(tensor), *([p.name] if p is not None and p.name else [])}


def _canonical_attrs(node: Node) -> None:
    """ONNX convolutions/pooling: implicit attributes made explicit ('absent' and 'default' compare equal).
    IR: grouped weights reshaped to the ONNX layout with an explicit ``group``; Clamp keeps min/max only."""
    if node.raw_op in CONV_OPS and node.consts and node.consts[0].shape:
        k = len(node.consts[0].shape) - 2
        node.attrs.setdefault("kernel_shape", list(node.consts[0].shape[2:]))
        node.attrs.setdefault("strides", [1] * k)
        node.attrs.setdefault("dilations", [1] * k)
        if node.attrs.get("auto_pad", "NOTSET") != "NOTSET":
            node.attrs.pop("pads", None)  # the view's zero pads stand for "none given"
        else:
            node.attrs.setdefault("pads", [0] * 2 * k)
    elif node.raw_op in ("MaxPool", "AveragePool") and "kernel_shape" in node.attrs:
        k = len(node.attrs["kernel_shape"])
        node.attrs.setdefault("strides", [1] * k)
        if node.attrs.get("auto_pad", "NOTSET") == "NOTSET":
            node.attrs.setdefault("pads", [0] * 2 * k)
    elif node.raw_op in ("GroupConvolution", "GroupConvolutionBackpropData") and node.consts:
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


def _openvino_form(handle: ModelHandle, label: str, moc: bool) -> ModelHandle:
    """The model as OpenVINO holds it, constant subgraphs folded; ``moc``: with the offline (convert_model)
    fusions first, so an ONNX model read at run time and an IR made by ``ovc`` are in the same form."""
    from openvino import passes

    try:
        model = handle.ov_model().clone()
        if moc:
            from openvino._offline_transformations import apply_moc_transformations

            apply_moc_transformations(model, cf=True)
        pm = passes.Manager()  # fold weight decompression, shape-of-static-shape chains, weight reshapes
        pm.register_pass(passes.ConstantFolding())
        pm.run_passes(model)
    except RuntimeError as e:  # OpenVINO's errors about the model the user gave
        raise RewriteError(f"{label}: OpenVINO cannot read it for the diff: {str(e).splitlines()[0][:200]}") from e
    return ModelHandle(model, handle.source)


def build_graph(handle: ModelHandle, label: str, as_ir: bool = False) -> Graph:
    """Normalised graph of a model; ``as_ir`` converts an ONNX model through OpenVINO (for ONNX-vs-IR)."""
    if handle.format == "onnx" and not as_ir:
        return _from_view(graph_view(handle), label, handle.tags(), [])
    names = {o: n.id for n in graph_view(handle).nodes for o in n.outputs if o} if handle.format == "onnx" else None
    notes = [f"{label}: constant subgraphs (weight decompression, shape computations) folded into weights"
             + ("; OpenVINO offline fusions applied (as convert_model does)" if as_ir else "")]
    return _from_view(graph_view(_openvino_form(handle, label, as_ir)), label, handle.tags(), notes, names)
