"""The diff report: op counts, matched/added/removed/changed nodes with attribute and weight changes, parameter
and MAC totals, pass tags, and optionally output fidelity (``rewriter.verify``) and predicted latency
(``rewriter.cost``).
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

import numpy as np

from ..errors import RewriteError
from ..model import ModelHandle
from .graph import Const, Graph, Node, build_graph
from .match import match, replacements
from .values import report_value, small_value

WEIGHT_RTOL = 1e-3  # weight changes below this × the largest weight are rounding (FP16 storage: ≤ 4.9e-4)
_NO_DEFAULT = object()


def _load(m: Any, which: str) -> ModelHandle:
    if isinstance(m, ModelHandle):
        return m
    try:
        return ModelHandle.load(m)
    except (OSError, RuntimeError) as e:  # unreadable file, or OpenVINO refusing it
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
        out[key] = (repr(small_value(c.value)) if c.value is not None else c.digest, _const_view(c))
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
        return small_value(c.value)
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
    ab = match(ga, gb)
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
    replaced = replacements(ga, gb, ab)

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
    return report_value(report)


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
    """``rewriter.verify.verify_models`` of the two models (imported when called: tests may replace it)."""
    from ..verify import verify_models

    kwargs: dict[str, Any] = {"images": images}
    if pictures is not None:
        kwargs["pictures"] = str(pictures)
    try:
        res = verify_models(ha, hb, **kwargs)
    except (RuntimeError, ValueError) as e:  # the structural diff stays useful (bugs and bad input still raise)
        notes.append(f"fidelity: comparison failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
        return {}
    return report_value(res)


def _latency(ha: ModelHandle, hb: ModelHandle, targets: tuple[str, ...], notes: list[str]) -> dict[str, Any]:
    from ..cost import compare

    out = {}
    for t in targets:
        try:
            out[t] = report_value(compare(ha, hb, t))
        except RewriteError:
            raise
        except (RuntimeError, ValueError) as e:  # one target failing must not hide the others (bugs still raise)
            notes.append(f"latency[{t}]: prediction failed: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return out

