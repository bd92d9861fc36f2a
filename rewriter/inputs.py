"""Inputs for verification and calibration: real images preprocessed the way the model expects.

Images come from a user folder (``--calib``/``--images``) or, by default, from the photos shipped in
scikit-image. Models whose input is not a 3-channel image get seeded random inputs instead (and say so).
Preprocessing is detected from the graph: Open Model Zoo style IRs carry mean/scale (and a BGR channel
flip) inside the graph and take raw 0..255 pixels; plain exports take RGB with ImageNet mean/std.

``split_inputs`` divides the images into three disjoint splits, by whole image, so nothing is judged on
what it was fitted on: **calibration** (refit, NNCF calibration, compensation fit), **validation** (the
per-pass gates and any selection) and **test** (the headline fidelity of the final model vs the original).

* ``--calib DIR`` and ``--images DIR``: calib → calibration; images → validation and test (half each,
  validation takes the odd one; at least 2 images);
* one folder (either option): shuffled with the seed by file name; test and validation take a quarter each
  (at least 1), calibration the rest (at least 3 images in all);
* no folder: the scikit-image photos, a fixed split (``DEFAULT_SPLIT``): calibration astronaut, coffee,
  coins; validation chelsea, retina, camera, clock; test rocket, motorcycle, hubble_deep_field,
  immunohistochemistry;
* non-image models: ``RANDOM_FEEDS`` seeded random inputs per split, from three disjoint seed ranges
  (``seed + k * RANDOM_SEED_STRIDE + i`` for split k, feed i).

Too few images raise ``RewriteError`` saying how many are needed; ``allow_overlap`` lets the splits share
images instead (and ``Splits.overlap`` says so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import RewriteError
from .model import ModelHandle

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
PREPROCESS_MODES = ("auto", "imagenet", "raw_rgb", "raw_bgr")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
# skimage.data.cat() is chelsea again, so it is not listed twice
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "motorcycle", "retina", "coins", "camera", "clock",
                  "hubble_deep_field", "immunohistochemistry")
DEFAULT_DYNAMIC_HW = (288, 512)  # the users' video resolution, for models with dynamic H/W
SPLITS = ("calibration", "validation", "test")
# the 11 default photos, fixed so reports can say which photo judged what; disjoint scenes (no crops or flips
# of one photo in two splits); validation has four so the search's selection is not fitted to two scenes
DEFAULT_SPLIT = {"calibration": ("astronaut", "coffee", "coins"),
                 "validation": ("chelsea", "retina", "camera", "clock"),
                 "test": ("rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry")}
HELDOUT_FRACTION = 0.25  # one folder: the share of images for validation, and again for test
RANDOM_FEEDS = 4  # random feeds per split for non-image models
RANDOM_SEED_STRIDE = 1_000_000  # split k draws its feeds from seeds seed + k * stride + i
EXACT_RANDOM_OFFSET = RANDOM_SEED_STRIDE // 2  # extra random feeds for exact gates: the split's upper half


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


_MEAN_OPS = ("Subtract", "Sub", "Add", "Multiply", "Mul", "Divide", "Div")  # both formats' spellings
_PASS_THROUGH = ("Convert", "Cast", "Reshape", "Transpose")


def detect_preprocess(model: ModelHandle) -> str:
    """'raw_bgr' / 'raw_rgb' when mean/scale live inside the graph (OMZ style), else 'imagenet'.

    Read from the graph view: the ops within four hops of the single input, through casts and reshapes.
    """
    from .graph import view

    v = view(model)
    if len(v.inputs) != 1:
        return "imagenet"
    seen_mean = flipped = False
    frontier = [u for u, _ in v.users(v.inputs[0])]
    for _ in range(4):  # preprocessing ops sit within a few hops of the input
        nxt = []
        for node in frontier:
            t = node.op_type
            if t in _MEAN_OPS:
                for i in node.inputs:
                    c = v.const(i)
                    if c is not None and c.size == 3 and np.max(np.abs(c)) > 20:
                        seen_mean = True
                        # OpenVINO folds a channel flip into the constants: ImageNet means in B,G,R order
                        # (first channel smallest) mean the graph expects BGR input
                        if np.allclose(np.abs(np.ravel(c)), IMAGENET_MEAN[::-1] * 255, rtol=0.02):
                            flipped = True
            elif t == "Gather":
                idx = v.const(node.inputs[1]) if len(node.inputs) > 1 else None
                if idx is not None and list(np.ravel(idx)) == [2, 1, 0]:
                    flipped = True
            elif t in ("Split", "VariadicSplit", "Concat"):
                flipped = flipped or t == "Split"
            elif t not in _PASS_THROUGH:
                continue
            for out in node.outputs:
                nxt.extend(u for u, _ in v.users(out))
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
    return [(n, skimage_photo(n)) for n in SKIMAGE_PHOTOS]


def skimage_photo(name: str) -> np.ndarray:
    """One scikit-image photo by name (``motorcycle`` = the left stereo view) as HxWx3 RGB uint8."""
    import skimage.data as sd

    img = sd.stereo_motorcycle()[0] if name == "motorcycle" else getattr(sd, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


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


# ---- three disjoint splits -----------------------------------------------------------------------------------
_Loader = Callable[[], np.ndarray]


@dataclass(frozen=True)
class Splits:
    """Calibration / validation / test inputs for one model, disjoint by whole image unless ``overlap``."""

    calibration: InputSet  # refit, NNCF calibration, compensation fit here
    validation: InputSet  # gates and any selection judge here
    test: InputSet  # the headline fidelity number
    overlap: bool = False  # True only under allow_overlap, when splits share images
    source: str = ""  # where the images came from ("skimage", "images:DIR", "calib:DIR + images:DIR", "random")
    notes: tuple[str, ...] = ()
    # (name, loader) per split, to rebuild feeds for another preprocessing or input shape
    _images: dict = field(default_factory=dict, repr=False, compare=False)
    _seed: int = 0
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def names(self) -> dict[str, list[str]]:
        """``{"calibration": [...], "validation": [...], "test": [...]}``: the image (or random feed) names."""
        return {k: list(self.get(k).names) for k in SPLITS}

    def get(self, split: str) -> InputSet:
        """The InputSet of ``split`` ("calibration", "validation" or "test")."""
        if split not in SPLITS:
            raise RewriteError(f"unknown split '{split}' (use {', '.join(SPLITS)})")
        return getattr(self, split)

    def inputs(self, split: str, model: ModelHandle, preprocess: str = "auto", count: int | None = None
               ) -> InputSet:
        """``split``'s feeds for ``model`` (rebuilt when its inputs or ``preprocess`` differ); first ``count``."""
        base = self.get(split)
        spec = image_input(model)
        if base.is_images and spec is not None:
            pre = detect_preprocess(model) if preprocess == "auto" else preprocess
            key = (split, pre, repr(model.inputs()))
            if pre == base.preprocess and base.feeds and _fits(base.feeds[0], model):
                result = base
            elif key in self._cache:
                result = self._cache[key]
            else:
                result = _image_set(model, self._images[split], base.source, pre, list(base.notes))
                self._cache[key] = result
        elif not base.is_images and spec is None:
            key = (split, "random", repr(model.inputs()))
            if base.feeds and _fits(base.feeds[0], model):
                result = base
            elif key in self._cache:
                result = self._cache[key]
            else:
                result = _random_set(model, SPLITS.index(split), self._seed, len(base.feeds), list(base.notes))
                self._cache[key] = result
        else:
            raise RewriteError(f"{model.name}: its inputs differ in kind from the model the splits were made for")
        if count is not None and count < len(result.feeds):
            result = InputSet(result.feeds[:count], result.source, result.names[:count], result.preprocess,
                              list(result.notes))
        return result


def _fits(feed: dict[str, np.ndarray], model: ModelHandle) -> bool:
    ins = model.inputs()
    if set(feed) != {n for n, _, _ in ins}:
        return False
    return all(len(s) == feed[n].ndim and all(d is None or d == f for d, f in zip(s, feed[n].shape))
               for n, s, _ in ins)


def _image_set(model: ModelHandle, images: list[tuple[str, _Loader]], source: str, pre: str,
               notes: list[str]) -> InputSet:
    name, h, w, layout = image_input(model)
    feeds = [{name: to_tensor(resize_crop(load(), h, w), pre, layout)} for _, load in images]
    return InputSet(feeds, source, [n for n, _ in images], pre, notes)


def split_seeds(split_index: int, seed: int, count: int, offset: int = 0) -> list[int]:
    """Seeds of the random feeds of split ``split_index``: disjoint ranges per split."""
    return [seed + split_index * RANDOM_SEED_STRIDE + offset + i for i in range(count)]


def _random_set(model: ModelHandle, split_index: int, seed: int, count: int, notes: list[str],
                offset: int = 0) -> InputSet:
    seeds = split_seeds(split_index, seed, count, offset)
    feeds = [random_feeds(model, 1, s)[0] for s in seeds]
    return InputSet(feeds, "random", [f"random{s}" for s in seeds], "imagenet", notes)


def split_random_feeds(model: ModelHandle, split: str, count: int, seed: int = 0) -> InputSet:
    """Extra seeded random feeds for ``split`` (exact-pass gates), from the upper half of its seed range."""
    return _random_set(model, SPLITS.index(split), seed, count, [], offset=EXACT_RANDOM_OFFSET)


def _folder_images(folder: str | Path) -> list[tuple[str, Path]]:
    return [(p.name, p) for p in list_images(folder)]


def _loader(path: Path) -> _Loader:
    return lambda: read_image(path)


def _digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def _shuffled(names: list[str], seed: int) -> list[int]:
    """Deterministic order of ``names`` (sorted first, so listing order never matters) for ``seed``."""
    order = sorted(range(len(names)), key=lambda i: names[i])
    perm = np.random.default_rng(seed).permutation(len(order))
    return [order[int(i)] for i in perm]


def _split_one_folder(files: list[tuple[str, Path]], folder: str, seed: int, allow_overlap: bool
                      ) -> tuple[dict[str, list[tuple[str, Path]]], bool]:
    n = len(files)
    if n < 3:
        if not allow_overlap:
            raise RewriteError(f"{folder}: {n} image(s), but calibration, validation and test need at least 3 "
                               "different images (one each); add images, give --calib and --images as separate "
                               "folders, or pass --allow-overlap")
        return {k: list(files) for k in SPLITS}, True
    held = max(1, int(n * HELDOUT_FRACTION + 0.5))
    order = _shuffled([f[0] for f in files], seed)
    test, val, cal = order[:held], order[held:2 * held], order[2 * held:]
    return {k: [files[i] for i in sorted(idx, key=lambda i: files[i][0])]
            for k, idx in zip(SPLITS, (cal, val, test))}, False


def _split_two_folders(calib: str, images: str, seed: int, allow_overlap: bool
                       ) -> tuple[dict[str, list[tuple[str, Path]]], bool]:
    cal_files, img_files = _folder_images(calib), _folder_images(images)
    cal_keys = {f.resolve() for _, f in cal_files} | {_digest(f) for _, f in cal_files}
    shared = [n for n, f in img_files if f.resolve() in cal_keys or _digest(f) in cal_keys]
    overlap = False
    if shared:
        if not allow_overlap:
            more = f", … (+{len(shared) - 3})" if len(shared) > 3 else ""
            raise RewriteError(f"--calib {calib} and --images {images} share {len(shared)} image(s) "
                               f"({', '.join(shared[:3])}{more}): held-out images must differ from the "
                               "calibration ones; remove them from one folder or pass --allow-overlap")
        overlap = True
    n = len(img_files)
    if n < 2:
        if not allow_overlap:
            raise RewriteError(f"--images {images}: {n} image, but validation and test need at least 2 "
                               "different images (one each); add images or pass --allow-overlap")
        return {"calibration": cal_files, "validation": img_files, "test": img_files}, True
    order = _shuffled([f[0] for f in img_files], seed)
    test = order[: n // 2]
    val = order[n // 2:]
    pick = lambda idx: [img_files[i] for i in sorted(idx, key=lambda i: img_files[i][0])]  # noqa: E731
    return {"calibration": cal_files, "validation": pick(val), "test": pick(test)}, overlap


def split_inputs(model: ModelHandle, calib: str | None = None, images: str | None = None, *, seed: int = 0,
                 allow_overlap: bool = False, preprocess: str = "auto") -> Splits:
    """Calibration, validation and test inputs for ``model``, disjoint by whole image (module docstring).

    Raises ``RewriteError`` (naming the folder and how many images are needed) when there are too few
    images for three disjoint splits, unless ``allow_overlap``.
    """
    spec = image_input(model)
    if spec is None:
        desc = ", ".join(f"{n}{list(s)}" for n, s, _ in model.inputs())
        note = (f"model input {desc} is not an image: using seeded random inputs, {RANDOM_FEEDS} per split from "
                f"disjoint seed ranges (seed {seed} + {RANDOM_SEED_STRIDE:,} per split)")
        sets = [_random_set(model, k, seed, RANDOM_FEEDS, [note]) for k in range(len(SPLITS))]
        return Splits(*sets, overlap=False, source="random", notes=(note,), _seed=seed)
    pre = detect_preprocess(model) if preprocess == "auto" else preprocess
    if pre not in PREPROCESS_MODES[1:]:
        raise RewriteError(f"unknown preprocessing '{preprocess}' (use {', '.join(PREPROCESS_MODES)})")
    notes: list[str] = []
    same = calib and images and Path(calib).resolve() == Path(images).resolve()
    if calib and images and not same:
        chosen, overlap = _split_two_folders(calib, images, seed, allow_overlap)
        sources = {"calibration": f"images:{calib}", "validation": f"images:{images}", "test": f"images:{images}"}
        source = f"calib:{calib} + images:{images}"
        loaders = {k: [(n, _loader(p)) for n, p in v] for k, v in chosen.items()}
    elif calib or images:
        folder = str(calib or images)
        chosen, overlap = _split_one_folder(_folder_images(folder), folder, seed, allow_overlap)
        sources = dict.fromkeys(SPLITS, f"images:{folder}")
        source = f"images:{folder}"
        loaders = {k: [(n, _loader(p)) for n, p in v] for k, v in chosen.items()}
    else:
        overlap = False
        sources = dict.fromkeys(SPLITS, "skimage")
        source = "skimage"
        loaders = {k: [(n, (lambda n=n: skimage_photo(n))) for n in DEFAULT_SPLIT[k]] for k in SPLITS}
        notes.append("no image folder given: using the photos shipped with scikit-image, split "
                     + "; ".join(f"{k} {', '.join(v)}" for k, v in DEFAULT_SPLIT.items())
                     + "; a sample of your own scenes calibrates and verifies better")
    if overlap:
        notes.append("--allow-overlap: the splits share images, so the gates and the headline fidelity are "
                     "measured on images the passes were fitted on")
    sets = [_image_set(model, loaders[k], sources[k], pre, list(notes)) for k in SPLITS]
    return Splits(*sets, overlap=overlap, source=source, notes=tuple(notes), _images=loaders, _seed=seed)
