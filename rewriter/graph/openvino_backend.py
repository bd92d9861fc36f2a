"""OpenVINO backend: build a :class:`GraphView` from an ``openvino.Model`` and edit it in place (opset 13).

Shapes are OpenVINO's own (partial shapes after type inference); when inputs are dynamic and an
``input_shape`` pins them, a reshaped clone supplies the static shapes. Constants are Constant nodes, the
FP16-compressed form (f16 Constant → Convert), and chains OpenVINO can fold (``ShapeOf`` → ... →
``StridedSlice`` sizes of an Interpolate-4) through the op's own constant folding.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .editor import Recorder
from .view import GraphView, Lazy, Node, ResizeInfo, conv_kind, full_rank_values

_KIND = {"ConvolutionBackpropData": "deconv", "GroupConvolutionBackpropData": "deconv", "Interpolate": "resize",
         "FakeQuantize": "fake_quantize", "MatMul": "matmul", "Pad": "pad", "Concat": "concat", "Add": "add",
         "Multiply": "mul", "Constant": "constant", "Parameter": "input", "Result": "output",
         "Convert": "convert", "ShapeOf": "shape"}
_LINEAR = {"linear": "linear", "linear_onnx": "linear", "bilinear": "linear"}
_INT_TYPES = ("i8", "u8", "i4", "u4", "nf4")
_WEIGHT_CHAIN = ("Convert", "Subtract", "Multiply", "Reshape", "Transpose", "Unsqueeze")


def tensor_id(output) -> str:
    """Tensor id of an output: a Parameter's tensor name, else ``"friendly_name:port"`` (a Runner tap)."""
    node = output.get_node()
    if node.get_type_name() == "Parameter":
        return output.get_any_name()
    return f"{node.get_friendly_name()}:{output.get_index()}"


def build_view(handle, input_shape: dict[str, list[int]] | None = None) -> GraphView:
    """The :class:`GraphView` of ``handle.ov``."""
    m = handle.ov
    ops = list(m.get_ordered_ops())
    ids, seen = {}, {}
    for op in ops:
        base = op.get_friendly_name()
        k = seen.get(base, 0)
        seen[base] = k + 1
        ids[op.get_instance_id()] = base if k == 0 else f"{base}#{k}"
    outputs: dict[str, Any] = {}
    dtypes: dict[str, np.dtype] = {}
    nodes = []
    for op in ops:
        t = op.get_type_name()
        outs = []
        for o in op.outputs():
            tid = tensor_id(o)
            outputs[tid] = o
            outs.append(tid)
            et = o.get_element_type()
            if et.is_static():
                try:
                    dtypes[tid] = np.dtype(et.to_dtype())
                except (RuntimeError, TypeError):  # u4/nf4 and friends have no numpy type
                    pass
        ins = [tensor_id(op.input_value(i)) for i in range(op.get_input_size())]
        attrs = dict(op.get_attributes())
        node = Node(ids[op.get_instance_id()], op.get_friendly_name(), t, _KIND.get(t, "other"), ins, outs, attrs,
                    op.get_type_info().version_id, op)
        if t in ("Convolution", "GroupConvolution"):
            _conv_attrs(node, op)
        nodes.append(node)
    shapes_cache: dict[str, Any] = {}

    def shapes() -> dict:
        if not shapes_cache:
            shapes_cache.update(_shapes(m, outputs, input_shape))
        return shapes_cache

    view = GraphView("ir", nodes, [tensor_id(p.output(0)) for p in m.get_parameters()],
                     [tensor_id(r.input_value(0)) for r in m.get_results()], 13,
                     lambda tid: _const(outputs.get(tid)), shapes, dtypes, handle.tags(), handle.name,
                     names={tid: tuple(sorted(o.get_names())) for tid, o in outputs.items()})
    for node in view.of_kind("resize"):
        node.attrs["resize"] = Lazy(lambda node=node: _resize_info(view, node))
    return view


def _ps(ps) -> list[int | None] | None:
    if ps.rank.is_dynamic:
        return None
    return [d.get_length() if d.is_static else None for d in ps]


def _shapes(m, outputs: dict, input_shape: dict | None) -> dict:
    out = {tid: _ps(o.get_partial_shape()) for tid, o in outputs.items()}
    dynamic = any(p.get_partial_shape().is_dynamic for p in m.inputs)
    if dynamic and input_shape:
        c = m.clone()
        try:
            c.reshape({p.get_any_name(): list(input_shape[p.get_any_name()]) for p in c.inputs
                       if p.get_any_name() in input_shape})
        except RuntimeError:  # a pin the model cannot take: shapes stay dynamic
            return out
        for op in c.get_ops():
            for o in op.outputs():
                out[tensor_id(o)] = _ps(o.get_partial_shape())
    return out


# ---- constants ---------------------------------------------------------------------------------------------
def node_const(node) -> np.ndarray | None:
    """Value of a Constant, or of an FP16-compressed Constant → Convert; None otherwise."""
    t = node.get_type_name()
    if t == "Constant":
        return node.get_data().copy()
    if t == "Convert":
        src = node.input_value(0).get_node()
        if src.get_type_name() == "Constant":
            return src.get_data().astype(node.get_output_element_type(0).to_dtype())
    return None


def _const(output) -> np.ndarray | None:
    if output is None:
        return None
    node = output.get_node()
    v = node_const(node)
    if v is not None or node.get_type_name() in ("Constant", "Parameter", "Result") or node.get_output_size() != 1:
        return v
    return _fold(node)


def _fold(node, budget: int = 32) -> np.ndarray | None:
    """Evaluate a small constant subgraph (shape chains) with OpenVINO's own constant folding."""
    import openvino as ov

    stack, seen = [node], set()
    while stack:  # only subgraphs whose leaves are Constants or ShapeOf of static tensors
        n = stack.pop()
        if n.get_instance_id() in seen:
            continue
        seen.add(n.get_instance_id())
        if len(seen) > budget or n.get_type_name() == "Parameter":
            return None
        if n.get_type_name() == "ShapeOf" and n.get_input_partial_shape(0).is_static:
            continue
        stack.extend(n.input_value(i).get_node() for i in range(n.get_input_size()))
    try:
        res = node.output(0)
        if node.get_output_partial_shape(0).is_dynamic:
            return None
        tensor = ov.Tensor(node.get_output_element_type(0), node.get_output_shape(0))
        inputs = []
        for i in range(node.get_input_size()):
            v = _const(node.input_value(i))
            if v is None and node.input_value(i).get_node().get_type_name() == "ShapeOf":
                v = np.array(list(node.input_value(i).get_node().get_input_shape(0)), np.int64)
            if v is None:
                return None
            inputs.append(ov.Tensor(np.ascontiguousarray(v)))
        if not node.evaluate([tensor], inputs):
            return None
        del res
        return tensor.data.copy()
    except (RuntimeError, TypeError):  # ops without a reference evaluate() stay unknown
        return None


# ---- convolutions ------------------------------------------------------------------------------------------
def _quantized_weights(node, depth: int = 4) -> str | None:
    t = node.get_type_name()
    if t == "FakeQuantize":
        return t
    if t == "Convert":
        src = node.input_value(0).get_node()
        if src.get_type_name() == "Constant" and src.get_output_element_type(0).is_integral():
            return "Convert"
    if depth and t in ("Multiply", "Subtract", "Reshape", "Transpose"):
        for i in range(node.get_input_size()):
            if (q := _quantized_weights(node.input_value(i).get_node(), depth - 1)) is not None:
                return q
    return None


def _conv_attrs(node: Node, op) -> None:
    a = node.attrs
    nsp = len(a["strides"])
    a.update(strides=list(a["strides"]), dilations=list(a["dilations"]),
             pads=[*a["pads_begin"], *a["pads_end"]], auto_pad=a.get("auto_pad", "explicit").upper(), groups=1)
    src = op.input_value(1).get_node()
    a["weight_quantizer"] = _quantized_weights(src)
    ps = op.get_input_partial_shape(1)
    dims = [d.get_length() for d in ps] if ps.is_static else None
    if op.get_type_name() == "GroupConvolution" and dims is not None:
        a["group_layout"] = True
        a["groups"] = dims[0]
        dims = [dims[0] * dims[1], *dims[2:]]
    if a["weight_quantizer"] is None and dims is not None and src.get_type_name() in ("Constant", "Convert"):
        a["weight_shape"] = dims
    users = list(op.output(0).get_target_inputs())
    if len(users) == 1 and users[0].get_node().get_type_name() == "Add" and dims is not None:
        add = users[0].get_node()
        other = add.input_value(1 - users[0].get_index())
        shape = other.get_partial_shape()
        if shape.is_static and int(np.prod([d.get_length() for d in shape])) == dims[0] \
                and other.get_node().get_type_name() in ("Constant", "Convert"):
            a["bias"], a["bias_add"] = tensor_id(other), add.get_friendly_name()
            a["biased_output"] = tensor_id(add.output(0))
    a["can_take_bias"] = "bias_add" in a  # a bias lives in the Add after the conv: none, no bias
    node.kind = conv_kind(dims, a["groups"]) if nsp else "other"


# ---- resize semantics ---------------------------------------------------------------------------------------
def _resize_info(view: GraphView, node: Node) -> ResizeInfo:
    op, a = node.ref, node.attrs
    version = node.version
    in_shape, out_shape = view.shape(node.inputs[0]), view.shape(node.outputs[0])
    rank = len(in_shape) if in_shape is not None else None
    raw_mode = a.get("mode", "nearest")

    def const(i: int) -> np.ndarray | None:
        return view.const(node.inputs[i]) if len(node.inputs) > i else None

    if version == "opset1":  # legacy: align_corners flag, sizes input
        coord = "align_corners" if a.get("align_corners") else "asymmetric"
        calc, values, axes = "sizes", const(1), list(a.get("axes", []))
    else:
        coord = a.get("coordinate_transformation_mode", "half_pixel")
        calc = a.get("shape_calculation_mode", "sizes")
        if version == "opset4":
            values, axes_v = (const(2) if calc == "scales" else const(1)), const(3)
        else:
            values, axes_v = const(1), const(2)
        axes = None if axes_v is None else axes_v.astype(np.int64).tolist()
    scales = None
    if calc == "scales" and values is not None:
        scales = full_rank_values(values.astype(np.float64).tolist(), axes, rank, 1.0)
        if scales is not None and rank is not None and len(scales) != rank:
            scales = None
    if scales is None and in_shape is not None and out_shape is not None \
            and None not in in_shape and None not in out_shape:
        scales = [o / i for o, i in zip(out_shape, in_shape)]
    pb, pe = list(a.get("pads_begin", [])), list(a.get("pads_end", []))
    extra = {"raw_mode": raw_mode, "antialias": int(bool(a.get("antialias", False))),
             "pads_begin": pb if any(pb) else [], "pads_end": pe if any(pe) else []}
    del op
    return ResizeInfo(_LINEAR.get(raw_mode, raw_mode), coord, version == "opset1", scales, calc, extra)


# ---- editing ------------------------------------------------------------------------------------------------
class OvEditor(Recorder):
    """Edits ``handle.ov`` in place with opset-13 nodes (see :class:`rewriter.graph.editor.Editor`)."""

    def __init__(self, handle, view: GraphView):
        super().__init__()
        self.handle, self.view = handle, view
        self._made_ops: dict[str, Any] = {}

    def _op(self, name: str):
        if name in self.view.by_id:
            return self.view.by_id[name].ref
        if name in self._made_ops:
            return self._made_ops[name]
        for op in self.handle.ov.get_ops():
            if op.get_friendly_name() == name:
                return op
        raise KeyError(f"node '{name}' is not in the graph")

    def name_nodes(self) -> None:
        """IR nodes always have names (a repeated one keeps its "#k" id only in the view)."""

    def set_attr(self, node_id: str, key: str, value: Any) -> None:
        op = self._op(node_id)
        op.set_attribute({"coordinate_mode": "coordinate_transformation_mode"}.get(key, key), value)
        self._record([op.get_friendly_name()], [op.get_friendly_name()])

    def replace(self, node_id: str, build: Callable) -> list[str]:
        op = self._op(node_id)
        old_name = op.get_friendly_name()
        b = _OvBuilder(self, op)
        result = build(b)
        old_out = op.output(0)
        names = set(old_out.get_names())
        for target in list(old_out.get_target_inputs()):
            target.replace_source_output(result)
        old_out.set_names(set())
        made = [n.get_friendly_name() for n in b.nodes]
        if old_name in made:  # the replacement takes the name: free it
            op.set_friendly_name(f"{old_name}/replaced")
        result.set_names(names)
        for n in b.nodes:
            self._made_ops[n.get_friendly_name()] = n
        self._record(made, [old_name])
        return made

    def set_const(self, node_id: str, index: int, value: np.ndarray) -> None:
        op = self._op(node_id)
        inp = op.input(index)
        src = inp.get_source_output().get_node()
        if src.get_type_name() == "Convert":  # FP16-compressed: keep the f16 constant + Convert form
            src.input(0).replace_source_output(_like(src.input_value(0).get_node(), value).output(0))
        else:
            inp.replace_source_output(_like(src, value).output(0))
        self._record([op.get_friendly_name()], [op.get_friendly_name()])

    def commute(self, resize_id: str, conv_id: str) -> list[str]:
        resize, conv = self._op(resize_id), self._op(conv_id)
        node = self.view.node(conv_id)
        if conv.input_value(0).get_node().get_instance_id() != resize.get_instance_id():
            raise ValueError(f"{conv_id} does not read the output of {resize_id}")
        end = self._op(node.attrs["bias_add"]) if node.attrs.get("bias_add") else conv  # the pair ends after the bias
        out, y = end.output(0), resize.output(0)
        readers, names = list(out.get_target_inputs()), set(out.get_names())
        conv.input(0).replace_source_output(resize.input_value(0))
        resize.input(0).replace_source_output(out)
        for r in readers:
            r.replace_source_output(y)
        out.set_names(set())
        y.set_names(names)
        self._commuted_sizes(resize, self.view.node(resize_id), int(node.attrs["weight_shape"][0]))
        changed = list(dict.fromkeys(op.get_friendly_name() for op in (conv, end, resize)))
        self._record(changed, changed)
        return changed

    def _commuted_sizes(self, op, node: Node, channels: int) -> None:
        """An Interpolate whose sizes cover the channel axis: that entry becomes ``channels``. A computed chain
        becomes scales when they are whole numbers (any input size), else a constant of the current shapes."""
        import openvino.opset13 as ops

        a, version = op.get_attributes(), node.version
        calc = "sizes" if version == "opset1" else a.get("shape_calculation_mode", "sizes")
        if version == "opset1":
            axes: list[int] | None = list(a.get("axes", []))
        else:
            k = 3 if version == "opset4" else 2
            if version != "opset4" and calc != "sizes":
                return  # Interpolate-11 by scales: the channel scale stays 1
            av = self.view.const(node.inputs[k]) if len(node.inputs) > k else None
            axes = None if av is None else av.astype(np.int64).tolist()
        rank = op.get_input_partial_shape(0).rank.get_length()
        axes = list(range(rank)) if axes is None else [x % rank for x in axes]
        if 1 not in axes:
            return
        src = op.input_value(1).get_node()
        stored = node_const(src) is not None
        if not stored and calc != "sizes":
            return  # Interpolate-4 by scales ignores its computed sizes input
        scales = node.attrs["resize"].get().scales
        if not stored and version != "opset1" and scales is not None and all(float(v).is_integer() for v in scales):
            # a ShapeOf chain: scales keep the model free of any one input size
            op.set_attribute("shape_calculation_mode", "scales")
            value = ops.constant(np.array([scales[x] for x in axes], np.float32)).output(0)
            op.input(2 if version == "opset4" else 1).replace_source_output(value)
            return
        sizes = self.view.const(node.inputs[1])
        if sizes is None:
            raise ValueError(f"{node.id}: sizes over the channel axis are computed at run time; cannot update them")
        new = np.array(sizes).copy()
        new[axes.index(1)] = channels
        op.input(1).replace_source_output(ops.constant(new.astype(sizes.dtype)).output(0))

    def set_bias(self, node_id: str, value: np.ndarray) -> None:
        """Set a conv's bias: the constant of the Add the builder (or the converter) put after it."""
        op = self._op(node_id)
        users = list(op.output(0).get_target_inputs())
        add = users[0].get_node() if len(users) == 1 and users[0].get_node().get_type_name() == "Add" else None
        if add is None:
            raise ValueError(f"{node_id}: IR conv has no bias Add to write a bias into")
        self._made_ops.setdefault(add.get_friendly_name(), add)
        self.set_const(add.get_friendly_name(), 1 - users[0].get_index(), np.reshape(value, (1, -1, 1, 1)))

    def remove_dead(self) -> None:
        pass  # OpenVINO drops nodes no Result reaches

    def commit(self) -> None:
        self.handle.ov.validate_nodes_and_infer_types()
        self.handle.touch()


def _like(const, value: np.ndarray):
    """A Constant holding ``value`` in the shape, element type and friendly name of Constant ``const``."""
    import openvino.opset13 as ops

    new = ops.constant(np.ascontiguousarray(value).reshape(const.get_output_shape(0)).astype(
        const.get_output_element_type(0).to_dtype()))
    new.set_friendly_name(const.get_friendly_name())
    return new


class _OvBuilder:
    """Format-free ops (see :class:`rewriter.graph.editor.Builder`) as opset-13 nodes."""

    def __init__(self, editor: OvEditor, old):
        self.e, self.old = editor, old
        self.nodes: list[Any] = []

    def input(self, i: int):
        return self.old.input_value(i)

    def const(self, value: np.ndarray, name: str, like=None):
        import openvino.opset13 as ops

        dtype = like.get_element_type().to_dtype() if like is not None else np.asarray(value).dtype
        return ops.constant(np.ascontiguousarray(value).astype(dtype), name=name).output(0)

    def _keep(self, node):
        self.nodes.append(node)
        return node.output(0)

    def pad(self, x, begin, end, mode: str, name: str):
        import openvino.opset13 as ops

        return self._keep(ops.pad(x, ops.constant(np.array(begin, np.int64)), ops.constant(np.array(end, np.int64)),
                                  mode, name=name))

    def conv(self, x, w: np.ndarray, name: str, *, strides, dilations, pads, groups: int = 1,
             bias: np.ndarray | None = None, auto_pad: str = "NOTSET"):
        import openvino.opset13 as ops

        nsp = w.ndim - 2
        geo = dict(strides=list(strides), pads_begin=list(pads[:nsp]), pads_end=list(pads[nsp:]),
                   dilations=list(dilations), auto_pad=_auto_pad(auto_pad))
        if groups > 1:
            wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])
            y = self._keep(ops.group_convolution(x, self.const(wg, f"{name}.weight", x), **geo, name=name))
        else:
            y = self._keep(ops.convolution(x, self.const(w, f"{name}.weight", x), **geo, name=name))
        if bias is not None:
            y = self.add_bias(y, bias, f"{name}_bias")
        return y

    def conv_transpose(self, x, w: np.ndarray, name: str, *, strides, crops_begin, crops_end, groups: int):
        import openvino.opset13 as ops

        nsp = w.ndim - 2
        wg = w.reshape(groups, w.shape[0] // groups, *w.shape[1:])  # G x Cin/G x Cout/G x k...
        return self._keep(ops.group_convolution_backprop_data(
            x, self.const(wg, f"{name}.weight", x), list(strides), pads_begin=list(crops_begin),
            pads_end=list(crops_end), dilations=[1] * nsp, auto_pad="explicit", output_padding=[0] * nsp,
            name=name))

    def concat(self, xs: list, axis: int, name: str):
        import openvino.opset13 as ops

        return self._keep(ops.concat(xs, axis, name=name))

    def add_bias(self, x, bias: np.ndarray, name: str):
        import openvino.opset13 as ops

        c = self.const(np.reshape(bias, (1, -1, 1, 1)), f"{name}.value", x)
        return self._keep(ops.add(x, c, name=name))


def _auto_pad(mode: str) -> str:
    m = (mode or "explicit").lower()
    return {"notset": "explicit", "same_upper": "same_upper", "same_lower": "same_lower",
            "valid": "valid"}.get(m, m)
