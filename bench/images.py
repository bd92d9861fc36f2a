"""Images the bench uses: a calibration folder, held-out evaluation photos, and the ground-truth pair.

The tool's default fallback calibrates on the scikit-image photos; the bench instead splits the photos that
ship with scikit-image (no download) into a calibration folder (``calib``), a held-out folder the tool
splits into its validation and test splits (``images``), and the bench's own held-out photos for fidelity,
so nothing is measured on the images refit and INT8 were calibrated on.
Ground truth: the Middlebury 2014 motorcycle pair (left view + disparity, inf = invalid).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CALIB_PHOTOS = ("astronaut", "coffee", "chelsea", "retina", "hubble_deep_field")
# the tool's own held-out folder (--images): it splits these into validation (gates) and test (headline)
HELDOUT_PHOTOS = ("rocket", "coins", "moon", "gravel")
EVAL_PHOTOS = ("camera", "motorcycle_right", "immunohistochemistry", "clock")
GT_NAME = "motorcycle_left"


def photo(name: str) -> np.ndarray:
    """An HxWx3 uint8 RGB photo from scikit-image by name (grayscale replicated, alpha dropped)."""
    import skimage.data as sd

    if name.startswith("motorcycle_"):
        left, right, _ = sd.stereo_motorcycle()
        img = left if name.endswith("left") else right
    else:
        img = getattr(sd, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def write_folder(folder: Path, names: tuple[str, ...] | list[str]) -> Path:
    """Write the named photos as PNGs into ``folder`` (once); returns the folder."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        p = folder / f"{n}.png"
        if not p.exists():
            Image.fromarray(photo(n)).save(p)
    return folder


def gt_disparity() -> tuple[np.ndarray, np.ndarray]:
    """(left RGB uint8, ground-truth disparity float32 with inf where unknown) of the motorcycle pair."""
    import skimage.data as sd

    left, _, disp = sd.stereo_motorcycle()
    return np.ascontiguousarray(left[..., :3]), np.asarray(disp, dtype=np.float32)


def resize_crop_disparity(disp: np.ndarray, h: int, w: int) -> np.ndarray:
    """Disparity resampled with the same cover-resize + centre-crop geometry as ``rewriter.inputs.resize_crop``.

    Nearest neighbour, so invalid (inf) pixels stay invalid and are never blended into valid ones.
    Disparity values are not rescaled: the metrics align scale and shift anyway.
    """
    ih, iw = disp.shape[:2]
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    # pixel-centre nearest sampling, matching PIL's resize grid
    ys = np.minimum(((np.arange(nh) + 0.5) * ih / nh).astype(int), ih - 1)
    xs = np.minimum(((np.arange(nw) + 0.5) * iw / nw).astype(int), iw - 1)
    big = disp[ys][:, xs]
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return np.ascontiguousarray(big[y0:y0 + h, x0:x0 + w])
