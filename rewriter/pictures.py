"""PNGs of the worst verification image: before depth, after depth, and |after - before|.

Before and after share one colour scale (the before output's range) so a shift in depth is visible; the error
map has its own scale, 0 to its maximum, stated in the returned dict. Colours come from matplotlib's
``inferno`` map when matplotlib is installed, else grey levels (Pillow alone).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import RewriteError

MIN_SIDE = 256  # small outputs are enlarged (nearest) so a 32x32 map is still readable


def as_map(a: np.ndarray) -> np.ndarray:
    """A model output as one 2-D map: squeeze batch/channel of 1, else the first channel of the first item."""
    x = np.asarray(a, dtype=np.float64)
    if x.ndim < 2:
        raise RewriteError(f"output of shape {list(x.shape)} is not an image-like map; no pictures")
    return np.nan_to_num(x.reshape(-1, x.shape[-2], x.shape[-1])[0])


def lut() -> np.ndarray:
    """The colour map as 256 RGB rows (uint8): matplotlib's ``inferno``, else grey levels."""
    try:
        import matplotlib

        return (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    except Exception:  # noqa: BLE001 - matplotlib missing or broken: grey is still a picture
        g = np.arange(256, dtype=np.uint8)
        return np.stack([g, g, g], axis=1)


def colorize(m: np.ndarray, lo: float, hi: float, colours: np.ndarray | None = None) -> np.ndarray:
    """HxW floats → HxWx3 uint8 through ``colours`` (default :func:`lut`) with ``lo``..``hi`` mapped to its ends."""
    table = lut() if colours is None else colours
    scale = (hi - lo) or 1.0
    idx = np.clip((m - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    rgb = table[idx]
    k = max(1, int(np.ceil(MIN_SIDE / max(1, min(m.shape)))))
    return np.repeat(np.repeat(rgb, k, axis=0), k, axis=1) if k > 1 else rgb


def save_worst_pictures(before: np.ndarray, after: np.ndarray, folder: str | Path, image: str = "worst"
                        ) -> dict:
    """Write ``<image>_before.png``, ``<image>_after.png``, ``<image>_error.png`` into ``folder``.

    Returns ``{"image", "before_png", "after_png", "error_png", "range": [lo, hi], "error_max"}``.
    """
    from PIL import Image

    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RewriteError(f"{d}: cannot create the pictures folder ({e.strerror})") from e
    b, a = as_map(before), as_map(after)
    if b.shape != a.shape:
        raise RewriteError(f"pictures: before map {b.shape} and after map {a.shape} differ in shape")
    lo, hi = float(b.min()), float(b.max())
    err = np.abs(a - b)
    emax = float(err.max())
    colours = lut()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in image) or "worst"
    out = {"image": image, "range": [lo, hi], "error_max": emax}
    for key, arr, (l0, h0) in (("before_png", b, (lo, hi)), ("after_png", a, (lo, hi)),
                               ("error_png", err, (0.0, emax))):
        path = d / f"{stem}_{key.removesuffix('_png')}.png"
        Image.fromarray(colorize(arr, l0, h0, colours)).save(path)
        out[key] = str(path)
    return out


def worst_and_typical(befores: list[np.ndarray], afters: list[np.ndarray], names: list[str]) -> list[tuple[str, int]]:
    """[("worst", i), ("typical", j)]: the image with the largest relative L2 error and the one with the median
    error (the typical one is left out when it is the worst, e.g. a single image)."""
    errs = []
    for b, a in zip(befores, afters):
        mb, ma = as_map(b), as_map(a)
        errs.append(float(np.linalg.norm(ma - mb) / (np.linalg.norm(mb) or 1.0)))
    if not errs:
        return []
    order = sorted(range(len(errs)), key=lambda i: errs[i])
    worst, typical = order[-1], order[(len(order) - 1) // 2]  # the lower median: two images give both
    return [("worst", worst)] + ([("typical", typical)] if typical != worst else [])


def comparison_pictures(original: object, final: object, feeds: list[dict], names: list[str], folder: str | Path,
                        runtime: str = "ov") -> list[dict]:
    """Run both models on ``feeds`` (the test split) and write before | after | |error| PNGs for the worst and a
    typical image. Each dict is :func:`save_worst_pictures`' plus ``"role"``. Only called when pictures are
    asked for (an HTML report), so a run without them costs no extra inference."""
    from .runtime import run

    rb, ra = run(original, feeds, runtime), run(final, feeds, runtime)
    first = lambda outs: [np.asarray(next(iter(o.values()))) for o in outs]  # noqa: E731 - the depth output
    return pictures_from_outputs(first(rb), first(ra), names, folder)


def pictures_from_outputs(befores: list[np.ndarray], afters: list[np.ndarray], names: list[str],
                          folder: str | Path) -> list[dict]:
    """Before | after | |error| PNGs of the worst and a typical image from outputs already computed (one depth
    map per image); dicts as :func:`comparison_pictures`."""
    names = list(names) or [f"input {i}" for i in range(len(befores))]
    out = []
    for role, i in worst_and_typical(befores, afters, names):
        d = save_worst_pictures(befores[i], afters[i], folder, image=f"{role}_{names[i]}")
        d["image"], d["role"] = names[i], role
        out.append(d)
    return out


# ---- the changed subgraph of a diff ------------------------------------------------------------------------
COLORS = {"removed": "#e8a0a0", "added": "#9fd8a8", "changed": "#f3c97a", "context": "#e4e7eb"}
MAX_NODES = 60  # per side: a bigger change is listed in the tables, drawn only in part


def _side(view: object, marked: dict[str, str]) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """Marked nodes and their direct neighbours of one graph: ({id: (label, status)}, [(src, dst)])."""
    nodes = list(view)
    by_key = {}
    for n in nodes:
        by_key[n.name or n.id] = n
        by_key.setdefault(n.id, n)
    producer = {t: n for n in nodes for t in n.outputs if t}
    keep = {by_key[k].id: s for k, s in marked.items() if k in by_key}
    ids = list(keep)[:MAX_NODES]
    ctx: dict[str, str] = {}
    for n in nodes:
        srcs = [producer[t] for t in n.inputs if t in producer]
        if n.id in ids:
            ctx.update({p.id: "context" for p in srcs if p.id not in keep})
        elif any(p.id in ids for p in srcs):
            ctx[n.id] = "context"
    status = {**{i: keep[i] for i in ids}, **{k: v for k, v in ctx.items() if k not in keep}}
    out = {n.id: (f"{n.name or n.id}\n{n.op_type}", status[n.id]) for n in nodes if n.id in status}
    edges = [(producer[t].id, n.id) for n in nodes if n.id in out for t in n.inputs
             if t in producer and producer[t].id in out]
    return out, edges


def diff_graphs(before: object, after: object, report: dict) -> dict:
    """The changed subgraph of a diff report: per side, marked nodes (removed / added / changed) with their
    direct neighbours as context. ``before``/``after`` are models (paths or handles)."""
    from .graph import view
    from .model import ModelHandle

    before = before if isinstance(before, ModelHandle) else ModelHandle.load(before)
    after = after if isinstance(after, ModelHandle) else ModelHandle.load(after)
    mb = {n.get("name"): "removed" for n in report.get("removed") or []}
    ma = {n.get("name"): "added" for n in report.get("added") or []}
    for c in report.get("changed") or []:
        mb[c.get("before")] = "changed"
        ma[c.get("after")] = "changed"
    out = {}
    for side, model, marked in (("before", before, mb), ("after", after, ma)):
        nodes, edges = _side(view(model), {k: v for k, v in marked.items() if k})
        out[side] = {"nodes": nodes, "edges": edges}
    return out


def _dot_text(g: dict) -> str:
    q = lambda s: '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'  # noqa: E731
    lines = ["digraph diff {", "rankdir=LR; node [shape=box style=filled fontname=Helvetica fontsize=10];"]
    for side in ("after", "before"):  # dot stacks the clusters of a left-to-right graph last-first
        lines.append(f"subgraph cluster_{side} {{ label={q(side)};")
        for nid, (label, status) in g[side]["nodes"].items():
            lines.append(f"{q(side + ':' + nid)} [label={q(label)} fillcolor={q(COLORS[status])}];")
        lines += [f"{q(side + ':' + a)} -> {q(side + ':' + b)};" for a, b in g[side]["edges"]]
        lines.append("}")
    lines.append("}")
    return "\n".join(lines)


def _layers(nodes: dict, edges: list[tuple[str, str]]) -> dict[str, int]:
    depth = {n: 0 for n in nodes}
    for _ in range(len(nodes)):  # longest-path layering; the subgraph is small and acyclic
        changed = False
        for a, b in edges:
            if depth[b] < depth[a] + 1:
                depth[b], changed = depth[a] + 1, True
        if not changed:
            break
    return depth


def draw_diff(g: dict, path: str | Path) -> str:
    """Draw the changed subgraph (:func:`diff_graphs`) as a PNG with graphviz ``dot`` when on PATH, else a
    matplotlib sketch (layered by depth). Returns the tool used: "dot" or "matplotlib"."""
    import shutil
    import subprocess

    path = Path(path)
    dot = shutil.which("dot")
    if dot:
        try:
            subprocess.run([dot, "-Tpng", "-Gdpi=80", "-o", str(path)], input=_dot_text(g), text=True,
                           capture_output=True, timeout=60, check=True)
            return "dot"
        except (subprocess.SubprocessError, OSError):  # a broken graphviz: fall back to the sketch
            pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = [s for s in ("before", "after") if g[s]["nodes"]] or ["before"]
    tall = max((max(_layers(g[s]["nodes"], g[s]["edges"]).values(), default=0) + 1) for s in sides)
    fig, axes = plt.subplots(1, len(sides), figsize=(6 * len(sides), max(2.5, 0.9 * tall)), squeeze=False)
    for ax, side in zip(axes[0], sides):
        nodes, edges = g[side]["nodes"], g[side]["edges"]
        depth = _layers(nodes, edges)
        rows: dict[int, list[str]] = {}
        for n in nodes:
            rows.setdefault(depth[n], []).append(n)
        pos = {n: ((i + 1) / (len(r) + 1), -d) for d, r in rows.items() for i, n in enumerate(r)}
        for a, b in edges:
            ax.annotate("", xy=pos[b], xytext=pos[a], arrowprops={"arrowstyle": "->", "color": "#666"})
        for n, (label, status) in nodes.items():
            ax.text(*pos[n], label, ha="center", va="center", fontsize=7,
                    bbox={"boxstyle": "round", "fc": COLORS[status], "ec": "#555"})
        ax.set_title(side)
        ax.set_xlim(0, 1)
        ax.set_ylim(-(max(depth.values(), default=0)) - 0.6, 0.6)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return "matplotlib"
