"""Inputs for verification and calibration: real images preprocessed the way the model expects.

Images come from a user folder (``--calib``/``--images``) or, by default, from the photos shipped in
scikit-image. Models whose input is not a 3-channel image get seeded random inputs instead (and say so).
Preprocessing is detected from the graph: Open Model Zoo style IRs carry mean/scale (and a BGR channel
flip) inside the graph and take raw 0..255 pixels; plain exports take RGB with ImageNet mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RewriteError
from .model import ModelHandle, ir_const

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PREPROCESS_MODES = ("auto", "imagenet", "raw_rgb", "raw_bgr")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# skimage.data.cat() is chelsea again, so it is not listed twice
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "retina", "coins")
DEFAULT_DYNAMIC_HW = (288, 512)  # the users' video resolution, for models with dynamic H/W


@dataclass
class InputSet:
    """Feeds for a model: one dict {input name: array} per sample, with where they came from."""

    feeds: list[dict[str, np.ndarray]]
    source: str  # "images:<dir>", "skimage", or "random"
    names: list[str] = field(default_factory=list)  # image names, one per feed
    preprocess: str = "imagenet"
    notes: list[str] = field(default_factory=list)

    @property
    def is_images(self) -> bool:
        return self.source != "random"


def image_input(model: ModelHandle) -> tuple[str, int, int, str] | None:
    """(input name, H, W, layout) if the model has one 3-channel image input, else None."""
    ins = model.inputs()
    if len(ins) != 1:
        return None
    name, shape, dtype = ins[0]
    if len(shape) != 4 or not np.issubdtype(dtype, np.floating):
        return None
    if shape[1] == 3:
        h, w, layout = shape[2], shape[3], "NCHW"
    elif shape[3] == 3:
        h, w, layout = shape[1], shape[2], "NHWC"
    else:
        return None
    if h is None or w is None:
        h, w = DEFAULT_DYNAMIC_HW
    return name, h, w, layout


def detect_preprocess(model: ModelHandle) -> str:
    """'raw_bgr' / 'raw_rgb' when mean/scale live inside the graph (OMZ style), else 'imagenet'."""
    if model.format == "onnx":
        return "imagenet"  # exporters do not embed preprocessing; OMZ conversions are IRs
    m = model.ov
    if len(m.inputs) != 1:
        return "imagenet"
    seen_mean = flipped = False
    frontier = [t.get_node() for t in m.inputs[0].get_target_inputs()]
    for _ in range(4):  # preprocessing ops sit within a few hops of the input
        nxt = []
        for node in frontier:
            t = node.get_type_name()
            if t in ("Subtract", "Add", "Multiply", "Divide"):
                for i in range(node.get_input_size()):
                    v = ir_const(node.input_value(i).get_node())
                    if v is not None and v.size == 3 and np.max(np.abs(v)) > 20:
                        seen_mean = True
                        # OpenVINO folds a channel flip into the constants: ImageNet means in B,G,R order
                        # (first channel smallest) mean the graph expects BGR input
                        mean = np.abs(np.ravel(v))
                        if np.allclose(mean, IMAGENET_MEAN[::-1] * 255, rtol=0.02):
                            flipped = True
            elif t == "Gather":
                idx = ir_const(node.input_value(1).get_node())
                if idx is not None and list(np.ravel(idx)) == [2, 1, 0]:
                    flipped = True
            elif t in ("Split", "VariadicSplit", "Concat"):
                flipped = flipped or t == "Split"
            elif t not in ("Convert", "Reshape", "Transpose"):
                continue
            for out in node.outputs():
                nxt.extend(ti.get_node() for ti in out.get_target_inputs())
        frontier = nxt
    if seen_mean:
        return "raw_bgr" if flipped else "raw_rgb"
    return "imagenet"


def list_images(folder: str | Path) -> list[Path]:
    d = Path(folder)
    if not d.exists():
        raise RewriteError(f"{d}: image folder does not exist")
    if not d.is_dir():
        raise RewriteError(f"{d}: expected a folder of images (jpg/png)")
    files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RewriteError(f"{d}: no images (jpg/png/bmp/tif) in this folder")
    return files


def read_image(path: Path) -> np.ndarray:
    """HxWx3 uint8 RGB. Grayscale is replicated to 3 channels, alpha dropped (documented conversions)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise RewriteError(f"{path}: cannot read this image ({e})") from e


def skimage_photos() -> list[tuple[str, np.ndarray]]:
    """The real photos shipped in scikit-image (no download), as RGB uint8."""
    import skimage.data as sd

    out = []
    for n in SKIMAGE_PHOTOS:
        if n == "motorcycle":
            img = sd.stereo_motorcycle()[0]
        else:
            img = getattr(sd, n)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        out.append((n, np.ascontiguousarray(img[..., :3]).astype(np.uint8)))
    return out


def resize_crop(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize keeping aspect ratio so the image covers HxW, then centre-crop (bilinear, via Pillow)."""
    from PIL import Image

    ih, iw = img.shape[:2]
    s = max(h / ih, w / iw)
    nh, nw = max(h, round(ih * s)), max(w, round(iw * s))
    r = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))
    y0, x0 = (nh - h) // 2, (nw - w) // 2
    return r[y0:y0 + h, x0:x0 + w]


def to_tensor(img: np.ndarray, preprocess: str, layout: str = "NCHW") -> np.ndarray:
    """HxWx3 uint8 RGB → 1x3xHxW float32 (or NHWC) with the given preprocessing."""
    x = img.astype(np.float32)
    if preprocess == "imagenet":
        x = (x / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    elif preprocess == "raw_bgr":
        x = x[..., ::-1]
    elif preprocess != "raw_rgb":
        raise RewriteError(f"unknown preprocessing '{preprocess}' (use {', '.join(PREPROCESS_MODES)})")
    x = np.ascontiguousarray(x[None])
    return x if layout == "NHWC" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def random_feeds(model: ModelHandle, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        f = {}
        for name, shape, dtype in model.inputs():
            dims = [d if d is not None else (1 if i == 0 else 32) for i, d in enumerate(shape)]
            f[name] = rng.standard_normal(dims).astype(dtype if np.issubdtype(dtype, np.floating) else np.float32)
        feeds.append(f)
    return feeds


def calibration_set(model: ModelHandle, folder: str | Path | None = None, count: int | None = None,
                    seed: int = 0, preprocess: str = "auto", cache: dict | None = None) -> InputSet:
    """Real-image feeds for ``model`` (user folder, else scikit-image photos), or seeded random ones."""
    spec = image_input(model)
    key = (str(folder), count, seed, preprocess, repr(model.inputs()), spec)
    if cache is not None and key in cache:
        return cache[key]
    if spec is None:
        desc = ", ".join(f"{n}{list(s)}" for n, s, _ in model.inputs())
        result = InputSet(random_feeds(model, count or 4, seed), "random",
                          notes=[f"model input {desc} is not an image: using seeded random inputs "
                                 f"(seed {seed})"])
    else:
        name, h, w, layout = spec
        pre = detect_preprocess(model) if preprocess == "auto" else preprocess
        if pre not in PREPROCESS_MODES[1:]:
            raise RewriteError(f"unknown preprocessing '{preprocess}' (use {', '.join(PREPROCESS_MODES)})")
        notes = []
        if folder is not None:
            files = list_images(folder)
            images = [(p.name, read_image(p)) for p in files]
            source = f"images:{folder}"
        else:
            images = skimage_photos()
            source = "skimage"
            notes.append("no image folder given: using the photos shipped with scikit-image; "
                         "a sample of your own scenes calibrates and verifies better")
        if count is not None:
            images = images[:count]
        feeds = [{name: to_tensor(resize_crop(img, h, w), pre, layout)} for _, img in images]
        result = InputSet(feeds, source, [n for n, _ in images], pre, notes)
    if cache is not None:
        cache[key] = result
    return result
