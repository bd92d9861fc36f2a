"""The format-free graph view: nodes with stable ids and canonical kinds, tensors, constants, shapes.

A :class:`GraphView` is built once per model state by a backend (``onnx_backend`` / ``openvino_backend``)
and cached on the :class:`~rewriter.model.ModelHandle` until an editor changes the model. Everything a pass
needs to *decide* is here; everything it needs to *change* is in :mod:`rewriter.graph.editor`.

Naming. A node's ``id`` is its name (ONNX ``NodeProto.name``, IR friendly name); an unnamed ONNX node is
``"<op_type>:<first output>"``; a repeated name gets ``"#<k>"`` appended. A tensor id is the ONNX tensor
name, or for IR a graph input's name / ``"<friendly name>:<port>"`` (the form ``rewriter.runtime`` taps take).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

CACHED_CONST = 65536  # constants up to this many elements are kept by the view after the first read
# Canonical kinds. Convs are split by shape: full KxK, depthwise, grouped (ResNeXt), pointwise 1x1.
CONV_KINDS = ("conv", "depthwise", "grouped", "pointwise")
KINDS = (*CONV_KINDS, "deconv", "resize", "quantize", "dequantize", "fake_quantize", "matmul", "pad",
         "concat", "add", "mul", "constant", "input", "output", "convert", "shape", "other")


@dataclass
class Node:
    """One operation of the graph, format-free (``ref`` is the native node, for the backend's editor only)."""

    id: str
    name: str  # the name stored in the graph ("" for an unnamed ONNX node)
    op_type: str  # the format's own spelling: Conv / Convolution / GroupConvolution, Resize / Interpolate, ...
    kind: str  # canonical kind, one of KINDS
    inputs: list[str]  # tensor ids ("" for an omitted optional input)
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)  # canonical attributes (see the backends)
    version: str = ""  # "opset11": ONNX default-domain opset / OpenVINO op version
    ref: Any = field(default=None, repr=False, compare=False)


@dataclass
class ResizeInfo:
    """A resize/interpolate node's semantics, whatever the exporter (attrs["resize"] of a resize node)."""

    mode: str  # "linear" for every linear spelling, else the op's own (nearest, cubic, ...)
    coordinate_mode: str  # effective mode (legacy ops that have no attribute: "asymmetric")
    mode_fixed: bool  # the op cannot carry another coordinate mode (Upsample, Resize-10, Interpolate-1)
    scales: list[float] | None  # per axis, full rank; None when not known statically
    scale_source: str  # "scales" or "sizes"
    extra: dict[str, Any] = field(default_factory=dict)  # raw_mode, antialias, pads, axes, ...


class GraphView:
    """Read-only view of one model state. Built by a backend; see the module docstring."""

    def __init__(self, fmt: str, nodes: list[Node], inputs: list[str], outputs: list[str], opset: int,
                 const_of: Callable[[str], np.ndarray | None], shapes: Callable[[], dict],
                 dtypes: dict[str, np.dtype], tags: dict[str, str], name: str = "",
                 names: dict[str, tuple[str, ...]] | None = None):
        self.format = fmt  # for backends and the engine only: passes never branch on it
        self.nodes = nodes
        self.by_id = {n.id: n for n in nodes}
        self.inputs = inputs
        self.outputs = outputs
        self.opset = opset
        self.tags = tags  # {node id: pass name} of nodes earlier passes made
        self.name = name
        self.dtypes = dtypes
        self._const_of = const_of
        self._shapes_fn = shapes
        self._shapes: dict[str, list[int | None] | None] | None = None
        self._consts: dict[str, np.ndarray | None] = {}
        self._names = names or {}  # a backend whose tensors carry other names (IR) gives them
        self.producer: dict[str, Node] = {}
        self.consumers: dict[str, list[tuple[Node, int]]] = {}
        for n in nodes:
            for t in n.outputs:
                self.producer[t] = n
            for i, t in enumerate(n.inputs):
                if t:
                    self.consumers.setdefault(t, []).append((n, i))

    # ---- nodes ------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def node(self, node_id: str) -> Node:
        return self.by_id[node_id]

    def of_kind(self, *kinds: str) -> list[Node]:
        """Nodes of the given canonical kinds, in graph order."""
        return [n for n in self.nodes if n.kind in kinds]

    def users(self, tensor: str) -> list[tuple[Node, int]]:
        """(node, input index) of every node reading ``tensor``."""
        return self.consumers.get(tensor, [])

    # ---- tensors ----------------------------------------------------------------------------------------
    def const(self, tensor: str) -> np.ndarray | None:
        """Value of a tensor computable without inputs (initializer, Constant, folded shape chain); else None."""
        if not tensor:
            return None
        if tensor in self._consts:
            return self._consts[tensor]
        value = self._const_of(tensor)
        if value is None or value.size <= CACHED_CONST:  # weights are read on demand, not kept twice
            self._consts[tensor] = value
        return value

    def shape(self, tensor: str) -> list[int | None] | None:
        """Static shape (None for unknown dims; None when even the rank is unknown)."""
        if self._shapes is None:
            self._shapes = self._shapes_fn()
        return self._shapes.get(tensor)

    def static_shape(self, tensor: str) -> list[int] | None:
        s = self.shape(tensor)
        return s if s is not None and all(d is not None for d in s) else None

    def names_of(self, tensor: str) -> tuple[str, ...]:
        """The names the format gives a tensor: ONNX its id; IR the output port's tensor names (maybe none)."""
        return self._names.get(tensor, (tensor,)) if self.format == "ir" else (tensor,)

    def dtype(self, tensor: str) -> np.dtype | None:
        """Element type of a tensor (numpy), or None when unknown."""
        if tensor not in self.dtypes and self._shapes is None:
            self.shape(tensor)  # shape inference also gives element types
        return self.dtypes.get(tensor)

    # ---- convolutions -----------------------------------------------------------------------------------
    def weight(self, node: Node) -> np.ndarray | None:
        """Conv weights as ``Cout x Cin/groups x k...`` (IR group layout flattened), or None if not constant."""
        w = self.const(node.inputs[1]) if len(node.inputs) > 1 else None
        if w is not None and node.attrs.get("group_layout"):  # G x Cout/G x Cin/G x k → Cout x Cin/G x k
            w = w.reshape(w.shape[0] * w.shape[1], *w.shape[2:])
        return w

    def bias(self, node: Node) -> np.ndarray | None:
        """Conv bias (ONNX third input; IR constant of the single Add after the conv), or None."""
        b = node.attrs.get("bias")
        if b is None:
            return None
        return None if (v := self.const(b)) is None else v.reshape(-1)

    def weight_quantizer(self, node: Node) -> str | None:
        """Op type the weights come through when they are quantized (FakeQuantize, DequantizeLinear, ...)."""
        return node.attrs.get("weight_quantizer")


class Lazy:
    """A value computed on first use (resize semantics need shapes, which cost an inference)."""

    def __init__(self, fn: Callable[[], Any]):
        self.fn, self.value, self.done = fn, None, False

    def get(self) -> Any:
        if not self.done:
            self.value, self.done = self.fn(), True
        return self.value


def conv_kind(weight_shape: list[int] | None, groups: int) -> str:
    """conv / depthwise / grouped / pointwise from ``Cout x Cin/groups x k...`` and the group count."""
    if groups > 1:
        return "depthwise" if weight_shape is not None and weight_shape[1] == 1 else "grouped"
    if weight_shape is not None and all(k == 1 for k in weight_shape[2:]):
        return "pointwise"
    return "conv"


def full_rank_values(values: list, axes, rank: int | None, fill) -> list | None:
    """Expand per-``axes`` values (Resize-18 ``axes``) to one per axis; None if the rank is unknown."""
    if not axes:
        return list(values)
    if rank is None:
        return None
    out = [fill] * rank
    for a, v in zip(axes, values):
        out[a % rank] = v
    return out
