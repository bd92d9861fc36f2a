"""The ``Editor`` protocol: how passes change a graph without knowing its format.

A pass's ``emit`` receives an editor for the model being rewritten. The editor works in node ids of the
:class:`~rewriter.graph.view.GraphView` it was opened on and in a small vocabulary of format-free ops
(:class:`Builder`): the ONNX editor writes ``NodeProto``/initializers, the OpenVINO editor opset-13 nodes.
Every node an editor creates or modifies is recorded under the current site (``editor.site``), so the engine
can tag provenance (pass + site) and cost each site; a pass never tags.

Constants take the element type of the tensor they join (``like``): an f16 graph stays f16, and the
FP16-compressed IR form (f16 Constant → Convert) is kept when a weight is replaced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

Value = Any  # an opaque tensor handle of the editor's format (ONNX tensor name / openvino Output)


class Builder(Protocol):
    """Format-free ops for building a replacement subgraph. Every op takes the new node's ``name``."""

    def input(self, i: int) -> Value:
        """The replaced node's ``i``-th input."""

    def const(self, value: np.ndarray, name: str, like: Value | None = None) -> Value:
        """A constant; stored in ``like``'s element type when given (weights join activations)."""

    def pad(self, x: Value, begin: Sequence[int], end: Sequence[int], mode: str, name: str) -> Value:
        """Pad every axis (full-rank ``begin``/``end``); ``mode``: constant, edge, reflect."""

    def conv(self, x: Value, w: np.ndarray, name: str, *, strides: Sequence[int], dilations: Sequence[int],
             pads: Sequence[int], groups: int = 1, bias: np.ndarray | None = None,
             auto_pad: str = "NOTSET") -> Value:
        """Convolution with weights ``Cout x Cin/groups x k...``; ``pads`` = begins then ends."""

    def conv_transpose(self, x: Value, w: np.ndarray, name: str, *, strides: Sequence[int],
                       crops_begin: Sequence[int], crops_end: Sequence[int], groups: int) -> Value:
        """Transposed convolution with weights ``Cin x Cout/groups x k...`` (ONNX layout)."""

    def concat(self, xs: list[Value], axis: int, name: str) -> Value:
        """Concatenate along ``axis``."""

    def add_bias(self, x: Value, bias: np.ndarray, name: str) -> Value:
        """``x + bias`` broadcast over the channel axis (NCHW)."""


class Editor(Protocol):
    """Edits one model in place. See the module docstring."""

    site: str | None  # the site the next edits belong to (set by the engine)
    notes: list[str]  # facts worth reporting (e.g. an unnamed node got a name)

    def name_nodes(self) -> None:
        """Give every unnamed node its view id as its name."""

    def set_bias(self, node_id: str, value: np.ndarray) -> None:
        """Set a conv's bias (ONNX: its third input; IR: the constant of the Add after it)."""

    def set_attr(self, node_id: str, key: str, value: Any) -> None:
        """Set a canonical attribute (``coordinate_mode``, ...) of a node."""

    def replace(self, node_id: str, build: Callable[[Builder], Value]) -> list[str]:
        """Replace a node by the subgraph ``build`` makes; its result keeps the node's output tensor name
        (and, when it is the last node, the node's name). Returns the new node names."""

    def set_const(self, node_id: str, index: int, value: np.ndarray) -> None:
        """Feed input ``index`` of a node a new constant, in the element type of the constant it replaces
        (or of the node's data input when the input was absent, e.g. a new bias)."""

    def commute(self, resize_id: str, conv_id: str) -> list[str]:
        """Swap a resize and the 1x1 conv reading it: the conv (with its bias) reads the resize's input, the
        resize reads the conv's output, the conv's readers read the resize. Both keep their names; the pair's
        final output keeps its tensor name; the resize's output size follows the conv's channel count.
        Returns the names of the nodes changed (recorded as made and replaced under the current site)."""

    def remove_dead(self) -> None:
        """Drop nodes and constants nothing reads any more (what replaced nodes left behind)."""

    def made(self) -> dict[str, list[str]]:
        """{site: names of nodes created or modified for it}."""

    def replaced(self) -> dict[str, list[str]]:
        """{site: names of the original nodes each site removed or modified}."""

    def commit(self) -> None:
        """Finish the edits (type inference, topological order)."""


class Recorder:
    """Provenance bookkeeping shared by both editors: which nodes each site made and replaced."""

    def __init__(self) -> None:
        self.site: str | None = None
        self.notes: list[str] = []
        self._made: dict[str, list[str]] = {}
        self._replaced: dict[str, list[str]] = {}

    def _record(self, made: list[str], replaced: list[str]) -> None:
        key = self.site or ""
        for name in made:
            if name not in self._made.setdefault(key, []):
                self._made[key].append(name)
        for name in replaced:
            if name not in self._replaced.setdefault(key, []):
                self._replaced[key].append(name)

    def made(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._made.items()}

    def replaced(self) -> dict[str, list[str]]:
        return {k: list(v) for k, v in self._replaced.items()}
