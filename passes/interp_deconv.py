"""``interp_deconv``: bilinear upsampling by an integer factor → exact fixed-weight depthwise ConvTranspose.

An NPU runs interpolation on its SHAVE DSPs but convolutions on the DPU's MAC array. With asymmetric or
half-pixel coordinates (pytorch_half_pixel and half_pixel_symmetric equal half_pixel at integer scales) and
an integer scale, bilinear upsampling is a fixed triangle stencil applied with stride ``s``: a depthwise
transposed convolution (``group = C``). Resize clamps coordinates at the borders; replicating one edge sample
first (``Pad`` in edge mode) and cropping the transposed conv's extra border (its ``pads``) reproduces that
exactly. The math lives in :mod:`rewriter.interp` (``deconv_plan``); this file only builds the nodes:

* ONNX: ``Pad(mode=edge)`` → ``ConvTranspose(group=C, strides=s, pads=crop)``;
* OpenVINO IR: ``Pad(edge)`` → ``GroupConvolutionBackpropData(strides=s, pads_begin/end=crop)``.

The transposed conv keeps the replaced node's name and output tensor, so consumers, graph outputs and
quantization nodes around it (QDQ, FakeQuantize) are untouched. align_corners sites are skipped: their
weights vary with position (run ``asym_interp`` first).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from rewriter.interp import (
    DeconvPlan,
    InterpSite,
    compile_pattern,
    deconv_blocker,
    deconv_plan,
    find_sites,
    name_filter_reason,
    onnx_opset,
)
from rewriter.model import ModelHandle
from rewriter.passbase import WILL_CHANGE, Option, Pass, PassContext, PassResult, Site, register


@register
class InterpDeconv(Pass):
    name = "interp_deconv"
    description = ("Replace integer-scale bilinear upsampling (asymmetric/half_pixel) with an exactly "
                   "equivalent edge Pad + fixed-weight depthwise ConvTranspose the NPU runs on its DPU")
    formats = ("onnx", "ir")
    exact = True
    options = {
        "include": Option(None, str, "regex: only replace sites whose node name matches (re.search)"),
        "exclude": Option(None, str, "regex: leave sites whose node name matches (re.search)"),
    }

    def check_options(self) -> None:
        self._include = compile_pattern(self.name, "include", self.opts["include"])
        self._exclude = compile_pattern(self.name, "exclude", self.opts["exclude"])

    def _decide(self, site: InterpSite) -> tuple[str, DeconvPlan | None]:
        reason = deconv_blocker(site) or name_filter_reason(site.name, self._include, self._exclude)
        if reason is not None:
            return reason, None
        return WILL_CHANGE, deconv_plan(site.integer_scales(), site.coordinate_mode)

    def _site(self, site: InterpSite) -> tuple[Site, DeconvPlan | None]:
        decision, plan = self._decide(site)
        details = site.details()
        if plan is not None:
            details["plan"] = {"kernel": plan.kernel_shape, "strides": plan.strides,
                               "edge_pads": [plan.pads_begin, plan.pads_end],
                               "crop": [plan.crops_begin, plan.crops_end]}
        return Site(site.name, site.op, decision, details), plan

    def match(self, model: ModelHandle, ctx: PassContext) -> list[Site]:
        return [self._site(s)[0] for s in find_sites(model)]

    def apply(self, model: ModelHandle, ctx: PassContext) -> PassResult:
        sites, new_nodes, notes = [], [], []
        todo = []
        for site in find_sites(model):
            s, plan = self._site(site)
            sites.append(s)
            if plan is not None:
                todo.append((site, plan))
        for site, plan in todo:
            if model.format == "onnx":
                made = _replace_onnx(model.onnx, site, plan)
                if site.ref.name != site.name:
                    notes.append(f"unnamed {site.op} producing '{site.ref.output[0]}' replaced by '{made[-1]}'")
            else:
                made = _replace_ir(model.ov, site, plan)
            new_nodes += made
        if model.format == "ir" and todo:
            model.ov.validate_nodes_and_infer_types()
        model.tag(new_nodes, self.name)
        extra: dict[str, Any] = {}
        if todo:
            ops = "ConvTranspose" if model.format == "onnx" else "GroupConvolutionBackpropData"
            notes.append(f"{len(todo)} bilinear upsample(s) → edge Pad + depthwise {ops} (exact)")
            extra["replaced"] = {s.name: {"scale": p.strides, "kernel": p.kernel_shape} for s, p in todo}
        return PassResult(sites, new_nodes, notes, extra)


# ---- ONNX ------------------------------------------------------------------------------------------------
def _replace_onnx(model: onnx.ModelProto, site: InterpSite, plan: DeconvPlan) -> list[str]:
    """Swap the Resize/Upsample node for Pad + ConvTranspose in place; returns the new node names."""
    g = model.graph
    node = site.ref
    name = node.name or f"ConvTranspose:{node.output[0]}"
    idx = list(g.node).index(node)
    dtype = site.dtype or np.dtype(np.float32)
    nsp = len(plan.strides)
    new_nodes, made = [], []
    data = node.input[0]
    if plan.needs_pad:
        pads = [0, 0, *plan.pads_begin, 0, 0, *plan.pads_end]
        pad_name, pad_out = f"{name}/edge_pad", f"{name}/edge_pad_output"
        if onnx_opset(model) >= 11:
            g.initializer.append(numpy_helper.from_array(np.array(pads, np.int64), f"{name}/edge_pad_pads"))
            new_nodes.append(helper.make_node("Pad", [data, f"{name}/edge_pad_pads"], [pad_out], name=pad_name,
                                              mode="edge"))
        else:  # Pad-2: pads is an attribute
            new_nodes.append(helper.make_node("Pad", [data], [pad_out], name=pad_name, mode="edge", pads=pads))
        made.append(pad_name)
        data = pad_out
    w_name = f"{name}/deconv_weight"
    g.initializer.append(numpy_helper.from_array(plan.weights(site.channels, dtype), w_name))
    new_nodes.append(helper.make_node("ConvTranspose", [data, w_name], [node.output[0]], name=name,
                                      group=site.channels, kernel_shape=plan.kernel_shape, strides=plan.strides,
                                      pads=[*plan.crops_begin, *plan.crops_end], dilations=[1] * nsp))
    made.append(name)
    dead_inputs = [i for i in node.input[1:] if i]
    del g.node[idx]
    for k, n in enumerate(new_nodes):
        g.node.insert(idx + k, n)
    _remove_dead(model, dead_inputs)
    return made


def _remove_dead(model: onnx.ModelProto, tensors: list[str]) -> None:
    """Drop the nodes/initializers that only fed the removed node (scales/roi constants, sizes chains)."""
    g = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
        return  # subgraphs may read outer tensors implicitly: leave dead code alone rather than guess
    candidates = set(tensors)
    while candidates:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if n.output and any(o in candidates for o in n.output)
                and not any(o in used for o in n.output)]
        dead_inits = [i for i in g.initializer if i.name in candidates and i.name not in used]
        nxt = {i for n in dead for i in n.input if i}
        for n in dead:
            g.node.remove(n)
        for i in dead_inits:
            g.initializer.remove(i)
        names = {i.name for i in dead_inits}
        for vi in [v for v in g.value_info if v.name in candidates and v.name not in used]:
            g.value_info.remove(vi)
        for gi in [v for v in g.input if v.name in names]:  # old-style models list initializers as inputs
            g.input.remove(gi)
        candidates = nxt


# ---- OpenVINO IR -------------------------------------------------------------------------------------------
def _replace_ir(model, site: InterpSite, plan: DeconvPlan) -> list[str]:
    """Swap the Interpolate for Pad(edge) + GroupConvolutionBackpropData; returns the new node names."""
    import openvino.opset13 as ops

    op = site.ref
    name = op.get_friendly_name()
    data = op.input_value(0)
    dtype = site.dtype or np.dtype(np.float32)
    nsp = len(plan.strides)
    made = []
    if plan.needs_pad:
        pb = ops.constant(np.array([0, 0, *plan.pads_begin], np.int64))
        pe = ops.constant(np.array([0, 0, *plan.pads_end], np.int64))
        pad = ops.pad(data, pb, pe, "edge", name=f"{name}/edge_pad")
        data = pad.output(0)
        made.append(f"{name}/edge_pad")
    w = plan.weights(site.channels, dtype)[:, None]  # G x Cout/G x Cin/G x k...
    deconv = ops.group_convolution_backprop_data(data, ops.constant(w), plan.strides,
                                                 pads_begin=plan.crops_begin, pads_end=plan.crops_end,
                                                 dilations=[1] * nsp, auto_pad="explicit",
                                                 output_padding=[0] * nsp)
    old_out = op.output(0)
    names = set(old_out.get_names())
    for target in list(old_out.get_target_inputs()):
        target.replace_source_output(deconv.output(0))
    old_out.set_names(set())
    op.set_friendly_name(f"{name}/replaced")  # free the name: the transposed conv takes it
    deconv.set_friendly_name(name)
    deconv.output(0).set_names(names)
    made.append(name)
    return made
