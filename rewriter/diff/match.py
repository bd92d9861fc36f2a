"""Matching the nodes of two normalised graphs by connectivity, and pairing what was removed with what replaced it.

Nodes are matched by connectivity, not by name, so renames by exporters and passes do not break the diff:
anchors are the graph inputs/outputs and ops whose weights hash the same (after FP16 rounding, so an
FP16-compressed IR matches its FP32 source); matches then propagate to producers and consumers of equal
op "kind" (op type, and for convolutions the kernel size and depthwise/grouped/full form). Names only break
ties and seed what connectivity cannot reach.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from .graph import PSEUDO_OPS, Graph, Node

COMMUTATIVE = {"Add", "Mul", "Max", "Min", "Sum", "And", "Or", "Equal"}


def match(a: Graph, b: Graph) -> dict[int, Node]:
    """{id(node of a): its node in b} for every node the two graphs share (pseudo input/output nodes too)."""
    return _Matcher(a, b).run()


class _Matcher:
    """Pairs nodes of ``a`` and ``b`` (``ab``/``ba`` by ``id``): anchors first, then propagation."""

    def __init__(self, a: Graph, b: Graph):
        self.a, self.b = a, b
        self.ab: dict[int, Node] = {}
        self.ba: dict[int, Node] = {}
        self.queue: list[tuple[Node, Node]] = []

    def pair(self, x: Node, y: Node) -> bool:
        if id(x) in self.ab or id(y) in self.ba or x.kind != y.kind:
            return False
        self.ab[id(x)], self.ba[id(y)] = y, x
        self.queue.append((x, y))
        return True

    def free_a(self, n: Node) -> bool:
        return id(n) not in self.ab

    def free_b(self, n: Node) -> bool:
        return id(n) not in self.ba

    def run(self) -> dict[int, Node]:
        self.anchor_io()
        self.anchor_unique(lambda n: (n.kind, tuple(c.digest for c in n.consts)) if n.consts else None)
        self.propagate()
        self.anchor_unique(self._name_keys, consistent=True)
        self.propagate()
        self.match_by_producers()
        return self.ab

    # anchors
    def anchor_io(self) -> None:
        for op in PSEUDO_OPS:
            xs = [n for n in self.a.nodes if n.op == op]
            ys = [n for n in self.b.nodes if n.op == op]
            if len(xs) == len(ys):
                for x, y in zip(xs, ys):
                    self.pair(x, y)
            else:  # different arity: match the ones whose tensor names agree
                for x in xs:
                    y = next((y for y in ys if self.free_b(y) and x.aliases & y.aliases), None)
                    if y is not None:
                        self.pair(x, y)

    @staticmethod
    def _name_keys(n: Node) -> list:
        return [(n.kind, a) for a in sorted(n.aliases)]

    def anchor_unique(self, key, consistent: bool = False) -> None:
        """Pair free nodes whose key is unique on both sides (key may return one key or a list)."""
        def index(nodes, free):
            idx: dict[Any, list[Node]] = defaultdict(list)
            for n in nodes:
                if n.pseudo or not free(n):
                    continue
                ks = key(n)
                for k in (ks if isinstance(ks, list) else [ks]):
                    if k is not None:
                        idx[k].append(n)
            return idx
        ia, ib = index(self.a.nodes, self.free_a), index(self.b.nodes, self.free_b)
        for k, xs in ia.items():
            ys = ib.get(k, [])
            if len(xs) == 1 and len(ys) == 1 and self.free_a(xs[0]) and self.free_b(ys[0]):
                if not consistent or self.consistent(xs[0], ys[0]):
                    self.pair(xs[0], ys[0])

    def consistent(self, x: Node, y: Node) -> bool:
        """No matched producer of x maps to something other than the producer on the same port of y."""
        for i, t in enumerate(x.inputs):
            px = self.a.producer.get(t)
            if px is None or self.free_a(px[0]):
                continue
            if i >= len(y.inputs):
                return False
            py = self.b.producer.get(y.inputs[i])
            if py is not None and self.ab[id(px[0])] is not py[0]:
                return False
        return True

    # propagation through producers and consumers
    def propagate(self) -> None:
        while self.queue:
            x, y = self.queue.pop()
            self._producers(x, y)
            self._consumers(x, y)

    def _producers(self, x: Node, y: Node) -> None:
        px = [self.a.producer.get(t, (None, 0))[0] for t in x.inputs]
        py = [self.b.producer.get(t, (None, 0))[0] for t in y.inputs]
        if len(px) == len(py):
            for u, v in zip(px, py):
                if u is not None and v is not None and self.free_a(u) and self.free_b(v) and u.kind == v.kind:
                    self.pair(u, v)
        if x.op in COMMUTATIVE or len(px) != len(py):  # fall back to unique kinds among the free producers
            self._pair_groups([u for u in px if u is not None and self.free_a(u)],
                              [v for v in py if v is not None and self.free_b(v)])

    def _consumers(self, x: Node, y: Node) -> None:
        for tx, ty in zip(x.outputs, y.outputs):
            cx = [n for n, _ in self.a.consumers.get(tx, []) if self.free_a(n)]
            cy = [n for n, _ in self.b.consumers.get(ty, []) if self.free_b(n)]
            self._pair_groups(cx, cy)

    def _pair_groups(self, xs: list[Node], ys: list[Node]) -> None:
        """Pair nodes of equal kind: unique kinds directly; equal-size groups by weights, then by name."""
        gx: dict[tuple, list[Node]] = defaultdict(list)
        gy: dict[tuple, list[Node]] = defaultdict(list)
        for n in dict.fromkeys(xs):
            gx[n.kind].append(n)
        for n in dict.fromkeys(ys):
            gy[n.kind].append(n)
        for k, group_x in gx.items():
            group_y = gy.get(k, [])
            if len(group_x) == 1 and len(group_y) == 1:
                self.pair(group_x[0], group_y[0])
                continue
            for keyf in (lambda n: tuple(c.digest for c in n.consts), lambda n: n.name,
                         lambda n: tuple(c.shape for c in n.consts)):
                fx, fy = defaultdict(list), defaultdict(list)
                for n in group_x:
                    if self.free_a(n):
                        fx[keyf(n)].append(n)
                for n in group_y:
                    if self.free_b(n):
                        fy[keyf(n)].append(n)
                for kk, u in fx.items():
                    if len(u) == 1 and len(fy.get(kk, [])) == 1:
                        self.pair(u[0], fy[kk][0])

    def match_by_producers(self) -> None:
        """Last resort in topological order: free nodes of equal kind fed by the same matched producers."""
        changed = True
        while changed:
            changed = False
            index: dict[tuple, list[Node]] = defaultdict(list)
            for y in self.b.ops:
                if self.free_b(y):
                    src = tuple(sorted(id(self.b.producer[t][0]) for t in y.inputs if t in self.b.producer))
                    index[(y.kind, src)].append(y)
            for x in self.a.ops:
                if not self.free_a(x):
                    continue
                prods = [self.a.producer[t][0] for t in x.inputs if t in self.a.producer]
                if not prods or any(self.free_a(p) for p in prods):
                    continue
                src = tuple(sorted(id(self.ab[id(p)]) for p in prods))
                ys = index.get((x.kind, src), [])
                free = [y for y in ys if self.free_b(y)]
                if len(free) == 1 and self.pair(x, free[0]):
                    changed = True
            self.propagate()


def _regions(g: Graph, free: set[int]) -> list[list[Node]]:
    """Connected groups of unmatched nodes (through shared tensors), in graph order."""
    parent = {id(n): id(n) for n in g.nodes if id(n) in free}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for n in g.nodes:
        if id(n) not in free:
            continue
        for t in n.inputs:
            p = g.producer.get(t)
            if p and id(p[0]) in free:
                parent[find(id(n))] = find(id(p[0]))
    groups: dict[int, list[Node]] = defaultdict(list)
    for n in g.nodes:
        if id(n) in free:
            groups[find(id(n))].append(n)
    return list(groups.values())


def _boundary(g: Graph, region: list[Node]) -> tuple[set[int], set[int]]:
    ids = {id(n) for n in region}
    prods, cons = set(), set()
    for n in region:
        for t in n.inputs:
            p = g.producer.get(t)
            if p and id(p[0]) not in ids:
                prods.add(id(p[0]))
        for t in n.outputs:
            for c, _ in g.consumers.get(t, []):
                if id(c) not in ids:
                    cons.add(id(c))
    return prods, cons


def replacements(a: Graph, b: Graph, ab: dict[int, Node]) -> list[dict[str, Any]]:
    """Pair regions of removed nodes with the regions of added nodes that took their place."""
    free_a = {id(n) for n in a.ops if id(n) not in ab}
    matched_b = {id(v) for v in ab.values()}
    free_b = {id(n) for n in b.ops if id(n) not in matched_b}
    ra, rb = _regions(a, free_a), _regions(b, free_b)
    bounds_b = [_boundary(b, r) for r in rb]
    out, used = [], set()
    for r in ra:
        pa, ca = _boundary(a, r)
        pa_b = {id(ab[i]) for i in pa if i in ab}
        ca_b = {id(ab[i]) for i in ca if i in ab}
        hits = [j for j, (pb, cb) in enumerate(bounds_b) if j not in used and pa_b & pb and ca_b & cb]
        if hits:
            used.update(hits)
            out.append({"removed": [n.name for n in r], "added": [n.name for j in hits for n in rb[j]]})
    return out
