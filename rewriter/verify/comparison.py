"""Running two models on the same feeds and comparing every output, per input and aggregated.

Inputs: ``verification_inputs`` gives the feeds ``rewrite verify`` uses (images from ``--images``, else the
photos shipped with scikit-image; seeded random feeds for models whose input is not an image, plus
``EXACT_RANDOM_FEEDS`` random ones when an exact match is checked). ``compare`` runs both models and
returns, per output and merged over outputs, the mean and worst of every metric of ``rewriter.metrics``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as M
from ..errors import RewriteError
from ..inputs import InputSet, calibration_set, random_feeds
from ..model import ModelHandle

EXACT_RANDOM_FEEDS = 2  # random inputs added to the images for exact passes (reach what photos do not)
DEPTH_KEYS = ("absrel", "delta1")
RUNTIME_NAMES = {"ov": "OpenVINO CPU (f32)", "ort": "onnxruntime CPU"}
_INPUT_CACHE: dict = {}


# ---- inputs -------------------------------------------------------------------------------------------
def verification_inputs(model: ModelHandle, images_dir: str | Path | None = None, exact: bool = True,
                        seed: int = 0, count: int | None = None) -> InputSet:
    """The feeds both models run on: images (or random for non-image models), + random ones when ``exact``.

    Images come from ``rewriter.inputs.calibration_set`` (``images_dir``, else scikit-image photos; at most
    ``count``). For exact passes ``EXACT_RANDOM_FEEDS`` seeded random inputs are appended, named random0...
    """
    cs = calibration_set(model, images_dir, count=count, seed=seed, cache=_INPUT_CACHE)
    if len(_INPUT_CACHE) > 8:  # keep the cache small: inputs are megabytes each
        _INPUT_CACHE.pop(next(iter(_INPUT_CACHE)))
    if not cs.is_images:
        names = [f"random{i}" for i in range(len(cs.feeds))]
        return InputSet(list(cs.feeds), "random", names, cs.preprocess, list(cs.notes))
    feeds, names, source = list(cs.feeds), list(cs.names), cs.source
    if exact:
        feeds += random_feeds(model, EXACT_RANDOM_FEEDS, seed)
        names += [f"random{i}" for i in range(EXACT_RANDOM_FEEDS)]
        source += "+random"
    return InputSet(feeds, source, names, cs.preprocess, list(cs.notes))


def describe_inputs(inputs: InputSet, seed: int = 0) -> str:
    """'8 skimage images + 2 random (seed 0)' style description."""
    n_rand = sum(n.startswith("random") for n in inputs.names)
    n_img = len(inputs.names) - n_rand
    parts = []
    if n_img:
        src = inputs.source.split("+")[0]
        where = "skimage" if src == "skimage" else src.removeprefix("images:")
        parts.append(f"{n_img} {where} image{'s' if n_img != 1 else ''}")
    if n_rand:
        seeds = [int(n[6:]) for n in inputs.names if n.startswith("random") and n[6:].isdigit()]
        span = (f"seeds {min(seeds)}–{max(seeds)}" if len(seeds) > 1 else f"seed {seeds[0]}") if seeds and \
            max(seeds) >= n_rand else f"seed {seed}"  # split feeds carry their own seed in the name
        parts.append(f"{n_rand} random ({span})")
    return " + ".join(parts) or "no inputs"


# ---- running ------------------------------------------------------------------------------------------
def as_handle(m: Any) -> ModelHandle:
    """``m`` itself when it is a :class:`ModelHandle`, else ``ModelHandle.load(m)``."""
    return m if isinstance(m, ModelHandle) else ModelHandle.load(m)


def check_compatible(before: ModelHandle, after: ModelHandle) -> list[tuple[str, str]]:
    """Raise RewriteError unless the models take the same inputs; return the (before, after) output pairs."""
    bi = {n: s for n, s, _ in before.inputs()}
    ai = {n: s for n, s, _ in after.inputs()}
    if set(bi) != set(ai):
        raise RewriteError(f"{after.name}: inputs {sorted(ai)} differ from {before.name}'s {sorted(bi)}; "
                           "verify runs both models on the same inputs, so input names must match")
    for n, s in bi.items():
        t = ai[n]
        if len(s) != len(t) or any(a is not None and b is not None and a != b for a, b in zip(s, t)):
            raise RewriteError(f"{after.name}: input '{n}' has shape {t} but {before.name} has {s}; "
                               "verify needs the same input shapes")
    bo, ao = before.outputs(), after.outputs()
    if len(bo) != len(ao):
        raise RewriteError(f"{after.name}: {len(ao)} outputs {ao} vs {len(bo)} {bo} in {before.name}; "
                           "cannot pair them")
    if set(bo) == set(ao):
        return [(n, n) for n in bo]
    return list(zip(bo, ao))  # renamed outputs (e.g. ONNX vs IR): pair by position


def resolve_runtimes(runtime: str, *models: ModelHandle) -> tuple[list[str], list[str]]:
    """The runtimes ``--check-runtime`` asks for that can run ``models``, and notes on what was changed."""
    if runtime not in ("ov", "ort", "both"):
        raise RewriteError(f"--check-runtime {runtime!r}: use ov, ort or both")
    onnx_only = all(m.format == "onnx" for m in models)
    if runtime == "ov":
        return ["ov"], []
    if not onnx_only:
        return ["ov"], [f"--check-runtime {runtime}: onnxruntime runs ONNX only; checked on OpenVINO CPU"]
    return (["ort"] if runtime == "ort" else ["ov", "ort"]), []


def run_feeds(model: ModelHandle, feeds: list[dict[str, np.ndarray]], runtime: str,
              taps: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Outputs (and ``taps``) of ``model`` on each feed; a model the runtime cannot run is a RewriteError."""
    from ..progress import count
    from ..runtime import Runner

    try:
        r = Runner(model, runtime, taps)
        names = {n for n, _, _ in model.inputs()}
        outs = []
        for i, f in enumerate(feeds):
            outs.append(r.run({k: v for k, v in f.items() if k in names}))
            count(f"running {model.name} on {len(feeds)} image(s)", i + 1, len(feeds))
        return outs
    except RewriteError:
        raise
    except Exception as e:  # compile/run failures are about the model the user gave
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise RewriteError(f"{model.name}: cannot run it on {RUNTIME_NAMES[runtime]}: {first}") from e


def pick_output(result: dict[str, np.ndarray], name: str, index: int) -> np.ndarray:
    """Output ``name`` of one run, else its ``index``-th output (outputs renamed across formats)."""
    if name in result:
        return result[name]
    return list(result.values())[index]


# ---- comparing ----------------------------------------------------------------------------------------
def aggregate(per_image: list[dict]) -> dict:
    """Mean and worst per metric; depth metrics over image inputs only (over random ones if none)."""
    has_images = any(d["kind"] == "image" for d in per_image)
    mean, worst, worst_image = {}, {}, {}
    for k in M.HIGHER_IS_BETTER:
        rows = [d for d in per_image if k in d]
        if k in DEPTH_KEYS and has_images:
            rows = [d for d in rows if d["kind"] == "image"]
        if not rows:
            continue
        vals = [float(d[k]) for d in rows]
        mean[k] = float(np.mean(vals))
        w = M.worst_of(k, vals)
        worst[k] = w
        worst_image[k] = rows[vals.index(w)]["image"]
    return {"mean": mean, "worst": worst, "worst_image": worst_image}


def merge_outputs(per_output: dict[str, dict]) -> dict:
    """Across outputs, keep the worse value of each metric (one output equals its own summary)."""
    if len(per_output) == 1:
        only = next(iter(per_output.values()))
        return {k: only[k] for k in ("mean", "worst", "worst_image")}
    merged: dict[str, dict] = {"mean": {}, "worst": {}, "worst_image": {}}
    for agg in ("mean", "worst"):
        keys = {k for o in per_output.values() for k in o[agg]}
        for k in keys:
            pairs = [(o[agg][k], name) for name, o in per_output.items() if k in o[agg]]
            value = M.worst_of(k, [v for v, _ in pairs])
            merged[agg][k] = value
            if agg == "worst":
                out_name = next(n for v, n in pairs if v == value)
                merged["worst_image"][k] = f"{per_output[out_name]['worst_image'][k]} ({out_name})"
    return merged


def compare_runs(before: ModelHandle, after: ModelHandle, inputs: InputSet, runtime: str
                 ) -> tuple[dict, list[dict], list[dict]]:
    """:func:`compare`'s summary, plus both models' raw outputs per feed (for pictures)."""
    pairs = check_compatible(before, after)
    rb = run_feeds(before, inputs.feeds, runtime)
    ra = run_feeds(after, inputs.feeds, runtime)
    per_output: dict[str, dict] = {}
    for oi, (nb, na) in enumerate(pairs):
        rows = []
        for i, name in enumerate(inputs.names):
            ref, out = pick_output(rb[i], nb, oi), pick_output(ra[i], na, oi)
            if ref.size != out.size:
                raise RewriteError(f"{after.name}: output '{na}' has shape {list(out.shape)} but "
                                   f"{before.name}'s '{nb}' has {list(ref.shape)}")
            kind = "random" if name.startswith("random") else "image"
            rows.append({"image": name, "kind": kind, **M.compare_arrays(ref, out, depth=True)})
        per_output[nb] = {**aggregate(rows), "per_image": rows}
    summary = {"runtime": runtime, **merge_outputs(per_output), "outputs": per_output,
               "images": list(inputs.names)}
    return summary, rb, ra


def compare(before: Any, after: Any, inputs: InputSet | list[dict[str, np.ndarray]], runtime: str = "ov"
            ) -> dict:
    """Run both models on ``inputs`` with ``runtime`` ("ov" or "ort") and compare every output.

    Returns ``{"runtime", "mean": {metric: v}, "worst": {metric: v}, "worst_image": {metric: input name},
    "outputs": {output: {... same, "per_image": [{"image", "kind", metrics...}]}}, "images": [...]}``.
    Metrics: max_abs, rel_max (max_abs / reference scale), rel_l2, cosine, psnr, absrel, delta1 (see
    ``rewriter.metrics``); depth metrics are aggregated over image inputs.
    """
    before, after = as_handle(before), as_handle(after)
    if not isinstance(inputs, InputSet):
        inputs = InputSet(list(inputs), "random", [f"random{i}" for i in range(len(inputs))])
    return compare_runs(before, after, inputs, runtime)[0]
