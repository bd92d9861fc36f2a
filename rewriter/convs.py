"""Convolution sites read from the graph view, and new weights written back through an editor.

A :class:`ConvInfo` describes a conv whatever the format: weights as an array (ONNX initializer or Constant
through Identity chains; IR Constant or FP16-compressed Constant → Convert; an IR GroupConvolution's
``G x Cout/G x ...`` flattened), the bias (ONNX third input; IR constant of the single ``Add`` after the
conv), geometry for :class:`rewriter.refit.ConvGeometry`, groups, runner taps and whether the weights sit
behind a quantizer. :func:`write_conv` keeps the storage type (an f16 model stays f16).

Conventions: weights ``Cout x Cin/groups x kh x kw``; pads (top, left, bottom, right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .graph import CONV_KINDS, GraphView, Node, editor, view
from .model import ModelHandle
from .refit import ConvGeometry


@dataclass
class ConvInfo:
    """One 2-D convolution as the graph view describes it (see the module docstring)."""

    name: str  # the view's node id
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
    bias_dynamic: bool = False  # a bias input that is not a constant
    can_take_bias: bool = True  # ONNX convs take a new bias input; IR convs need an Add after them
    ref: Node | None = None

    @property
    def kernel(self) -> tuple[int, int]:
        """(kh, kw), (0, 0) when the weights are unknown."""
        return tuple(self.weight.shape[2:]) if self.weight is not None else (0, 0)

    def geometry(self, in_hw: tuple[int, int] | None = None) -> ConvGeometry:
        """Stride/dilation/explicit pads; ``in_hw`` resolves SAME auto_pad."""
        a = self.attrs
        return ConvGeometry.from_attrs(self.kernel, a.get("strides"), a.get("dilations"), a.get("pads"),
                                       a.get("auto_pad", "NOTSET"), in_hw)


def conv_info(v: GraphView, node: Node) -> ConvInfo:
    """Describe one conv node of the view."""
    a = node.attrs
    pads = list(a.get("pads", [0, 0, 0, 0]))
    c = ConvInfo(node.id, node.op_type, node.inputs[0], node.outputs[0], a.get("biased_output", node.outputs[0]),
                 attrs={"strides": a["strides"], "dilations": a["dilations"], "pads": pads,
                        "auto_pad": a.get("auto_pad", "NOTSET"), "groups": a["groups"]},
                 groups=int(a["groups"]), quantizer=v.weight_quantizer(node), ref=node)
    if c.quantizer is None:
        c.weight = v.weight(node)
        c.weight_dtype = None if c.weight is None else (v.dtype(node.inputs[1]) or c.weight.dtype)
        if c.weight is not None and v.producer.get(node.inputs[1]) is not None \
                and v.producer[node.inputs[1]].kind == "convert":  # FP16-compressed: the storage type
            src = v.producer[node.inputs[1]].inputs[0]
            c.weight_dtype = v.dtype(src) or c.weight_dtype
    if "bias" in a:
        c.bias = v.bias(node)
        c.bias_dynamic = c.bias is None and "bias_add" not in a
    c.can_take_bias = bool(a.get("can_take_bias"))
    return c


def convs(model: ModelHandle | GraphView) -> list[ConvInfo]:
    """Every conv (full, depthwise, grouped, pointwise) of a model or view, in graph order."""
    v = model if isinstance(model, GraphView) else view(model)
    return [conv_info(v, n) for n in v.of_kind(*CONV_KINDS)]


def write_conv(model: ModelHandle, conv: ConvInfo, weight: np.ndarray, bias: np.ndarray | None = None,
               ed: Any = None) -> None:
    """Give ``conv`` new weights (``Cout x Cin/g x kh x kw``) and optionally a bias, in their storage type.

    An ONNX initializer only this conv uses is overwritten in place, otherwise the conv gets a fresh one;
    IR convs without a bias Add cannot take a bias. ``ed`` reuses an open editor.
    """
    e = ed or editor(model)
    w = weight
    if conv.ref is not None and conv.ref.attrs.get("group_layout"):
        w = weight.reshape(conv.groups, weight.shape[0] // conv.groups, *weight.shape[1:])
    e.set_const(conv.name, 1, w)
    if bias is not None:
        if not conv.can_take_bias:
            raise ValueError(f"{conv.name}: IR conv has no bias Add to write a bias into")
        e.set_bias(conv.name, bias)
    if ed is None:
        e.commit()
