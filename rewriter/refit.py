"""Data-aware refit of convolution weights: capture real activations, then least squares in numpy.

Shared by the passes that replace or perturb a convolution and want its *output* back on real data
(``dwpw`` refits the pointwise and optionally the depthwise weights of a factorised conv; ``asym_interp``
with ``compensate`` refits the convs that consume a changed Resize). No training framework: activations
are captured with :class:`rewriter.runtime.Runner` taps, patches are gathered with :func:`im2col` at a
seeded sample of output positions (memory stays bounded whatever the resolution), and weights come from a
ridge least-squares solve.

Typical use (refit a conv so it reproduces the original conv's output on the rewritten model's input)::

    geom = ConvGeometry.from_attrs(kernel=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1))
    y = capture(original, feeds, [conv_out])[conv_out]       # N x Cout x Ho x Wo
    x = capture(rewritten, feeds, [conv_in])[conv_in]        # N x Cin x H x W
    w, b = refit_conv(x, y, weight_shape=w0.shape, geom=geom, w0=w0)

Conventions: activations are NCHW float arrays; ``pads`` are ONNX order (top, left, bottom, right);
weights are ``Cout x Cin/groups x kh x kw``; a position is a row ``(n, oy, ox)`` of an int array.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import RewriteError
from .model import ModelHandle
from .progress import count

DEFAULT_LAMBDA = 1e-4  # ridge strength relative to the mean diagonal of AᵀA: numerical safety, not a prior
DEFAULT_POSITIONS = 8192  # sampled output positions per fit: enough rows for a few thousand unknowns


@dataclass(frozen=True)
class ConvGeometry:
    """Kernel size, stride, dilation and explicit pads (top, left, bottom, right) of a 2-D convolution."""

    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)

    @classmethod
    def from_attrs(cls, kernel, strides=None, dilations=None, pads=None, auto_pad: str = "NOTSET",
                   in_hw: tuple[int, int] | None = None) -> ConvGeometry:
        """Build from ONNX-style attributes; ``auto_pad`` SAME_UPPER/SAME_LOWER/VALID needs ``in_hw``."""
        k = (int(kernel[0]), int(kernel[1]))
        s = tuple(int(v) for v in (strides or (1, 1)))
        d = tuple(int(v) for v in (dilations or (1, 1)))
        p = resolve_pads(auto_pad, pads, in_hw, k, s, d)
        return cls(k, s, d, p)

    def output_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        """Output spatial size for an input of ``in_hw`` (floor rounding, as ONNX and OpenVINO do)."""
        out = []
        for i in range(2):
            span = in_hw[i] + self.pads[i] + self.pads[i + 2] - self.dilation[i] * (self.kernel[i] - 1) - 1
            out.append(span // self.stride[i] + 1)
        return out[0], out[1]


def resolve_pads(auto_pad: str, pads, in_hw: tuple[int, int] | None, kernel: tuple[int, int],
                 stride: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """Explicit (top, left, bottom, right) pads from ONNX ``auto_pad`` (or IR ``auto_pad``) and ``pads``."""
    mode = (auto_pad or "NOTSET").upper().replace("-", "_")
    if mode in ("NOTSET", "EXPLICIT", ""):
        p = [int(v) for v in (pads or (0, 0, 0, 0))]
        return (p[0], p[1], p[2], p[3])
    if mode == "VALID":
        return (0, 0, 0, 0)
    if in_hw is None:
        raise ValueError(f"auto_pad={auto_pad} needs the input size to resolve the pads")
    begin, end = [], []
    for i in range(2):
        out = -(-in_hw[i] // stride[i])  # SAME: ceil(in / stride)
        total = max((out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - in_hw[i], 0)
        small, big = total // 2, total - total // 2
        b, e = (small, big) if mode == "SAME_UPPER" else (big, small)
        begin.append(b)
        end.append(e)
    return (begin[0], begin[1], end[0], end[1])


# ---- capturing activations ---------------------------------------------------------------------------------
def capture(model: ModelHandle, feeds: list[dict[str, np.ndarray]], taps: list[str],
            max_samples: int | None = None, runtime: str = "ov",
            reduce: Callable[[str, int, np.ndarray], np.ndarray] | None = None,
            prune: bool = True, borrow: bool = False) -> dict[str, np.ndarray]:
    """Run ``model`` on ``feeds`` and return ``{tap: array}`` of the tapped tensors, stacked on axis 0.

    ``taps`` are tensor names (ONNX) or tensor names / ``"friendly_name:port"`` (IR), as
    :class:`rewriter.runtime.Runner` takes them. ``max_samples`` uses only the first feeds.
    ``reduce(tap, feed_index, array)`` shrinks each feed's array as soon as it is produced (e.g. gather
    sampled patches) so memory stays bounded on large activations; its results are concatenated on axis 0.
    ``prune`` runs only the subgraph that produces the taps (see :func:`truncated`). ``borrow`` (with
    ``reduce``, on OpenVINO) hands ``reduce`` views of the runtime's output buffers, valid during the call only:
    ``reduce`` must copy what it keeps (a gather does), and no copy of the whole outputs is made per feed.
    """
    from .runtime import Runner

    taps = list(dict.fromkeys(taps))
    if not taps:
        return {}
    use = feeds[:max_samples] if max_samples else feeds
    inputs = {name for name, _, _ in model.inputs()}
    inner = [t for t in taps if t not in inputs]  # a graph input is its feed: no need to run for it
    runner = None
    if inner:  # run only the part of the model the taps depend on: the rest is wasted work
        runner = Runner(_pruned(model, inner, runtime), runtime) if prune else Runner(model, runtime, taps=inner)
    parts: dict[str, list[np.ndarray]] = {t: [] for t in taps}
    for i, feed in enumerate(use):
        out = {}
        if runner is not None:
            res = runner.run(feed, borrow=borrow and reduce is not None)
            out = dict(zip(inner, res.values())) if prune else res
        for t in taps:
            a = np.asarray(feed[t] if t in inputs else out[t], dtype=np.float32)
            parts[t].append(reduce(t, i, a) if reduce is not None else a)
    return {t: np.concatenate(v, axis=0) for t, v in parts.items()}


def truncated(model: ModelHandle, taps: list[str]) -> ModelHandle:
    """A model computing only ``taps`` (as its outputs, in order) from the same inputs.

    Nodes the taps do not depend on are dropped, so capturing an early layer costs a fraction of a full run.
    All graph inputs are kept (the same feeds work). ONNX taps are tensor names; IR taps tensor names or
    ``"friendly_name:port"``.
    """
    if model.format == "onnx":  # read through ``proto``: a lazy clone must not copy the whole model to be cut
        head, graph, inits = _truncated_onnx(model.proto, taps)
        head.graph.CopyFrom(graph)
        head.graph.initializer.extend(inits)  # the one copy of the weights kept
        return ModelHandle(head)
    import openvino as ov
    import openvino.opset13 as ops

    m = model.ov.clone()
    by_name = {op.get_friendly_name(): op for op in m.get_ops()}
    results = []
    for t in taps:
        node, _, port = t.rpartition(":")
        if node in by_name and port.isdigit():
            out = by_name[node].output(int(port))
        else:
            found = [o for op in m.get_ops() for o in op.outputs() if t in o.get_names()]
            if not found:
                raise RewriteError(f"tensor '{t}' is not in the model")
            out = found[0]
        results.append(ops.result(out))
    return ModelHandle(ov.Model(results, m.get_parameters(), "truncated"))


def _truncated_onnx(model, taps: list[str]):
    import onnx
    from onnx import helper

    g = model.graph
    producers = {o: i for i, n in enumerate(g.node) for o in n.output}  # indices: wrappers are not stable
    missing = [t for t in taps if t not in producers]
    if missing:
        raise RewriteError(f"tensor '{missing[0]}' is not produced by any node of the model")
    keep, needed, stack = set(), set(), list(taps)
    while stack:  # walk producers back from the taps (subgraph inputs of If/Loop are not followed)
        t = stack.pop()
        if t in needed:
            continue
        needed.add(t)
        idx = producers.get(t)
        if idx is not None and idx not in keep:
            keep.add(idx)
            n = g.node[idx]
            stack.extend(i for i in n.input if i)
            for a in n.attribute:  # outer-scope names used inside subgraphs
                if a.type == onnx.AttributeProto.GRAPH:
                    stack.extend(i for sub in a.g.node for i in sub.input if i)
    nodes = [g.node[i] for i in sorted(keep)]
    inits = [i for i in g.initializer if i.name in needed]
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.output)}
    outs = [helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None) for t in taps]
    sub = helper.make_graph(nodes, g.name, list(g.input), outs)  # the weights stay out: callers copy or stream
    head = helper.make_model(onnx.GraphProto(), opset_imports=list(model.opset_import), ir_version=model.ir_version)
    head.ClearField("graph")
    return head, sub, inits


def _pruned(model: ModelHandle, taps: list[str], runtime: str) -> ModelHandle:
    """:func:`truncated`, for a runner: on ONNX for OpenVINO, the cut model goes to a temporary file one
    initializer at a time and OpenVINO reads it from there (no in-memory copy of the weights it keeps)."""
    if model.format != "onnx" or runtime != "ov":
        return truncated(model, taps)
    import tempfile
    from pathlib import Path

    from .model import ov_core, write_onnx_parts

    head, graph, inits = _truncated_onnx(model.proto, taps)
    with tempfile.TemporaryDirectory(prefix="rewrite-cut-") as d:
        path = Path(d) / "cut.onnx"
        write_onnx_parts(head, graph, inits, path)
        return ModelHandle(ov_core().read_model(str(path)))


# ---- the unchanged prefix, captured once ---------------------------------------------------------------------
MAX_FRONTIER_BYTES = 1 << 30  # cached unchanged activations over all feeds; above this, captures run the prefix


def frontier(v, sites: list[str]) -> list[str]:
    """Activations feeding the part of the graph downstream of ``sites`` that none of the sites can change.

    Rewriting the sites leaves everything upstream of them as it was, so these tensors are the same on the
    original and on any partially rewritten model: captured once, they stand in for the whole prefix (for
    MiDaS's decoder convs, the encoder) in every later capture. Constants are not activations.
    """
    down: set[str] = set()
    stack = list(sites)
    while stack:
        nid = stack.pop()
        if nid in down:
            continue
        down.add(nid)
        for t in v.node(nid).outputs:
            stack.extend(n.id for n, _ in v.users(t))
    live = set(v.inputs)  # tensors that depend on a graph input (nodes iterate in topological order)
    for n in v:
        if any(t in live for t in n.inputs):
            live.update(n.outputs)
    out: list[str] = []
    for n in v:
        if n.id in down:
            for t in n.inputs:
                p = v.producer.get(t)
                if t and t in live and (p is None or p.id not in down) and t not in out:
                    out.append(t)
    return out


def _reached(v, stops: set[str], taps: list[str]) -> list[str]:
    """The ``stops`` and graph inputs that ``taps`` depend on when the walk back ends at ``stops``."""
    seen, used, stack = set(), [], list(taps)
    inputs = set(v.inputs)
    while stack:
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        if t in stops or t in inputs:
            used.append(t)
            continue
        p = v.producer.get(t)
        if p is not None:
            stack.extend(p.inputs)
    return used


def suffix(model: ModelHandle, stops: dict[str, np.ndarray], taps: list[str]) -> tuple[ModelHandle, list[str]]:
    """A model computing ``taps`` with the tensors in ``stops`` fed as inputs instead of computed.

    ``stops`` maps a tensor to an example value (its shape and dtype). Returns the model and the names it takes
    as inputs (the stops it needs, and any original graph inputs still reached). Taps must not be stops.
    """
    from .graph import view

    used = _reached(view(model), set(stops), taps)
    if model.format == "onnx":
        sub = _suffix_onnx(model.proto, {t: stops[t] for t in used if t in stops}, taps)
        return ModelHandle(sub), [i.name for i in sub.graph.input]  # with inputs reached through Shape chains
    import openvino as ov
    import openvino.opset13 as ops

    m = model.ov.clone()
    ports = {t: _ov_port(m, t) for t in list(used) + taps}
    params = []
    for t in used:
        if t not in stops:
            params.append(ports[t].get_node())
            continue
        out = ports[t]
        p = ops.parameter(out.get_partial_shape(), out.get_element_type())
        p.set_friendly_name(t)
        p.output(0).set_names({t})
        for inp in list(out.get_target_inputs()):
            inp.replace_source_output(p.output(0))
        params.append(p)
    results = [ports[t].get_node() if ports[t].get_node().get_type_name() == "Result" else ops.result(ports[t])
               for t in taps]  # a model output keeps its Result (a second one beside it confuses the CPU plugin)
    for p in _parameters(results):  # original inputs the view does not show (e.g. read by a ShapeOf chain)
        if all(p.get_name() != q.get_name() for q in params):
            params.append(p)
            used.append(p.output(0).get_any_name())
    return ModelHandle(ov.Model(results, params, "suffix")), used


def _parameters(results: list) -> list:
    """Every Parameter the OpenVINO ``results`` depend on."""
    seen, out, stack = set(), [], [r.input_value(0).get_node() for r in results]
    while stack:
        n = stack.pop()
        if n.get_name() in seen:  # the unique internal name: Python wrappers are made anew (their ids recycle)
            continue
        seen.add(n.get_name())
        if n.get_type_name() == "Parameter":
            out.append(n)
        stack.extend(v.get_node() for v in n.input_values())
    return out


def _ov_port(m, t: str):
    by_name = {op.get_friendly_name(): op for op in m.get_ops()}
    node, _, port = t.rpartition(":")
    if node in by_name and port.isdigit():
        return by_name[node].output(int(port))
    found = [o for op in m.get_ops() for o in op.outputs() if t in o.get_names()]
    if not found:
        raise RewriteError(f"tensor '{t}' is not in the model")
    return found[0]


def _suffix_onnx(model, stops: dict[str, np.ndarray], taps: list[str]):
    from onnx import helper

    g = model.graph
    producers = {o: i for i, n in enumerate(g.node) for o in n.output}
    keep, needed, stack = set(), set(), list(taps)
    while stack:
        t = stack.pop()
        if not t or t in needed:
            continue
        needed.add(t)
        if t in stops:
            continue
        idx = producers.get(t)
        if idx is not None and idx not in keep:
            keep.add(idx)
            stack.extend(g.node[idx].input)
    nodes = [g.node[i] for i in sorted(keep)]
    inits = [i for i in g.initializer if i.name in needed and i.name not in stops]
    init_names = {i.name for i in inits}
    ins = [helper.make_tensor_value_info(t, helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                         list(np.shape(a))) for t, a in stops.items()]
    ins += [vi for vi in g.input if vi.name in needed and vi.name not in stops and vi.name not in init_names]
    outs = [helper.make_tensor_value_info(t, 1, None) for t in taps]  # float activations
    m = helper.make_model(helper.make_graph(nodes, g.name, ins, outs), opset_imports=list(model.opset_import),
                          ir_version=model.ir_version)
    m.graph.initializer.extend(inits)  # one copy (make_graph and make_model would each copy the weights)
    return m


STAGE_BYTES = 64 << 20  # weights per compiled stage of a staged capture: OpenVINO holds ~2-3x this while it runs


def stages(proto, taps: list[str], budget: int = STAGE_BYTES) -> list[tuple[list[str], list[str]]]:
    """Split the part of an ONNX model that computes ``taps`` into runs of nodes holding about ``budget`` bytes
    of weights each. Returns one ``(made, carried)`` per stage, in order: ``made`` are the activations the stage
    computes that later stages or the caller need, ``carried`` the earlier ones (graph inputs included) still
    needed after it. Activations are tensors that depend on a graph input; constants are recomputed per stage."""
    g = proto.graph
    producers = {o: i for i, n in enumerate(g.node) for o in n.output}
    keep, stack, seen = set(), list(taps), set()
    while stack:  # the nodes the taps depend on, as in _truncated_onnx
        t = stack.pop()
        if not t or t in seen:
            continue
        seen.add(t)
        idx = producers.get(t)
        if idx is not None and idx not in keep:
            keep.add(idx)
            stack.extend(g.node[idx].input)
    order = sorted(keep)  # ONNX nodes are topologically sorted
    nbytes = {t.name: int(np.prod(t.dims)) * np.dtype(_np_dtype(t.data_type)).itemsize for t in g.initializer}
    live = {i.name for i in g.input} - set(nbytes)  # activations: what depends on a graph input
    for i in order:
        n = g.node[i]
        if any(t in live for t in n.input):
            live.update(n.output)
    last_use: dict[str, int] = {}
    for pos, i in enumerate(order):
        for t in g.node[i].input:
            last_use[t] = pos
    wanted, inputs = set(taps), {i.name for i in g.input}
    pos_of = {i: pos for pos, i in enumerate(order)}
    bounds, acc = [], 0
    for pos, i in enumerate(order):
        acc += sum(nbytes.get(t, 0) for t in g.node[i].input)
        if acc >= budget and pos < len(order) - 1:
            bounds.append(pos + 1)
            acc = 0
    bounds.append(len(order))
    out, start = [], 0
    for end in bounds:
        made = [o for i in order[start:end] for o in g.node[i].output
                if o in live and (o in wanted or last_use.get(o, -1) >= end)]
        carried = [t for t in sorted(live) if t not in made and (t in wanted or last_use.get(t, -1) >= end)
                   and (t in inputs or pos_of.get(producers.get(t), len(order)) < start)]
        out.append((made, carried))
        start = end
    return out


def _np_dtype(elem: int) -> np.dtype:
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(elem))


def staged_capture(model: ModelHandle, feeds: list[dict[str, np.ndarray]], taps: list[str],
                   budget: int = STAGE_BYTES) -> list[dict[str, np.ndarray]]:
    """``{tap: array}`` per feed, running the ONNX ``model`` one stage (:func:`stages`) at a time on OpenVINO.

    Same values as one run of :func:`truncated` (up to the fusions a cut prevents), but only one stage's weights
    are compiled at a time, so a capture deep in a large model costs a fraction of the model's size in memory.
    """
    from .runtime import Runner

    inputs = {name for name, _, _ in model.inputs()}
    values: list[dict[str, np.ndarray]] = [{k: v for k, v in f.items() if k in inputs} for f in feeds]
    for made, carried in stages(model.proto, taps, budget):
        if made:
            sub, used = suffix(model, values[0], made)
            runner = Runner(sub, "ov")
            del sub  # the compiled stage holds what it needs
        for k, val in enumerate(values):
            nxt = {t: val[t] for t in carried}
            if made:
                nxt.update(zip(made, runner.run({t: val[t] for t in used}).values()))
            values[k] = nxt
        runner = None
    return [{t: v[t] for t in taps} for v in values]


class Prefix:
    """The unchanged activations (:func:`frontier`) of each feed, captured once on the original model.

    ``capture(model, taps, reduce)`` then runs only the suffix of ``model`` (the original or a partially
    rewritten copy) from them. With no frontier, or one too large to keep, it runs the whole prefix each time.
    """

    def __init__(self, reference: ModelHandle, feeds: list[dict[str, np.ndarray]], sites: list[str]):
        from .graph import view
        from .runtime import Runner

        self.feeds = feeds
        self.acts: list[dict[str, np.ndarray]] | None = None
        cut = frontier(view(reference), sites)
        inputs = {name for name, _, _ in reference.inputs()}
        inner = [t for t in cut if t not in inputs]
        if not cut or len(cut) > 64:
            return
        if reference.format == "onnx" and inner:  # a few weights at a time: never the whole encoder at once
            outs = staged_capture(reference, feeds, inner)
        else:
            runner = Runner(truncated(reference, inner), "ov") if inner else None
            outs = [dict(zip(inner, runner.run(f).values())) if runner is not None else {} for f in feeds]
            del runner
        acts = []
        for f, out in zip(feeds, outs):
            acts.append({t: (f[t] if t in inputs else out[t]) for t in cut})
            if sum(a.nbytes for a in acts[0].values()) * len(feeds) > MAX_FRONTIER_BYTES:
                return
        self.acts = acts

    def capture(self, model: ModelHandle, taps: list[str],
                reduce: Callable[[str, int, np.ndarray], np.ndarray], borrow: bool = False) -> None:
        """``reduce(tap, feed_index, array)`` for every tap and feed (as :func:`capture` calls it, ``borrow`` too)."""
        if self.acts is None:
            capture(model, self.feeds, taps, reduce=reduce, borrow=borrow)
            return
        cut = self.acts[0]
        direct = [t for t in taps if t in cut]
        inner = [t for t in taps if t not in cut]
        for k, a in enumerate(self.acts):
            for t in direct:
                reduce(t, k, np.asarray(a[t], dtype=np.float32))
        if inner:
            sub, used = suffix(model, cut, inner)
            feeds = [{t: (a[t] if t in a else f[t]) for t in used} for f, a in zip(self.feeds, self.acts)]
            capture(sub, feeds, inner, reduce=reduce, borrow=borrow)


# ---- sampling and patches ----------------------------------------------------------------------------------
def sample_positions(n: int, out_hw: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct output positions ``(n, oy, ox)`` drawn uniformly (all of them if fewer exist)."""
    total = n * out_hw[0] * out_hw[1]
    rng = np.random.default_rng(seed)
    flat = np.arange(total) if total <= count else np.sort(rng.choice(total, size=count, replace=False))
    ni, rest = np.divmod(flat, out_hw[0] * out_hw[1])
    oy, ox = np.divmod(rest, out_hw[1])
    return np.stack([ni, oy, ox], axis=1).astype(np.int64)


def split_positions(n: int, out_hw: tuple[int, int], fit: int, held_out: int,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint fit / held-out position samples, so the reported error is not the fitted one."""
    allp = sample_positions(n, out_hw, fit + held_out, seed)
    rng = np.random.default_rng(seed + 1)
    perm = rng.permutation(len(allp))
    if len(allp) < 2:
        return allp, allp
    cut = max(1, min(len(allp) - 1, round(len(allp) * fit / (fit + held_out))))
    return allp[np.sort(perm[:cut])], allp[np.sort(perm[cut:])]


def im2col(x: np.ndarray, k: tuple[int, int], stride: tuple[int, int] = (1, 1),
           dilation: tuple[int, int] = (1, 1), pads: tuple[int, int, int, int] = (0, 0, 0, 0),
           positions: np.ndarray | None = None) -> np.ndarray:
    """Patches ``P x C x kh x kw`` of ``x`` (N x C x H x W) seen by a conv at output ``positions``.

    Zero padding as in ONNX/OpenVINO Conv. ``positions`` (P x 3 rows ``(n, oy, ox)``) defaults to every
    output position in (n, oy, ox) order — fine for small tensors, use sampled positions otherwise.
    """
    x = np.asarray(x)
    kh, kw = k
    pt, pl, pb, pr = pads
    if positions is None:
        geom = ConvGeometry((kh, kw), tuple(stride), tuple(dilation), tuple(pads))
        positions = sample_positions(x.shape[0], geom.output_hw(x.shape[2:]), np.iinfo(np.int64).max)
    # pad only the rows/cols the sampled windows touch: a full padded copy is cheap next to a model run
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    n = positions[:, 0][:, None, None]
    rows = (positions[:, 1] * stride[0])[:, None, None] + (np.arange(kh) * dilation[0])[None, :, None]
    cols = (positions[:, 2] * stride[1])[:, None, None] + (np.arange(kw) * dilation[1])[None, None, :]
    patches = xp[n, :, rows, cols]  # advanced indices first: P x kh x kw x C
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2))


def gather_outputs(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``P x C`` values of ``y`` (N x C x Ho x Wo) at ``positions`` rows ``(n, oy, ox)``."""
    return np.ascontiguousarray(y[positions[:, 0], :, positions[:, 1], positions[:, 2]])


def conv_on_patches(patches: np.ndarray, w: np.ndarray, b: np.ndarray | None = None,
                    groups: int = 1) -> np.ndarray:
    """The conv's output ``P x Cout`` on ``patches`` (P x Cin x kh x kw) — numpy reference, float64."""
    p = patches.shape[0]
    cout, cin_g = w.shape[0], w.shape[1]
    x = patches.reshape(p, groups, cin_g * w.shape[2] * w.shape[3]).astype(np.float64)
    wg = w.reshape(groups, cout // groups, -1).astype(np.float64)
    y = np.einsum("pgk,gok->pgo", x, wg).reshape(p, cout)
    return y + (0.0 if b is None else np.asarray(b, np.float64)[None, :])


def rel_l2(pred: np.ndarray, target: np.ndarray) -> float:
    """Relative L2 error ``||pred - target|| / ||target||``: ``rewriter.metrics.rel_l2`` (the one implementation)."""
    from .metrics import rel_l2 as metrics_rel_l2

    return metrics_rel_l2(target, pred)


# ---- least squares -----------------------------------------------------------------------------------------
def ridge_solve(a: np.ndarray, b: np.ndarray, lam: float = DEFAULT_LAMBDA, w0: np.ndarray | None = None,
                intercept: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``W`` (features x outputs) minimising ``||A W - B||² + λ' ||W - w0||²``; with ``intercept`` also ``c``.

    ``λ' = lam * mean(diag(AᵀA))`` so ``lam`` is scale-free. ``w0`` (default 0) is the prior the solution
    shrinks towards (e.g. the weights being refit). ``intercept=True`` fits an unpenalised per-output offset
    and returns ``(W, c)`` with ``A W + c ≈ B``.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    squeeze = b.ndim == 1
    b = b[:, None] if squeeze else b
    if intercept:  # centring makes the offset unpenalised and exact
        am, bm = a.mean(axis=0), b.mean(axis=0)
        a, b = a - am, b - bm
    w = _solve_normal(a.T @ a, a.T @ b, lam, w0)
    if not intercept:
        return w[:, 0] if squeeze else w
    c = bm - am @ w
    return (w[:, 0], c[0]) if squeeze else (w, c)


def _solve_normal(g: np.ndarray, rhs: np.ndarray, lam: float, w0: np.ndarray | None) -> np.ndarray:
    """Solve ``(G + λ'I) W = rhs + λ' w0`` with ``λ' = lam * mean(diag(G))`` (``g`` is modified in place)."""
    reg = lam * (float(np.trace(g)) / max(g.shape[0], 1) or 1.0)
    g[np.diag_indices_from(g)] += reg
    if w0 is not None:
        rhs = rhs + reg * np.asarray(w0, np.float64).reshape(rhs.shape)
    try:
        return np.linalg.solve(g, rhs)
    except np.linalg.LinAlgError:  # singular even with the ridge (all-zero features): least norm
        return np.linalg.lstsq(g, rhs, rcond=None)[0]


def cross_validate_conv(patches: np.ndarray, y: np.ndarray, folds: np.ndarray, weight_shape: tuple[int, ...],
                        groups: int = 1, lams: tuple[float, ...] = (DEFAULT_LAMBDA,), w0: np.ndarray | None = None,
                        bias: bool = True) -> dict[float, float]:
    """Held-out relative L2 of :func:`fit_conv_patches` for each ridge strength in ``lams``.

    Rows of ``patches`` (P x Cin x kh x kw) / ``y`` (P x Cout) carry a fold label in ``folds``; each fold is
    predicted by a fit on the other folds, and ``{lam: rel_l2(held-out predictions, y)}`` is returned. Same
    numbers as calling :func:`fit_conv_patches` per fold and ``lam`` (up to rounding), but ``AᵀA``/``AᵀB`` are
    computed once for all rows and once per fold (training stats = all − fold), then reused for every ``lam``.
    """
    cout, cin_g, kh, kw = weight_shape
    p, og = patches.shape[0], cout // groups
    x = patches.reshape(p, groups, cin_g * kh * kw).astype(np.float64)
    y64 = np.asarray(y, np.float64)
    # with an intercept the fit is shift-invariant: centring once keeps the moment subtraction below accurate
    xs, ys = (x - x.mean(axis=0), y64 - y64.mean(axis=0)) if bias else (x, y64)
    prior = None if w0 is None else np.asarray(w0, np.float64).reshape(cout, -1)
    labels = np.unique(folds)
    preds = {lam: np.zeros(y64.shape, np.float64) for lam in lams}
    for g in range(groups):
        rows = slice(g * og, (g + 1) * og)
        a, b = xs[:, g, :], ys[:, rows]
        mx, my = x[:, g, :].mean(axis=0), y64[:, rows].mean(axis=0)  # the centring shift, undone for offsets
        stats_all = _moments(a, b)
        for k in labels:
            te = folds == k
            n, sa, sb, gram, cross = (t - f for t, f in zip(stats_all, _moments(a[te], b[te])))
            if bias:  # centre on the training rows: the offset is unpenalised, as in ridge_solve
                am, bm = sa / n, sb / n
                gram, cross = gram - n * np.outer(am, am), cross - n * np.outer(am, bm)
            for lam in lams:
                w = _solve_normal(gram.copy(), cross, lam, None if prior is None else prior[rows].T)
                w32 = w.astype(np.float32).astype(np.float64)  # predict with the float32 weights a fit returns
                pred = x[te, g, :] @ w32
                if bias:  # offset in the caller's (uncentred) coordinates, rounded like the weights
                    c = (bm + my) - (am + mx) @ w
                    pred += c.astype(np.float32)
                preds[lam][te, rows] = pred
    return {lam: rel_l2(preds[lam], y64) for lam in lams}


def _moments(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Row count, column sums and ``AᵀA``, ``AᵀB`` (float64)."""
    return float(len(a)), a.sum(axis=0), b.sum(axis=0), a.T @ a, a.T @ b


def refit_conv(x_in: np.ndarray, y_target: np.ndarray, weight_shape: tuple[int, ...], geom: ConvGeometry,
               groups: int = 1, lam: float = DEFAULT_LAMBDA, w0: np.ndarray | None = None, bias: bool = True,
               max_positions: int = DEFAULT_POSITIONS, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Weights (and bias) of a conv so that ``conv(x_in) ≈ y_target``, by ridge least squares per group.

    ``x_in`` (N x Cin x H x W) is the conv's input as the rewritten model produces it, ``y_target``
    (N x Cout x Ho x Wo) the output the original model produced on the same feeds. ``weight_shape`` is
    ``(Cout, Cin/groups, kh, kw)``; ``w0`` (same shape) is the starting weights the ridge shrinks towards.
    Returns ``(W float32, b float32 or None)``.
    """
    cout, cin_g, kh, kw = weight_shape
    pos = sample_positions(x_in.shape[0], y_target.shape[2:], max_positions, seed)
    patches = im2col(x_in, (kh, kw), geom.stride, geom.dilation, geom.pads, pos)
    y = gather_outputs(y_target, pos)
    return fit_conv_patches(patches, y, weight_shape, groups, lam, w0, bias)


def fit_conv_patches(patches: np.ndarray, y: np.ndarray, weight_shape: tuple[int, ...], groups: int = 1,
                     lam: float = DEFAULT_LAMBDA, w0: np.ndarray | None = None,
                     bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`refit_conv` on already gathered ``patches`` (P x Cin x kh x kw) and targets ``y`` (P x Cout)."""
    cout, cin_g, kh, kw = weight_shape
    p = patches.shape[0]
    x = patches.reshape(p, groups, cin_g * kh * kw)
    og = cout // groups
    w = np.zeros((cout, cin_g * kh * kw), np.float64)
    b = np.zeros(cout, np.float64)
    prior = None if w0 is None else np.asarray(w0, np.float64).reshape(cout, -1)
    for g in range(groups):
        rows = slice(g * og, (g + 1) * og)
        res = ridge_solve(x[:, g, :], y[:, rows], lam, None if prior is None else prior[rows].T, intercept=bias)
        wg, bg = res if bias else (res, None)
        w[rows] = wg.T
        if bias:
            b[rows] = bg
    return w.reshape(weight_shape).astype(np.float32), (b.astype(np.float32) if bias else None)


def refit_dwpw(patches: np.ndarray, y: np.ndarray, dw: np.ndarray, pw: np.ndarray, bias: np.ndarray | None,
               lam: float = DEFAULT_LAMBDA, depthwise_iters: int = 0,
               fit_bias: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Refit a depthwise(multiplier r) → pointwise pair so it reproduces ``y`` on ``patches``.

    ``dw`` is ``Cin*r x 1 x kh x kw`` (channel ``i*r + j`` reads input channel ``i``), ``pw`` is
    ``Cout x Cin*r x 1 x 1``, ``bias`` is the pointwise bias (``Cout``) or None. The pointwise weights (and
    bias, when ``fit_bias``) get an exact ridge solve; with ``depthwise_iters > 0`` the depthwise kernels are
    then refit with the pointwise fixed and the two alternate (ALS). Each step can only lower the fit error
    (up to the small ridge), and the best iterate is returned. Returns ``(dw, pw, bias)`` as float32.
    """
    p, cin = patches.shape[:2]
    cr, cout = dw.shape[0], pw.shape[0]
    r = cr // cin
    x = patches.reshape(p, cin, -1)  # P x Cin x K², float64 a block at a time (_dw_apply): a full copy is large
    y = np.asarray(y, np.float64)
    d = dw.reshape(cin, r, -1).astype(np.float64)
    w = pw.reshape(cout, cr).astype(np.float64)
    c = np.zeros(cout) if bias is None else np.asarray(bias, np.float64)
    use_bias = fit_bias or bias is not None

    def predict(d, w, c):
        z = _dw_apply(x, d).reshape(p, cr)
        return z @ w.T + c, z

    def solve_pw(d):
        _, z = predict(d, w, c)
        if fit_bias:
            wt, cc = ridge_solve(z, y, lam, w.T, intercept=True)
            return wt.T, cc
        return ridge_solve(z, y - c, lam, w.T).T, c

    best, x64 = None, None
    for it in range(depthwise_iters + 1):
        if it > 0:
            x64 = x.astype(np.float64) if x64 is None else x64  # ALS runs many products over the patches
            d = _solve_depthwise(x64, y - c, w.reshape(cout, cin, r), d, lam)
        w, c = solve_pw(d)
        err = rel_l2(predict(d, w, c)[0], y)
        if best is None or err < best[0]:
            best = (err, d.copy(), w.copy(), c.copy())
    _, d, w, c = best
    out_b = c.astype(np.float32) if use_bias else None
    return (d.reshape(dw.shape).astype(np.float32), w.reshape(pw.shape).astype(np.float32), out_b)


def refit_pointwise(z: np.ndarray, y: np.ndarray, pw: np.ndarray, bias: np.ndarray | None,
                    lam: float = DEFAULT_LAMBDA, fit_bias: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`refit_dwpw` with ``depthwise_iters=0`` given the depthwise outputs ``z`` (P x Cin x r, float64,
    as :func:`_dw_apply` makes them) instead of the patches: the same pointwise weights and bias, from
    K²/r times fewer numbers. Returns ``(pw, bias)`` as float32."""
    p, cout = len(z), pw.shape[0]
    z = np.asarray(z, np.float64).reshape(p, -1)
    y = np.asarray(y, np.float64)
    w = pw.reshape(cout, -1).astype(np.float64)
    c = np.zeros(cout) if bias is None else np.asarray(bias, np.float64)
    if fit_bias:
        wt, c = ridge_solve(z, y, lam, w.T, intercept=True)
        w = wt.T
    else:
        w = ridge_solve(z, y - c, lam, w.T).T
    out_b = c.astype(np.float32) if (fit_bias or bias is not None) else None
    return w.reshape(pw.shape).astype(np.float32), out_b


def _dw_apply(x: np.ndarray, d: np.ndarray, block: int = 1024) -> np.ndarray:
    """``einsum("pit,ijt->pij", x, d)`` in float64, converting ``x`` (P x Cin x K²) a block of rows at a time."""
    out = np.empty((x.shape[0], d.shape[0], d.shape[1]))
    for s in range(0, x.shape[0], block):
        out[s:s + block] = np.einsum("pit,ijt->pij", x[s:s + block].astype(np.float64), d)
    return out


def _solve_depthwise(x: np.ndarray, y: np.ndarray, w: np.ndarray, d0: np.ndarray, lam: float,
                     iters: int = 60) -> np.ndarray:
    """Depthwise kernels ``d`` (Cin x r x K²) minimising ``||Σ w[o,i,j] (x[p,i,:]·d[i,j,:]) - y||² + ridge``.

    Conjugate gradient on the normal equations with data-based products: the dense normal matrix would be
    (Cin·r·K²)² — hundreds of MB for a 512-channel conv — while each product here costs one pass over P.
    """
    def forward(d):
        return np.einsum("pij,oij->po", np.einsum("pit,ijt->pij", x, d), w)

    def adjoint(res):
        return np.einsum("pij,pit->ijt", np.einsum("po,oij->pij", res, w), x)

    # ridge scaled like ridge_solve: mean diagonal of the normal matrix, estimated from its factors
    diag = np.einsum("oij,oij->ij", w, w)[:, :, None] * np.einsum("pit,pit->it", x, x)[:, None, :]
    reg = lam * float(diag.mean() or 1.0)

    def normal(d):
        return adjoint(forward(d)) + reg * d

    b = adjoint(y) + reg * d0
    d = d0.copy()
    res = b - normal(d)
    p = res.copy()
    rs = float(np.vdot(res, res))
    stop = 1e-20 * float(np.vdot(b, b))
    for _ in range(iters):
        if rs <= stop:
            break
        ap = normal(p)
        alpha = rs / float(np.vdot(p, ap))
        d += alpha * p
        res -= alpha * ap
        rs_new = float(np.vdot(res, res))
        p = res + (rs_new / rs) * p
        rs = rs_new
    return d


# ---- site-by-site refit of depthwise + pointwise pairs ----------------------------------------------------------
@dataclass
class PairSite:
    """One factorised conv to refit: where its target and input are, and its (updated) factorisation."""

    key: str  # the site id; the pair's nodes are ``<key>/dw``.. and ``<key>/pw``
    y_tap: str  # the original conv's output on the reference model
    dw_node: str  # the (first) depthwise node on the rewritten model: its input is the pair's input
    geometry: ConvGeometry
    fact: object  # rewriter.lowrank.Factorisation (refit in place)
    bias: np.ndarray | None
    details: dict
    out_hw: tuple[int, int] | None = None
    refit_bias: np.ndarray | None = None


def refit_pairs(reference: ModelHandle, editor, sites: list[PairSite], ctx, samples: int, positions: int,
                depthwise_iters: int, write: Callable) -> list[str]:
    """Refit every pair site by site, in waves of mutually independent sites, on the rewritten model's inputs.

    Targets (each original conv's output on the reference model) are captured in one run; each wave captures
    its pairs' inputs on the model as rewritten so far, so a refit also absorbs the earlier sites' changes.
    ``write(editor, site)`` stages a site's new weights. Returns notes for the report.
    """
    from .graph import view

    calib = ctx.calibration(reference)
    feeds = calib.feeds[:samples]
    notes = list(calib.notes)
    if not calib.is_images:
        notes.append("dwpw refit used seeded random inputs (the model input is not an image): layer "
                     "errors below are on random data")
    n = len(feeds)
    fit_n, held_n = positions, max(256, positions // 2)
    pos = {}
    for i, s in enumerate(sites):
        out_hw = s.out_hw or capture(reference, [feeds[0]], [s.y_tap])[s.y_tap].shape[2:]
        pos[s.key] = split_positions(n, tuple(out_hw), fit_n, held_n, seed=ctx.seed + i)
    by_out = {s.y_tap: s for s in sites}
    targets = _Samples(pos)
    keys = [s.key for s in sites]
    shared = getattr(ctx, "shared_prefix", None)  # optimize: one capture for every candidate
    prefix = (shared(feeds, keys) if shared is not None else None) or Prefix(reference, feeds, keys)
    prefix.capture(reference, list(by_out),
                   reduce=lambda tap, k, y: targets.add(by_out[tap].key, k, lambda r: gather_outputs(y, r)),
                   borrow=True)  # gathers copy the sampled rows: the full outputs are not copied
    deps = _dependencies(view(reference), [s.key for s in sites])
    done: set[str] = set()
    while len(done) < len(sites):
        wave = [s for s in sites if s.key not in done and deps[s.key] <= done]
        if not wave:  # cannot happen in a DAG; refit the rest together rather than loop forever
            wave = [s for s in sites if s.key not in done]
        v = view(editor.handle)
        by_in: dict[str, list[PairSite]] = {}
        for s in wave:  # convs may share an input tensor
            by_in.setdefault(v.node(s.dw_node).inputs[0], []).append(s)
        inputs = _Samples(pos)

        def pick(tap, k, x, by_in=by_in, inputs=inputs):
            for s in by_in[tap]:
                g, d = s.geometry, _reduced_dw(s, depthwise_iters)

                def take(r, g=g, d=d):
                    patches = im2col(x, g.kernel, g.stride, g.dilation, g.pads, r)
                    return patches if d is None else _dw_apply(patches.reshape(len(r), d.shape[0], -1), d)
                inputs.add(s.key, k, take)
            return np.empty(0)

        prefix.capture(editor.handle, list(by_in), reduce=pick, borrow=True)  # im2col copies the patches
        for s in wave:
            _refit_pair(s, inputs.get(s.key, "fit"), targets.get(s.key, "fit"), inputs.get(s.key, "held"),
                        targets.get(s.key, "held"), depthwise_iters)
            write(editor, s)
            done.add(s.key)
            count(f"refitting {len(sites)} depthwise+pointwise site(s)", len(done), len(sites))
        editor.commit()
    return notes


def _dependencies(v, keys: list[str]) -> dict[str, set[str]]:
    """{site: the sites among ``keys`` upstream of its input}."""
    wanted = set(keys)
    out = {}
    for key in keys:
        seen, found, stack = set(), set(), [v.node(key).inputs[0]]
        while stack:
            node = v.producer.get(stack.pop())
            if node is None or node.id in seen:
                continue
            seen.add(node.id)
            if node.id in wanted:
                found.add(node.id)
            stack.extend(t for t in node.inputs if t)
        out[key] = found
    return out


class _Samples:
    """Per-site fit / held-out samples, gathered feed by feed while a capture runs (memory stays bounded)."""

    def __init__(self, pos: dict) -> None:
        self.pos = pos
        self.parts: dict[tuple[str, str], list[np.ndarray]] = {}

    def add(self, key: str, k: int, take) -> np.ndarray:
        fit, held = self.pos[key]
        for part, rows in (("fit", fit), ("held", held)):
            sel = rows[rows[:, 0] == k].copy()
            sel[:, 0] = 0  # each feed is captured alone
            self.parts.setdefault((key, part), []).append(take(sel))
        return np.empty(0)  # capture itself keeps nothing

    def get(self, key: str, part: str) -> np.ndarray:
        """The samples of ``key``'s ``part``, handed over: read once, they are not kept here as well."""
        return np.concatenate(self.parts.pop((key, part)))


def _reduced_dw(s: PairSite, depthwise_iters: int) -> np.ndarray | None:
    """The depthwise kernels (Cin x r x K², float64) when a pointwise-only refit can keep the depthwise outputs
    instead of the patches (fewer numbers: 2r < K² in float64), else None."""
    f = s.fact
    k2 = int(np.prod(f.dw.shape[2:]))
    if depthwise_iters or 2 * f.rank >= k2:
        return None
    return f.dw.reshape(f.cin, f.rank, -1).astype(np.float64)


def _refit_pair(s: PairSite, x_fit, y_fit, x_held, y_held, depthwise_iters: int) -> None:
    """Refit one pair on its fit samples, kept only if the held-out error drops. The samples are patches, or
    the depthwise outputs (P x Cin x r) when :func:`_reduced_dw` says so (the pointwise fit needs only those)."""
    f = s.fact
    bias = s.bias if s.bias is not None else np.zeros(f.pw.shape[0], np.float32)
    if _reduced_dw(s, depthwise_iters) is not None:
        before = _pw_error(x_held, y_held, f.pw, bias)
        pw, b = refit_pointwise(x_fit, y_fit, f.pw, bias)
        dw = f.dw
        after = _pw_error(x_held, y_held, pw, b)
    else:
        before = _pair_error(x_held, y_held, f.dw, f.pw, bias, f.rank)
        dw, pw, b = refit_dwpw(x_fit, y_fit, f.dw, f.pw, bias, depthwise_iters=depthwise_iters)
        after = _pair_error(x_held, y_held, dw, pw, b, f.rank)
    d = s.details
    d.update(error_svd=round(before, 6), refit_positions=[len(x_fit), len(x_held)])
    if after < before:
        f.dw, f.pw, s.refit_bias = dw, pw, b
        d.update(error_refit=round(after, 6), refit="pointwise" + (
            f"+depthwise ({depthwise_iters} ALS rounds)" if depthwise_iters else ""))
    else:  # the held-out error says the fit overfitted: keep the SVD weights
        s.refit_bias = None
        d.update(error_refit=round(before, 6), refit="kept SVD weights (refit did not lower held-out error)")


def _pair_error(x: np.ndarray, y: np.ndarray, dw: np.ndarray, pw: np.ndarray, b: np.ndarray | None,
                rank: int) -> float:
    p, cin = x.shape[:2]
    return _pw_error(_dw_apply(x.reshape(p, cin, -1), dw.reshape(cin, rank, -1).astype(np.float64)), y, pw, b)


def _pw_error(z: np.ndarray, y: np.ndarray, pw: np.ndarray, b: np.ndarray | None) -> float:
    """Held-out error of the pointwise conv on depthwise outputs ``z`` (P x Cin x r)."""
    pred = z.reshape(len(z), -1) @ pw.reshape(pw.shape[0], -1).T.astype(np.float64)
    return rel_l2(pred + (0 if b is None else b), y)
