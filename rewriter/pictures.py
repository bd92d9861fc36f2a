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


def _lut() -> np.ndarray:
    try:
        import matplotlib

        return (matplotlib.colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    except Exception:  # noqa: BLE001 - matplotlib missing or broken: grey is still a picture
        g = np.arange(256, dtype=np.uint8)
        return np.stack([g, g, g], axis=1)


def colorize(m: np.ndarray, lo: float, hi: float, lut: np.ndarray | None = None) -> np.ndarray:
    """HxW floats → HxWx3 uint8 through ``lut`` with ``lo``..``hi`` mapped to its ends."""
    lut = _lut() if lut is None else lut
    scale = (hi - lo) or 1.0
    idx = np.clip((m - lo) / scale * 255.0, 0, 255).astype(np.uint8)
    rgb = lut[idx]
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
    lut = _lut()
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in image) or "worst"
    out = {"image": image, "range": [lo, hi], "error_max": emax}
    for key, arr, (l0, h0) in (("before_png", b, (lo, hi)), ("after_png", a, (lo, hi)),
                               ("error_png", err, (0.0, emax))):
        path = d / f"{stem}_{key.removesuffix('_png')}.png"
        Image.fromarray(colorize(arr, l0, h0, lut)).save(path)
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
    worst, typical = order[-1], order[len(order) // 2]
    return [("worst", worst)] + ([("typical", typical)] if typical != worst else [])


def comparison_pictures(original: object, final: object, feeds: list[dict], names: list[str], folder: str | Path,
                        runtime: str = "ov") -> list[dict]:
    """Run both models on ``feeds`` (the test split) and write before | after | |error| PNGs for the worst and a
    typical image. Each dict is :func:`save_worst_pictures`' plus ``"role"``. Only called when pictures are
    asked for (an HTML report), so a run without them costs no extra inference."""
    from .runtime import run

    rb, ra = run(original, feeds, runtime), run(final, feeds, runtime)
    first = lambda outs: [np.asarray(next(iter(o.values()))) for o in outs]  # noqa: E731 - the depth output
    befores, afters = first(rb), first(ra)
    names = list(names) or [f"input {i}" for i in range(len(feeds))]
    out = []
    for role, i in worst_and_typical(befores, afters, names):
        d = save_worst_pictures(befores[i], afters[i], folder, image=f"{role}_{names[i]}")
        d["image"], d["role"] = names[i], role
        out.append(d)
    return out
