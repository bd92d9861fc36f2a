"""Absolute accuracy against ground-truth disparity (``rewrite verify --gt``): readers and the comparison.

Pairs are ``IMAGE:DISPARITY`` files (.npy, .pfm or a 16-bit PNG disparity map of the image's size) or
``motorcycle``, the Middlebury pair shipped with scikit-image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as M
from ..errors import RewriteError
from ..inputs import detect_preprocess, image_input, read_image, resize_crop, to_tensor
from ..model import ModelHandle
from .comparison import DEPTH_KEYS, check_compatible, pick_output, run_feeds


def read_disparity(path: Path) -> np.ndarray:
    """A 2-D float32 disparity map from .npy, .pfm or an image file (first channel)."""
    if not path.exists():
        raise RewriteError(f"{path}: ground-truth disparity file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            d = np.load(path)
        elif suffix == ".pfm":
            d = read_pfm(path)
        else:
            from PIL import Image

            with Image.open(path) as im:
                d = np.asarray(im, dtype=np.float32)
    except RewriteError:
        raise
    except Exception as e:
        raise RewriteError(f"{path}: cannot read this disparity map ({e}); use .npy, .pfm or a 16-bit PNG") from e
    d = np.asarray(d, dtype=np.float32)
    if d.ndim == 3:
        d = d[..., 0]
    if d.ndim != 2:
        raise RewriteError(f"{path}: disparity must be a 2-D map, got shape {list(d.shape)}")
    return d


def read_pfm(path: Path) -> np.ndarray:
    """The first channel of a PFM file, rows top to bottom, as float32."""
    with open(path, "rb") as f:
        header = f.readline().strip()
        if header not in (b"Pf", b"PF"):
            raise RewriteError(f"{path}: not a PFM file (header {header[:10]!r})")
        w, h = (int(x) for x in f.readline().split())
        scale = float(f.readline().strip())
        data = np.frombuffer(f.read(), dtype="<f4" if scale < 0 else ">f4")
    channels = 3 if header == b"PF" else 1
    d = data[: w * h * channels].reshape(h, w, channels)[..., 0]
    return np.flipud(d).astype(np.float32)  # PFM stores rows bottom to top


def _nearest_crop(d: np.ndarray, h: int, w: int) -> np.ndarray:
    """The geometry of ``rewriter.inputs.resize_crop`` (cover, centre crop) with nearest sampling."""
    ih, iw = d.shape
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    rows = np.minimum(((np.arange(nh) + 0.5) * ih / nh).astype(int), ih - 1)
    cols = np.minimum(((np.arange(nw) + 0.5) * iw / nw).astype(int), iw - 1)
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return d[rows[y0:y0 + h]][:, cols[x0:x0 + w]]


def ground_truth_pairs(specs: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``["motorcycle"]`` or ``["IMAGE:DISPARITY", ...]`` → [(name, RGB uint8 image, disparity)].

    Disparity pixels that are not finite or ≤ 0 are invalid (Middlebury uses inf, KITTI 0).
    """
    out = []
    for spec in specs:
        if spec == "motorcycle":
            import skimage.data as sd

            left, _right, disp = sd.stereo_motorcycle()
            out.append(("motorcycle", np.ascontiguousarray(left[..., :3]).astype(np.uint8),
                        np.asarray(disp, np.float32)))
            continue
        img, sep, disp = spec.rpartition(":")
        if not sep or not img or not disp:
            raise RewriteError(f"--gt {spec!r}: expected IMAGE:DISPARITY (e.g. left.png:disp0.pfm) or motorcycle")
        image = read_image(Path(img))
        d = read_disparity(Path(disp))
        if d.shape != image.shape[:2]:
            raise RewriteError(f"--gt {spec}: disparity is {d.shape[1]}x{d.shape[0]} but the image is "
                               f"{image.shape[1]}x{image.shape[0]}")
        out.append((Path(img).name, image, d))
    return out


def ground_truth(before: ModelHandle, after: ModelHandle, specs: list[str], runtime: str = "ov") -> dict:
    """Absolute accuracy of both models against ground-truth disparity (AbsRel, delta1 after alignment)."""
    spec = image_input(before)
    if spec is None:
        raise RewriteError(f"{before.name}: --gt needs a model with one 3-channel image input")
    name, h, w, layout = spec
    pre = detect_preprocess(before)
    pairs = ground_truth_pairs(specs)
    feeds = [{name: to_tensor(resize_crop(img, h, w), pre, layout)} for _, img, _ in pairs]
    out_b, out_a = check_compatible(before, after)[0]
    rb, ra = run_feeds(before, feeds, runtime), run_feeds(after, feeds, runtime)
    rows = []
    for (gname, _, disp), b, a in zip(pairs, rb, ra):
        row: dict[str, Any] = {"image": gname}
        for side, res, oname in (("before", b, out_b), ("after", a, out_a)):
            pred = pick_output(res, oname, 0)
            pred2 = pred.reshape(-1, pred.shape[-2], pred.shape[-1])[0] if pred.ndim >= 2 else pred
            gt = _nearest_crop(_nearest_crop(disp, h, w), *pred2.shape) if pred2.ndim == 2 else None
            if gt is None or gt.size != pred2.size:
                raise RewriteError(f"{before.name}: output shape {list(pred.shape)} is not a depth map")
            valid = np.isfinite(gt) & (gt > 0)
            if not valid.any():
                raise RewriteError(f"--gt {gname}: no valid (finite, > 0) disparity in the model's view")
            dm = M.depth_metrics(gt, pred2, mask=valid)
            row[side] = {"absrel": dm["absrel"], "delta1": dm["delta1"], "valid": dm["valid"]}
        rows.append(row)
    summary = {side: {k: float(np.mean([r[side][k] for r in rows])) for k in DEPTH_KEYS}
               for side in ("before", "after")}
    return {"pairs": rows, **summary,
            "note": "AbsRel and delta1 of each model's disparity against ground truth after least-squares "
                    "scale+shift alignment, depth floored at 1% of the largest ground-truth disparity"}
