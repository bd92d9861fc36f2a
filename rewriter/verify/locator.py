"""The first-divergence locator: which node of the model after a rewrite first computes something else.

``locate`` walks the tensors both graphs compute (read from their :class:`~rewriter.graph.GraphView`), in
topological order and in memory-bounded chunks, and names the first one that diverges: first among the
nodes a pass made or changed (their provenance tags), then anywhere. The finding carries the pass that made
the node, or that made the nearest rewritten node upstream of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import metrics as M
from ..errors import RewriteError
from ..graph import GraphView
from ..graph import view as graph_view
from ..inputs import InputSet
from ..model import ModelHandle
from .comparison import as_handle, check_compatible, pick_output, run_feeds, verification_inputs
from .gates import DEFAULT_TOL

LOCATE_CHUNK_ELEMENTS = 16_000_000  # values exposed per chunk and model (64 MB of fp32)
LOCATE_CHUNK_TENSORS = 128
LOCATE_FEEDS = 2
_UNKNOWN_NUMEL = 1 << 20
_SHAPE_OPS = {"Shape", "Size", "ShapeOf"}  # outputs depend on a tensor's shape, not its values


@dataclass
class Tensor:
    """A computed tensor as the locator sees it: where it comes from, its size and what it depends on."""

    names: tuple[str, ...]  # tensor names (ONNX: exactly one)
    node: str  # producing node's view id
    op: str
    port: int
    numel: int | None
    is_float: bool | None
    index: int  # position in the model's tensor list (topological)
    ancestors: int  # bitmask of the indices of every tensor this one is computed from
    shape_only: bool = False  # computed from shapes only (Shape/ShapeOf chains): never a divergence


def _port_info(v: GraphView) -> dict[str, tuple[int | None, bool | None]]:
    """{tensor name: (values, is float)} of every tensor a node of ``v`` outputs, under each of its names."""
    info = {}
    for n in v.nodes:
        for t in n.outputs:
            if not t:
                continue
            shape, dt = v.static_shape(t), v.dtype(t)
            entry = (int(np.prod(shape)) if shape is not None else None, None if dt is None else dt.kind == "f")
            for name in v.names_of(t):
                info[name] = entry
    return info


def tensors(h: ModelHandle, run: ModelHandle | None = None) -> list[Tensor]:
    """Every computed (non-constant) tensor of ``h`` in topological order, read from its graph view.

    Sizes and element types come from ``run`` (the model that will run, e.g. ``h`` converted to OpenVINO)
    when given, matched by tensor name, else from ``h``'s own view.
    """
    v = graph_view(h)
    info = _port_info(graph_view(run)) if run is not None and run is not h else None
    const: set[str] = set()
    index: dict[str, int] = {}
    out: list[Tensor] = []
    for n in v.nodes:
        if n.kind in ("input", "output"):
            continue
        ins = [i for i in n.inputs if i]
        if n.kind == "constant" or (ins and all(i in const for i in ins)) or (not ins and v.format == "onnx"):
            const.update(n.outputs)  # folded weights/shape chains
            continue
        live = [out[index[i]] for i in ins if i in index]
        shape_only = n.op_type in _SHAPE_OPS or (bool(live) and all(t.shape_only for t in live))
        anc = 0
        for t in live if not shape_only else ():  # a shape computation carries no values from upstream
            anc |= (1 << t.index) | t.ancestors
        for port, t in enumerate(n.outputs):
            if not t:
                continue
            names = v.names_of(t)
            if info is not None:
                numel, is_float = next((info[x] for x in names if x in info), (None, None))
            else:
                shape, dt = v.static_shape(t), v.dtype(t)
                numel = int(np.prod(shape)) if shape is not None else None
                is_float = None if dt is None else dt.kind == "f"
            index[t] = len(out)
            out.append(Tensor(names, n.id, n.op_type, port, numel, is_float, len(out), anc, shape_only))
    return out


def common_tensors(before: ModelHandle, after: ModelHandle, run_before: ModelHandle | None = None,
                   run_after: ModelHandle | None = None) -> list[tuple[str, Tensor]]:
    """(tap key, after-graph tensor) for tensors both graphs compute, in the after graph's topological order.

    Matched by tensor name; IR-to-IR also by "friendly_name:port" when the op type agrees. Graph outputs,
    integer tensors and shape arithmetic (anything computed from Shape/ShapeOf only, such as an
    Interpolate's computed sizes) are left out: outputs are compared by the gate, and a shape computation
    matching says nothing about the values upstream of it. With ``run_before``/``run_after`` (the models that
    will run), only names those models still carry are kept.
    """
    bt = tensors(before, run_before)
    by_name = {n: t for t in bt for n in t.names}
    by_port = {f"{t.node}:{t.port}": t for t in bt} if before.format == "ir" else {}
    outputs = set(before.outputs()) | set(after.outputs())
    runnable = None
    if run_before is not None and run_after is not None:  # ONNX names OpenVINO dropped cannot be tapped
        runnable = set(_port_info(graph_view(run_before))) & set(_port_info(graph_view(run_after)))
    common = []
    for t in tensors(after, run_after):
        if t.is_float is False or t.shape_only or outputs & set(t.names):
            continue
        key, other = None, None
        for n in t.names:
            if n in by_name and (runnable is None or n in runnable):
                key, other = n, by_name[n]
                break
        if key is None and after.format == "ir":
            pk = f"{t.node}:{t.port}"
            if pk in by_port and by_port[pk].op == t.op:
                key, other = pk, by_port[pk]
        if key is None or other.is_float is False:
            continue
        if t.numel is not None and other.numel is not None and t.numel != other.numel:
            continue
        common.append((key, t))
    return common


def _next_chunk(todo: list[int], common: list[tuple[str, Tensor]]) -> list[int]:
    """All of ``todo`` if it fits the chunk limits, else an evenly spaced sample of it that does."""
    sizes = [common[i][1].numel or _UNKNOWN_NUMEL for i in todo]
    if len(todo) <= LOCATE_CHUNK_TENSORS and sum(sizes) <= LOCATE_CHUNK_ELEMENTS:
        return list(todo)
    stride = max(1.0, len(todo) / LOCATE_CHUNK_TENSORS)
    picked, total, pos = [], 0, 0.0
    while pos < len(todo) and len(picked) < LOCATE_CHUNK_TENSORS:
        k = int(pos)
        if total + sizes[k] <= LOCATE_CHUNK_ELEMENTS or not picked:
            picked.append(todo[k])
            total += sizes[k]
        pos += stride
    return picked


def _chunk_errors(run_b: ModelHandle, run_a: ModelHandle, feeds: list[dict], runtime: str,
                  keys: list[str]) -> list[tuple[float, float]]:
    """(max rel error, max abs error) per tapped tensor over the feeds, one feed in memory at a time."""
    from ..runtime import Runner

    try:
        rb, ra = Runner(run_b, runtime, keys), Runner(run_a, runtime, keys)
    except RewriteError:
        raise
    except Exception as e:  # noqa: BLE001 - a tap the runtime refuses: report it as bad input
        raise RewriteError(f"{run_a.name}: cannot expose intermediate tensors: {e}") from e
    names = {n for n, _, _ in run_b.inputs()}
    errs = [(0.0, 0.0)] * len(keys)
    for f in feeds:
        feed = {k: v for k, v in f.items() if k in names}
        ob, oa = rb.run(feed), ra.run(feed)
        for j, k in enumerate(keys):
            a, b = ob[k], oa[k]
            if a.shape != b.shape:  # same name, different tensor: never call it a divergence
                continue
            errs[j] = (max(errs[j][0], M.rel_max(a, b)), max(errs[j][1], M.max_abs(a, b)))
    return errs


def _search(common: list[tuple[str, Tensor]], check, tol: float) -> tuple[int, float, float] | None:
    """Index of the first divergent tensor in ``common`` with its errors, checking chunk by chunk.

    Each round checks a chunk of the tensors before the earliest divergence found so far, skipping every
    tensor that is an ancestor of a tensor already found clean (if the result of a computation matches,
    its inputs are taken to match). Round one samples the whole graph, later rounds close in.
    """
    errors: dict[int, tuple[float, float]] = {}
    clean_ancestors = 0
    while True:
        bad = [i for i, (e, _) in errors.items() if e > tol]
        first = min(bad) if bad else len(common)
        todo = [i for i in range(first)
                if i not in errors and not (clean_ancestors >> common[i][1].index) & 1]
        if not todo:
            return (first, *errors[first]) if bad else None
        chunk = _next_chunk(todo, common)
        for i, e in zip(chunk, check([common[i][0] for i in chunk])):
            errors[i] = e
            if e[0] <= tol:
                clean_ancestors |= common[i][1].ancestors


def _tag_probes(common: list[tuple[str, Tensor]], after: list[Tensor], tags: dict[str, str]
                ) -> list[tuple[Tensor, int]]:
    """(tensor of a tagged node, index in ``common`` of the tensor that measures it), in topological order.

    A node the pass changed keeps its output in both graphs and is measured there; a node the pass added has
    no counterpart in the model before, so it is measured at the first shared tensor computed from it.
    """
    pos = {t.index: i for i, (_, t) in enumerate(common)}
    probes = []
    for t in after:
        if t.node not in tags or t.is_float is False or t.shape_only:
            continue
        if t.index in pos:
            probes.append((t, pos[t.index]))
            continue
        below = next((i for i, (_, c) in enumerate(common) if (c.ancestors >> t.index) & 1), None)
        if below is not None:
            probes.append((t, below))
    return probes


def _first_tagged(probes: list[tuple[Tensor, int]], common: list[tuple[str, Tensor]], check, tol: float
                  ) -> tuple[Tensor, int, float, float] | None:
    """The first probe (topological order of the tagged nodes) diverging beyond ``tol``, chunk by chunk."""
    order = list(dict.fromkeys(i for _, i in probes))
    errors: dict[int, tuple[float, float]] = {}
    while True:
        bad = [k for k, i in enumerate(order) if i in errors and errors[i][0] > tol]
        todo = [i for i in order[:min(bad) if bad else len(order)] if i not in errors]
        if not todo:
            break
        chunk = _next_chunk(todo, common)
        for i, e in zip(chunk, check([common[i][0] for i in chunk])):
            errors[i] = e
    for t, i in probes:
        if i in errors and errors[i][0] > tol:
            return t, i, *errors[i]
    return None


def _nearest_tag(node: str, v: GraphView, tags: dict[str, str], depth: int = 8) -> tuple[str, str] | None:
    """``node`` or the closest tagged node upstream of it (breadth-first over producers): (node, pass)."""
    if node in tags:
        return node, tags[node]
    frontier, seen = [node], {node}
    for _ in range(depth):
        nxt = []
        for nid in frontier:
            for t in v.by_id[nid].inputs if nid in v.by_id else ():
                p = v.producer.get(t)
                if p is None:
                    continue
                if p.id in tags:
                    return p.id, tags[p.id]
                if p.id not in seen:
                    seen.add(p.id)
                    nxt.append(p.id)
        frontier = nxt
    return None


def _finding(h: ModelHandle, tags: dict[str, str], node: str, op: str, tensor: str, err: float,
             abs_err: float) -> dict:
    res: dict[str, Any] = {"node": node, "op": op, "pass": None, "error": err, "max_abs": abs_err,
                           "tensor": tensor}
    hit = _nearest_tag(node, graph_view(h), tags)
    if hit is not None:
        res["pass"] = hit[1]
        if hit[0] != node:
            res["tagged_node"] = hit[0]  # the divergence shows at `node`, downstream of this rewritten one
    return res


def locate(before: Any, after: Any, inputs: InputSet | list[dict] | None = None, tol: float | None = None,
           tags: dict[str, str] | None = None, runtime: str = "ov", seed: int = 0) -> dict | None:
    """First node a pass changed or added (``tags``) whose output differs from ``before``'s beyond ``tol``;
    when no tagged node diverges (or nothing is tagged), the first node of ``after`` in topological order.

    A changed node is measured at its own output, an added one at the first shared tensor computed from it
    (then ``"measured_at"`` names that tensor's node). Compares the float tensors both graphs compute (same
    tensor names; IR also friendly_name:port; shape arithmetic left out) on the first ``LOCATE_FEEDS``
    inputs. Tensors are exposed in chunks of at most ``LOCATE_CHUNK_TENSORS`` tensors and
    ``LOCATE_CHUNK_ELEMENTS`` values, never all at once: the tagged nodes first, then (untagged search) a
    first chunk samples the whole graph, later ones close in on the earliest divergence, skipping ancestors
    of tensors found clean. The error is
    max |a - b| / scale(before's tensor). Returns ``{"node", "op", "pass", "error", "max_abs", "tensor",
    "checked"}`` (+ ``"tagged_node"`` when the divergent node is untagged and the nearest rewritten node
    upstream supplied the pass), or ``None`` when nothing diverges.
    """
    before, after = as_handle(before), as_handle(after)
    pairs = check_compatible(before, after)
    tol = DEFAULT_TOL if tol is None else float(tol)
    tags = after.tags() if tags is None else tags
    if inputs is None:
        inputs = verification_inputs(before, None, exact=True, seed=seed)
    feeds = (inputs.feeds if isinstance(inputs, InputSet) else list(inputs))[:LOCATE_FEEDS]
    if runtime == "both" or (runtime == "ort" and "ir" in (before.format, after.format)):
        runtime = "ov"
    run_b, run_a = before, after
    if runtime == "ov":  # convert ONNX once, not once per chunk
        run_b = before if before.format == "ir" else ModelHandle(before.ov_model(), before.source)
        run_a = after if after.format == "ir" else ModelHandle(after.ov_model(), after.source)
    common = common_tensors(before, after, run_b, run_a)
    after_tensors = tensors(after, run_a)
    chunks = []

    def check(keys: list[str]) -> list[tuple[float, float]]:
        chunks.append(len(keys))
        return _chunk_errors(run_b, run_a, feeds, runtime, keys)

    def checked() -> dict[str, int]:
        return {"tensors": sum(chunks), "of": len(common), "chunks": len(chunks)}

    tagged = _first_tagged(_tag_probes(common, after_tensors, tags), common, check, tol) if tags else None
    if tagged is not None:
        t, i, err, abs_err = tagged
        key, probe = common[i]
        res = _finding(after, tags, t.node, t.op, key, err, abs_err)
        if probe.index != t.index:
            res["measured_at"] = probe.node
        return {**res, "checked": checked()}
    hit = _search(common, check, tol)
    if hit is not None:
        i, err, abs_err = hit
        key, t = common[i]
        return {**_finding(after, tags, t.node, t.op, key, err, abs_err), "checked": checked()}
    # nothing shared diverged inside: blame the producer of the first divergent output
    rb, ra = run_feeds(run_b, feeds, runtime), run_feeds(run_a, feeds, runtime)
    producers = {n: t for t in after_tensors for n in t.names}
    for oi, (nb, na) in enumerate(pairs):
        err = max(M.rel_max(pick_output(b, nb, oi), pick_output(a, na, oi)) for b, a in zip(rb, ra))
        if err > tol:
            abs_err = max(M.max_abs(pick_output(b, nb, oi), pick_output(a, na, oi)) for b, a in zip(rb, ra))
            t = producers.get(na)
            node, op = (t.node, t.op) if t is not None else (na, "output")
            return {**_finding(after, tags, node, op, na, err, abs_err), "checked": checked()}
    return None
