"""ONNX backend: build a :class:`GraphView` from an ``onnx.ModelProto`` and edit it in place.

Shapes come from one path: ONNX shape inference (with data propagation) on a *skeleton* of the model (large
initializers declared as inputs, so a 400 MB model costs a few MB to infer), completed by OpenVINO's
inference of the same skeleton for tensors ONNX leaves unknown (it gives up behind TF-"same" Pad chains).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .editor import Recorder
from .view import GraphView, Lazy, Node, ResizeInfo, conv_kind, full_rank_values

SMALL = 4096  # initializers up to this many elements stay in the skeleton (shape chains need their values)
_LINEAR = {"linear": "linear", "linear_onnx": "linear", "bilinear": "linear"}
_KIND = {"ConvTranspose": "deconv", "Resize": "resize", "Upsample": "resize", "QuantizeLinear": "quantize",
         "DequantizeLinear": "dequantize", "MatMul": "matmul", "Gemm": "matmul", "Pad": "pad",
         "Concat": "concat", "Add": "add", "Mul": "mul", "Constant": "constant", "Cast": "convert",
         "Shape": "shape"}
QUANT_OPS = ("DequantizeLinear", "QuantizeLinear", "DynamicQuantizeLinear")
_ATTR_NAMES = {"coordinate_mode": "coordinate_transformation_mode"}


def opset(model: onnx.ModelProto) -> int:
    """Default-domain opset of the model (1 when it imports none, as the ONNX spec reads it)."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def node_ids(model: onnx.ModelProto) -> list[str]:
    """The stable id of every node, in graph order (see :mod:`rewriter.graph.view`)."""
    out, seen = [], {}
    for n in model.graph.node:
        base = n.name or f"{n.op_type}:{n.output[0] if n.output else ''}"
        k = seen.get(base, 0)
        seen[base] = k + 1
        out.append(base if k == 0 else f"{base}#{k}")
    return out


def build_view(handle, input_shape: dict[str, list[int]] | None = None) -> GraphView:
    """The :class:`GraphView` of ``handle.onnx``."""
    m = handle.graph_proto  # a donor's large weights may have no data here: _const reads them back
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    producers: dict[str, onnx.NodeProto] = {o: n for n in g.node for o in n.output}
    ops = opset(m)
    tags = handle.tags()
    dtypes: dict[str, np.dtype] = {}
    for t in g.initializer:
        dtypes[t.name] = _np(t.data_type)
    for vi in [*g.input, *g.value_info, *g.output]:
        if vi.type.tensor_type.elem_type:
            dtypes.setdefault(vi.name, _np(vi.type.tensor_type.elem_type))
    graph_inputs = [vi.name for vi in g.input if vi.name not in inits]
    nodes = []
    for nid, n in zip(node_ids(m), g.node):
        attrs = {a.name: _attr(a) for a in n.attribute}
        kind = _KIND.get(n.op_type, "other") if n.domain in ("", "ai.onnx") else "other"
        node = Node(nid, n.name, n.op_type, kind, list(n.input), list(n.output), attrs, f"opset{ops}", n)
        if n.op_type == "Conv":
            _conv_attrs(node, inits, producers)
        nodes.append(node)
    shapes_cache: dict[str, Any] = {}

    def shapes() -> dict:
        if not shapes_cache:
            shapes_cache.update(_shapes(m, inits, input_shape, dtypes))
        return shapes_cache

    weights = _Weights(handle, inits) if handle.hollow else inits
    # constants fold Shape ops through the view's shapes: the closure reads ``view`` once it exists
    view = GraphView("onnx", nodes, graph_inputs, [o.name for o in g.output], ops,
                     lambda t: _const(t, weights, producers, view), shapes, dtypes, tags, handle.name)
    for node in view.of_kind("resize"):
        node.attrs["resize"] = Lazy(lambda node=node: _resize_info(view, node))
    return view


class _Weights(dict):
    """Initializers of a handle that gave its large weights away: a value read reloads them (``handle.proto``)."""

    def __init__(self, handle, inits: dict):
        super().__init__(inits)
        self.handle = handle

    def __getitem__(self, name: str) -> onnx.TensorProto:
        t = super().__getitem__(name)
        if int(np.prod(t.dims)) > SMALL and self.handle.hollow:
            for full in self.handle.proto.graph.initializer:
                self[full.name] = full
            t = super().__getitem__(name)
        return t


def _np(elem: int) -> np.dtype:
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


def _attr(a: onnx.AttributeProto) -> Any:
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [x.decode() for x in v]
    return v


# ---- convolutions ------------------------------------------------------------------------------------------
def _through_identity(name: str, producers: dict) -> str:
    for _ in range(8):  # exporters share equal tensors through Identity chains
        p = producers.get(name)
        if p is None or p.op_type != "Identity":
            return name
        name = p.input[0]
    return name


def _tensor_dims(name: str, inits: dict, producers: dict) -> list[int] | None:
    name = _through_identity(name, producers)
    if name in inits:
        return list(inits[name].dims)
    p = producers.get(name)
    if p is not None and p.op_type == "Constant" and p.attribute and p.attribute[0].name == "value":
        return list(p.attribute[0].t.dims)
    return None


def _quantizer(name: str, producers: dict, depth: int = 4) -> str | None:
    p = producers.get(name)
    if p is None:
        return None
    if p.op_type in QUANT_OPS:
        return p.op_type
    if depth and p.op_type in ("Cast", "Reshape", "Transpose", "Identity", "Mul", "Sub"):
        for i in p.input:
            if (q := _quantizer(i, producers, depth - 1)) is not None:
                return q
    return None


def _conv_attrs(node: Node, inits: dict, producers: dict) -> None:
    a, n = node.attrs, node.ref
    groups = int(a.get("group", 1))
    dims = _tensor_dims(n.input[1], inits, producers) if len(n.input) > 1 else None
    nsp = len(dims) - 2 if dims else len(a.get("kernel_shape", [1, 1]))
    a.update(strides=list(a.get("strides", [1] * nsp)), dilations=list(a.get("dilations", [1] * nsp)),
             pads=list(a.get("pads", [0] * 2 * nsp)), auto_pad=a.get("auto_pad", "NOTSET"), groups=groups)
    if dims is None:
        a["weight_quantizer"] = _quantizer(n.input[1], producers)
    else:
        a["weight_shape"] = dims
    if len(n.input) > 2 and n.input[2]:
        a["bias"] = n.input[2]
    a["can_take_bias"] = True  # a bias is the conv's own third input
    node.kind = conv_kind(dims, groups)


# ---- constants (with folding of static shape chains) ------------------------------------------------------------
_FOLD = {
    "Identity": lambda x, a: x[0], "Cast": lambda x, a: x[0].astype(_np(a["to"])),
    "Mul": lambda x, a: x[0] * x[1], "Add": lambda x, a: x[0] + x[1], "Sub": lambda x, a: x[0] - x[1],
    "Div": lambda x, a: (x[0] // x[1]) if x[0].dtype.kind in "iu" else x[0] / x[1],
    "Floor": lambda x, a: np.floor(x[0]), "Ceil": lambda x, a: np.ceil(x[0]),
    "Concat": lambda x, a: np.concatenate([np.atleast_1d(v) for v in x], axis=a.get("axis", 0)),
    "Gather": lambda x, a: np.take(x[0], x[1], axis=a.get("axis", 0)),
    "Unsqueeze": lambda x, a: np.expand_dims(x[0], tuple(a.get("axes", x[1] if len(x) > 1 else []))),
    "Squeeze": lambda x, a: np.squeeze(x[0], tuple(a.get("axes", x[1] if len(x) > 1 else [])) or None),
    "Reshape": lambda x, a: x[0].reshape([int(d) if d else x[0].shape[i] for i, d in enumerate(x[1])]),
    "Transpose": lambda x, a: np.transpose(x[0], a.get("perm")),
    "ConstantOfShape": lambda x, a: _constant_of_shape(x[0], a.get("value")),
}


def _constant_of_shape(shape: np.ndarray, value: onnx.TensorProto | None) -> np.ndarray:
    """ConstantOfShape (the TF-"same" pads chains of torch exports start with one): zeros unless ``value``."""
    v = numpy_helper.to_array(value).ravel() if value is not None else np.zeros(1, np.float32)
    return np.full([int(d) for d in shape], v[0], v.dtype)


def _slice(x: list[np.ndarray], a: dict) -> np.ndarray:
    data = x[0]
    starts, ends = (x[1], x[2]) if len(x) > 2 else (a["starts"], a["ends"])
    axes = x[3] if len(x) > 3 else a.get("axes", list(range(len(starts))))
    steps = x[4] if len(x) > 4 else [1] * len(starts)
    idx = [slice(None)] * data.ndim
    for s, e, ax, st in zip(starts, ends, axes, steps):
        idx[int(ax)] = slice(int(s), int(e), int(st))
    return data[tuple(idx)]


def _const(name: str, inits: dict, producers: dict, view: GraphView, depth: int = 16) -> np.ndarray | None:
    if name in inits:
        return numpy_helper.to_array(inits[name])
    p = producers.get(name)
    if p is None or depth == 0:
        return None
    if p.op_type == "Constant":
        for a in p.attribute:
            if a.name == "value":
                return numpy_helper.to_array(a.t)
            if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
                return np.array(helper.get_attribute_value(a))
        return None
    if p.op_type == "Shape":
        s = view.static_shape(p.input[0])
        return None if s is None else np.array(s, np.int64)
    fold = _slice if p.op_type == "Slice" else _FOLD.get(p.op_type)
    if fold is None:
        return None
    xs = [_const(i, inits, producers, view, depth - 1) if i else None for i in p.input]
    if any(x is None for x in xs[:1]) or any(x is None and i for x, i in zip(xs, p.input)):
        return None
    try:
        return np.asarray(fold([x for x in xs if x is not None], {a.name: _attr(a) for a in p.attribute}))
    except (ValueError, IndexError, TypeError, KeyError):  # a chain this small folder does not model
        return None


# ---- shapes -------------------------------------------------------------------------------------------------
def skeleton(model: onnx.ModelProto, inits: dict, input_shape: dict | None) -> onnx.ModelProto:
    """The model without large initializer data (declared as inputs), dynamic inputs pinned by ``input_shape``."""
    g = model.graph
    big = [t for t in g.initializer if int(np.prod(t.dims)) > SMALL]
    big_names = {t.name for t in big}
    inputs = []
    for vi in g.input:
        if vi.name in big_names:
            continue
        vi2 = onnx.ValueInfoProto()
        vi2.CopyFrom(vi)
        if input_shape and vi.name in input_shape:
            dims = vi2.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shape[vi.name]):
                d.Clear()
                d.dim_value = int(v)
        inputs.append(vi2)
    inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in big]
    sk = helper.make_graph(list(g.node), g.name or "g", inputs, list(g.output),
                           initializer=[t for t in g.initializer if t.name not in big_names])
    return helper.make_model(sk, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                             functions=list(model.functions))


def _shapes(model: onnx.ModelProto, inits: dict, input_shape: dict | None, dtypes: dict) -> dict:
    sk = skeleton(model, inits, input_shape)
    out: dict[str, list[int | None] | None] = {t.name: list(t.dims) for t in model.graph.initializer}
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, data_prop=True)
        vis = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, RuntimeError):
        vis = list(sk.graph.input)  # inference gave up: OpenVINO below still fills most tensors
    for vi in vis:
        tt = vi.type.tensor_type
        if tt.elem_type:
            dtypes.setdefault(vi.name, _np(tt.elem_type))
        out[vi.name] = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                        for d in tt.shape.dim] if tt.HasField("shape") else None
    produced = [o for n in model.graph.node for o in n.output if o]
    if any(out.get(t) is None or None in out[t] for t in produced):
        out.update(_ov_shapes(sk))
    return out


def _ov_shapes(sk: onnx.ModelProto) -> dict[str, list[int]]:
    """{tensor: static shape} as OpenVINO infers them for the skeleton (best effort)."""
    from ..model import ov_core

    try:
        m = ov_core().read_model(sk.SerializeToString())
    except RuntimeError:  # a model OpenVINO cannot read keeps the ONNX shapes
        return {}
    out = {}
    for op in m.get_ops():
        for port in op.outputs():
            ps = port.get_partial_shape()
            if ps.is_static:
                for name in port.get_names():
                    out[name] = [int(d.get_length()) for d in ps]
    return out


# ---- resize semantics ---------------------------------------------------------------------------------------
def _resize_info(view: GraphView, node: Node) -> ResizeInfo:
    a, n = node.attrs, node.ref
    raw_mode = a.get("mode", "nearest")
    legacy = n.op_type == "Upsample" or view.opset < 11
    coord = "asymmetric" if legacy else a.get("coordinate_transformation_mode", "half_pixel")
    in_shape = view.shape(n.input[0])
    out_shape = view.shape(n.output[0])

    def const(i: int) -> np.ndarray | None:
        v = view.const(n.input[i]) if len(n.input) > i and n.input[i] else None
        return None if v is None or v.size == 0 else v

    if n.op_type == "Upsample":
        scales_in = const(1) if len(n.input) > 1 else np.array(a.get("scales", []) or [], np.float64)
        sizes_in = None
    elif view.opset < 11:
        scales_in, sizes_in = const(1), None
    else:
        scales_in, sizes_in = const(2), const(3)
    has_sizes = n.op_type == "Resize" and view.opset >= 11 and len(n.input) > 3 and bool(n.input[3])
    rank = len(in_shape) if in_shape is not None else None
    axes = a.get("axes")
    scales = None
    if scales_in is not None and scales_in.size:
        scales = full_rank_values(scales_in.astype(np.float64).tolist(), axes, rank, 1.0)
    elif in_shape is not None:
        if sizes_in is not None and a.get("keep_aspect_ratio_policy", "stretch") == "stretch":
            sizes = full_rank_values(sizes_in.astype(np.int64).tolist(), axes, rank, None)
            if sizes is not None:
                out_shape = out_shape or [in_shape[i] if v is None else v for i, v in enumerate(sizes)]
        if out_shape is not None and None not in in_shape and None not in out_shape:
            scales = [o / i for o, i in zip(out_shape, in_shape)]
    extra = {"raw_mode": raw_mode, "antialias": a.get("antialias", 0),
             "keep_aspect_ratio_policy": a.get("keep_aspect_ratio_policy"),
             "exclude_outside": a.get("exclude_outside", 0), "axes": list(axes) if axes else None}
    return ResizeInfo(_LINEAR.get(raw_mode, raw_mode), coord, legacy, scales,
                      "sizes" if has_sizes and scales_in is None else "scales", extra)


# ---- editing ------------------------------------------------------------------------------------------------
class OnnxEditor(Recorder):
    """Edits ``handle.onnx`` in place (see :class:`rewriter.graph.editor.Editor`)."""

    def __init__(self, handle, view: GraphView):
        super().__init__()
        self.handle, self.view = handle, view
        self.g = handle.onnx.graph
        self.inits = {t.name: t for t in self.g.initializer}
        self._dead: list[str] = []

    def _index(self, node_id: str) -> int:
        """Position of a node (by its first output: unique, and stable while other nodes move)."""
        node = self.view.by_id.get(node_id)
        out = node.outputs[0] if node is not None else None
        for i, n in enumerate(self.g.node):
            if (out is not None and n.output and n.output[0] == out) or (out is None and n.name == node_id):
                return i
        raise KeyError(f"node '{node_id}' is not in the graph")

    def _named(self, i: int, node_id: str) -> onnx.NodeProto:
        n = self.g.node[i]
        if not n.name:  # tags need a name: give it its stable id
            n.name = node_id
            self.notes.append(f"unnamed {n.op_type} producing '{n.output[0]}' named '{node_id}'")
        return n

    def name_nodes(self) -> None:
        """Give every unnamed node its view id as its name (tags, costs and diffs then agree on it)."""
        for node in self.view.nodes:
            if not node.name:
                node.ref.name = node.id

    def set_attr(self, node_id: str, key: str, value: Any) -> None:
        n = self._named(self._index(node_id), node_id)
        key = _ATTR_NAMES.get(key, key)
        for a in n.attribute:
            if a.name == key:
                n.attribute.remove(a)
                break
        n.attribute.append(helper.make_attribute(key, value))
        self._record([n.name], [n.name])

    def replace(self, node_id: str, build: Callable) -> list[str]:
        idx = self._index(node_id)
        old = self.g.node[idx]
        b = _OnnxBuilder(self, old)
        result = build(b)
        out = old.output[0]
        for n in b.nodes:  # the result takes the replaced node's output tensor
            for k, o in enumerate(n.output):
                if o == result:
                    n.output[k] = out
        last = b.nodes[-1]
        self._dead += [i for i in old.input if i]
        old_name = old.name or node_id
        if not old.name:
            self.notes.append(f"unnamed {old.op_type} producing '{out}' replaced by '{last.name}'")
        del self.g.node[idx]
        for k, n in enumerate(b.nodes):
            self.g.node.insert(idx + k, n)
        made = [n.name for n in b.nodes]
        self._record(made, [old_name])
        return made

    def set_const(self, node_id: str, index: int, value: np.ndarray) -> None:
        idx = self._find(node_id)
        n = self._named(idx, node_id)
        old = n.input[index] if len(n.input) > index else ""
        uses = sum(i == old for m in self.g.node for i in m.input) if old else 0
        if old in self.inits:
            dtype = _np(self.inits[old].data_type)
            if uses == 1:  # sole user: overwrite in place
                self.inits[old].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(value).astype(dtype), old))
                self._record([n.name], [n.name])
                return
        else:
            dtype = self.view.dtype(n.input[0]) or np.dtype(np.float32)
        name = _fresh(f"{n.name}/input{index}", self.inits)
        t = numpy_helper.from_array(np.ascontiguousarray(value).astype(dtype), name)
        self.g.initializer.append(t)
        self.inits[name] = self.g.initializer[-1]
        while len(n.input) <= index:
            n.input.append("")
        if old:
            self._dead.append(old)
        n.input[index] = name
        self._record([n.name], [n.name])

    def commute(self, resize_id: str, conv_id: str) -> list[str]:
        ri, ci = self._index(resize_id), self._index(conv_id)
        resize, conv = self._named(ri, resize_id), self._named(ci, conv_id)
        x, gone, y = resize.input[0], resize.output[0], conv.output[0]
        if conv.input[0] != gone or ci <= ri:
            raise ValueError(f"{conv_id} does not read the output of {resize_id}")
        self._commuted_sizes(resize, self.view.node(resize_id), int(self.view.node(conv_id).attrs["weight_shape"][0]))
        taken = {t for n in self.g.node for t in [*n.input, *n.output]} | set(self.inits)
        mid = _fresh(f"{conv.name}/before_resize", taken)
        conv.input[0], conv.output[0] = x, mid
        resize.input[0], resize.output[0] = mid, y
        names = [conv.name, resize.name]
        moved = onnx.NodeProto()
        moved.CopyFrom(resize)
        del self.g.node[ri]
        self.g.node.insert(ci, moved)  # right after the conv (now at ci - 1): its readers all come later
        for vi in [v for v in self.g.value_info if v.name in (gone, y)]:
            self.g.value_info.remove(vi)
        self._record(names, names)
        return names

    def _commuted_sizes(self, resize: onnx.NodeProto, node: Node, channels: int) -> None:
        """A Resize given by ``sizes``: its channel entry becomes ``channels``. A computed Shape chain becomes
        ``scales`` when they are whole numbers (any input size), else a constant of the current shapes."""
        if resize.op_type != "Resize" or self.view.opset < 11 or len(resize.input) < 4 or not resize.input[3]:
            return  # scales (1 on the channel axis) or legacy Upsample: nothing follows the channel count
        info = node.attrs["resize"].get()
        axes, shape = info.extra.get("axes"), self.view.shape(resize.input[0])
        rank = len(shape) if shape is not None else None
        entry = 1 if not axes else next((k for k, a in enumerate(axes) if rank and a % rank == 1), None)
        if entry is None:
            return
        old = resize.input[3]
        producer = next((n for n in self.g.node if old in n.output), None)
        stored = old in self.inits or (producer is not None and producer.op_type == "Constant")
        whole = info.scales is not None and all(float(v).is_integer() for v in info.scales)
        sizes = self.view.const(old)
        if not stored and whole:  # a Shape chain: scales keep the model free of any one input size
            scales = np.array(info.scales, np.float32)
            if axes:
                scales = scales[[a % len(scales) for a in axes]]
            if not resize.input[1] and self.view.opset == 11:  # Resize-11 requires its roi input
                resize.input[1] = self._initializer(f"{resize.name}/roi", np.zeros(0, np.float32))
            if resize.input[2]:
                self._dead.append(resize.input[2])
            resize.input[2] = self._initializer(f"{resize.name}/scales", scales)
            del resize.input[3]
        elif sizes is not None:
            new = np.array(sizes, np.int64)
            new[entry] = channels
            if old in self.inits and sum(i == old for m in self.g.node for i in m.input) == 1:
                self.inits[old].CopyFrom(numpy_helper.from_array(new, old))
                return
            resize.input[3] = self._initializer(f"{resize.name}/sizes", new)
        else:
            raise ValueError(f"{resize.name}: sizes are computed at run time and the scale is unknown")
        self._dead.append(old)

    def _initializer(self, name: str, value: np.ndarray) -> str:
        name = _fresh(name, self.inits)
        self.g.initializer.append(numpy_helper.from_array(value, name))
        self.inits[name] = self.g.initializer[-1]
        return name

    def set_bias(self, node_id: str, value: np.ndarray) -> None:
        """Set a conv's bias (its third input)."""
        self.set_const(node_id, 2, np.reshape(value, -1))

    def _find(self, name: str) -> int:
        """Index of a node by id (view nodes) or by name (nodes an editor made)."""
        if name in self.view.by_id:
            return self._index(name)
        for i, n in enumerate(self.g.node):
            if n.name == name:
                return i
        raise KeyError(f"node '{name}' is not in the graph")

    def remove_dead(self) -> None:
        g = self.g
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in g.node for a in n.attribute):
            return  # subgraphs may read outer tensors implicitly: leave dead code alone rather than guess
        candidates = set(self._dead)
        self._dead = []
        while candidates:
            used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
            dead = [n for n in g.node if n.output and any(o in candidates for o in n.output)
                    and not any(o in used for o in n.output)]
            dead_inits = [i for i in g.initializer if i.name in candidates and i.name not in used]
            nxt = {i for n in dead for i in n.input if i}
            for n in dead:
                g.node.remove(n)
            names = {i.name for i in dead_inits}
            for i in dead_inits:
                g.initializer.remove(i)
                self.inits.pop(i.name, None)
            for vi in [v for v in g.value_info if v.name in candidates and v.name not in used]:
                g.value_info.remove(vi)
            for gi in [v for v in g.input if v.name in names]:  # old-style models list initializers as inputs
                g.input.remove(gi)
            candidates = nxt

    def commit(self) -> None:
        self.handle.touch()


def _fresh(name: str, taken) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    return out


class _OnnxBuilder:
    """Format-free ops (see :class:`rewriter.graph.editor.Builder`) as ONNX nodes and initializers."""

    def __init__(self, editor: OnnxEditor, old: onnx.NodeProto):
        self.e, self.old = editor, old
        self.nodes: list[onnx.NodeProto] = []

    def input(self, i: int) -> str:
        return self.old.input[i]

    def _dtype(self, like: str | None) -> np.dtype | None:
        if like is None:
            return None
        for n in self.nodes:  # a tensor made here has its producer's input type
            if like in n.output:
                return self._dtype(n.input[0])
        return self.e.view.dtype(like) or self.e.view.dtype(self.old.input[0])

    def const(self, value: np.ndarray, name: str, like: str | None = None) -> str:
        value = np.asarray(value)
        dtype = self._dtype(like) or (np.dtype(np.float32) if value.dtype.kind == "f" else value.dtype)
        name = _fresh(name, self.e.inits)
        self.e.g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(value).astype(dtype), name))
        self.e.inits[name] = self.e.g.initializer[-1]
        return name

    def _node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def pad(self, x: str, begin, end, mode: str, name: str) -> str:
        pads = [*begin, *end]
        if self.e.view.opset >= 11:
            return self._node("Pad", [x, self.const(np.array(pads, np.int64), f"{name}_pads")], name, mode=mode)
        return self._node("Pad", [x], name, mode=mode, pads=pads)  # Pad-2: pads is an attribute

    def conv(self, x: str, w: np.ndarray, name: str, *, strides, dilations, pads, groups: int = 1,
             bias: np.ndarray | None = None, auto_pad: str = "NOTSET") -> str:
        ins = [x, self.const(w, f"{name}.weight", like=x)]
        if bias is not None:
            ins.append(self.const(bias, f"{name}.bias", like=x))
        attrs: dict[str, Any] = {"kernel_shape": list(w.shape[2:]), "strides": list(strides),
                                 "dilations": list(dilations), "group": int(groups)}
        if auto_pad not in ("NOTSET", "EXPLICIT", "explicit"):
            attrs["auto_pad"] = auto_pad
        else:
            attrs["pads"] = list(pads)
        return self._node("Conv", ins, name, **attrs)

    def conv_transpose(self, x: str, w: np.ndarray, name: str, *, strides, crops_begin, crops_end,
                       groups: int) -> str:
        return self._node("ConvTranspose", [x, self.const(w, f"{name}.weight", like=x)], name, group=int(groups),
                          kernel_shape=list(w.shape[2:]), strides=list(strides),
                          pads=[*crops_begin, *crops_end], dilations=[1] * (w.ndim - 2))

    def concat(self, xs: list[str], axis: int, name: str) -> str:
        return self._node("Concat", list(xs), name, axis=axis)

    def add_bias(self, x: str, bias: np.ndarray, name: str) -> str:
        return self._node("Add", [x, self.const(np.reshape(bias, (1, -1, 1, 1)), f"{name}.value", like=x)], name)
