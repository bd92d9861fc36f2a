"""Numerical equivalence: run two models on the same inputs, compare, gate, and locate the first divergence.

Inputs: the pass manager gates on its input splits (``rewriter.inputs.split_inputs``): each pass on the
**validation** split, the final model against the original on the **test** split (``check_pass(...,
inputs=, split=)``; the message names the split). ``rewrite verify`` (``verification_inputs``) uses real images
(``--images DIR``, else the photos shipped in scikit-image). Exact passes add ``EXACT_RANDOM_FEEDS`` seeded
random inputs; models whose input is not an image get seeded random inputs only.

Gates (``check_pass``):

* **tolerance** (exact passes, and ``rewrite verify`` by default): the worst max-abs error over every input
  and output, divided by the reference output's scale (the larger of its range and its peak |value|), must
  be ≤ ``tol``. ``DEFAULT_TOL`` = 1e-4, measured on MiDaS small (256x256, OpenVINO CPU f32): exact
  rewrites move the output by fp32 reassociation only (dwpw at full rank 1.9e-6, interp_deconv 5.4e-7,
  onnxruntime vs OpenVINO 3e-6), while 5% noise on one mid-network conv's weights moves it by 2.7e-2..5.5e-2:
  1e-4 sits ~50x above the first and ~250x below the second.
* **budget** (approximate passes, ``--budget``): limits on metrics averaged over the inputs (a key prefixed
  ``worst_`` limits the worst input instead). Defaults depend on what the inputs are:
  - image models: ``DEFAULT_BUDGET`` = delta1 ≥ 0.98, AbsRel ≤ 0.03 — MiDaS depth metrics after
    scale+shift alignment, so a change the user would see in the depth map is what is limited;
  - non-image models (seeded random inputs): ``DEFAULT_RANDOM_BUDGET`` = cosine ≥ 0.5, rel_l2 ≤ 1.0.
    Random inputs are white noise, the worst case for any resampling change (a half-pixel shift of white
    noise alone gives rel_l2 ≈ 0.7) and unlike any deployment data, so depth metrics and tight bounds on them
    prove nothing. The default only rejects *broken* rewrites: the output must still carry more of the
    reference than of error (SNR ≥ 0 dB) and stay correlated with it (an unrelated output has cosine ≈ 0,
    rel_l2 ≈ 1.4; a zeroed one cosine 0). Give ``--images`` or ``--budget`` for a real bound.

Every gate reports what would have passed (``needed``, Polygraphy style). ``locate`` walks the tensors both
graphs share, in topological order and in memory-bounded chunks, and names the first one that diverges.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .errors import RewriteError
from .graph import view as graph_view
from .inputs import (
    InputSet,
    calibration_set,
    detect_preprocess,
    image_input,
    random_feeds,
    read_image,
    resize_crop,
    to_tensor,
)
from .jsonable import jsonable
from .model import ModelHandle

DEFAULT_TOL = 1e-4
DEFAULT_BUDGET: dict[str, float] = {"delta1": 0.98, "absrel": 0.03}
DEFAULT_RANDOM_BUDGET: dict[str, float] = {"cosine": 0.5, "rel_l2": 1.0}
# what each kind of pass is held to when no --tol/--budget is given (stated in every report)
DEFAULT_GATES: dict[str, str] = {
    "exact": f"tolerance: max error ≤ {DEFAULT_TOL:g} of the output scale (images + random inputs)",
    "approximate": "budget: " + ",".join(f"{k}={v}" for k, v in DEFAULT_BUDGET.items())
                   + " on image models (depth after scale+shift alignment); "
                   + ",".join(f"{k}={v}" for k, v in DEFAULT_RANDOM_BUDGET.items()) + " on random inputs",
}
EXACT_RANDOM_FEEDS = 2  # random inputs added to the images for exact passes (reach what photos do not)
BUDGET_METRICS = ("delta1", "absrel", "rel_l2", "cosine", "psnr", "rel_max", "max_abs")
DEPTH_KEYS = ("absrel", "delta1")
LOCATE_CHUNK_ELEMENTS = 16_000_000  # values exposed per chunk and model (64 MB of fp32)
LOCATE_CHUNK_TENSORS = 128
LOCATE_FEEDS = 2
RUNTIME_NAMES = {"ov": "OpenVINO CPU (f32)", "ort": "onnxruntime CPU"}
_UNKNOWN_NUMEL = 1 << 20
_INPUT_CACHE: dict = {}


# ---- budgets ------------------------------------------------------------------------------------------
def parse_budget(spec: str | dict | None) -> dict[str, float]:
    """``"delta1=0.98,absrel=0.03"`` (or a dict) → ``{"delta1": 0.98, "absrel": 0.03}``; ``None`` → ``{}``.

    Keys: delta1, absrel, rel_l2, cosine, psnr, rel_max, max_abs, each optionally prefixed ``worst_`` to limit
    the worst input rather than the mean. delta1 and cosine are lower bounds, the rest upper bounds except
    psnr (a lower bound, dB).
    """
    if spec is None:
        return {}
    if isinstance(spec, dict):
        items = [(str(k), v) for k, v in spec.items()]
    else:
        text = str(spec).strip()
        if not text:
            raise RewriteError("--budget is empty: give e.g. delta1=0.98,absrel=0.03")
        items = []
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise RewriteError(f"--budget {text!r}: '{part}' is not METRIC=VALUE "
                                   f"(e.g. delta1=0.98,absrel=0.03)")
            items.append((key, value))
    out: dict[str, float] = {}
    for key, value in items:
        k = key.strip().lower()
        base = k.removeprefix("worst_")
        if base not in BUDGET_METRICS:
            raise RewriteError(f"--budget: unknown metric '{key.strip()}' (use {', '.join(BUDGET_METRICS)}, "
                               "optionally prefixed worst_)")
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise RewriteError(f"--budget: {k}={value!r} is not a number") from None
        if not math.isfinite(v):
            raise RewriteError(f"--budget: {k}={value!r} must be finite")
        if base == "delta1" and not 0.0 <= v <= 1.0:
            raise RewriteError(f"--budget: {k}={v} must be between 0 and 1")
        if base == "cosine" and not -1.0 <= v <= 1.0:
            raise RewriteError(f"--budget: {k}={v} must be between -1 and 1")
        if base in ("absrel", "rel_l2", "rel_max", "max_abs") and v < 0:
            raise RewriteError(f"--budget: {k}={v} must be ≥ 0")
        out[k] = v
    return out


def default_budget(is_images: bool) -> dict[str, float]:
    """The budget used when none is given: depth metrics for image models, a breakage bound otherwise."""
    return dict(DEFAULT_BUDGET if is_images else DEFAULT_RANDOM_BUDGET)


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


# ---- running and comparing ----------------------------------------------------------------------------
def _as_handle(m: Any) -> ModelHandle:
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


def _resolve_runtimes(runtime: str, *models: ModelHandle) -> tuple[list[str], list[str]]:
    if runtime not in ("ov", "ort", "both"):
        raise RewriteError(f"--check-runtime {runtime!r}: use ov, ort or both")
    onnx_only = all(m.format == "onnx" for m in models)
    if runtime == "ov":
        return ["ov"], []
    if not onnx_only:
        return ["ov"], [f"--check-runtime {runtime}: onnxruntime runs ONNX only; checked on OpenVINO CPU"]
    return (["ort"] if runtime == "ort" else ["ov", "ort"]), []


def _run_feeds(model: ModelHandle, feeds: list[dict[str, np.ndarray]], runtime: str,
               taps: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    from .runtime import Runner

    try:
        from .progress import count

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


def _pick(result: dict[str, np.ndarray], name: str, index: int) -> np.ndarray:
    if name in result:
        return result[name]
    return list(result.values())[index]


def _aggregate(per_image: list[dict]) -> dict:
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


def _merge_outputs(per_output: dict[str, dict]) -> dict:
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


def _compare(before: ModelHandle, after: ModelHandle, inputs: InputSet, runtime: str
             ) -> tuple[dict, list[dict], list[dict]]:
    pairs = check_compatible(before, after)
    rb = _run_feeds(before, inputs.feeds, runtime)
    ra = _run_feeds(after, inputs.feeds, runtime)
    per_output: dict[str, dict] = {}
    for oi, (nb, na) in enumerate(pairs):
        rows = []
        for i, name in enumerate(inputs.names):
            ref, out = _pick(rb[i], nb, oi), _pick(ra[i], na, oi)
            if ref.size != out.size:
                raise RewriteError(f"{after.name}: output '{na}' has shape {list(out.shape)} but "
                                   f"{before.name}'s '{nb}' has {list(ref.shape)}")
            kind = "random" if name.startswith("random") else "image"
            row = {"image": name, "kind": kind, **M.compare_arrays(ref, out, depth=True)}
            rows.append(row)
        per_output[nb] = {**_aggregate(rows), "per_image": rows}
    summary = {"runtime": runtime, **_merge_outputs(per_output), "outputs": per_output,
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
    before, after = _as_handle(before), _as_handle(after)
    if not isinstance(inputs, InputSet):
        inputs = InputSet(list(inputs), "random", [f"random{i}" for i in range(len(inputs))])
    return _compare(before, after, inputs, runtime)[0]


# ---- gates --------------------------------------------------------------------------------------------
def _fmt(v: float) -> str:
    return f"{v:.3g}"


def _round_out(v: float, up: bool) -> float:
    """Round to 2 significant digits away from failing (up for upper bounds, down for lower bounds)."""
    if v == 0 or not math.isfinite(v):
        return v
    e = math.floor(math.log10(abs(v))) - 1
    f = 10.0 ** e
    return float((math.ceil(v / f) if up else math.floor(v / f)) * f)


def tolerance_gate(results: dict[str, dict], tol: float) -> dict:
    """Pass when the worst rel_max (max abs error / reference scale) over runtimes is ≤ ``tol``."""
    rt, res = max(results.items(), key=lambda kv: kv[1]["worst"]["rel_max"])
    worst = res["worst"]["rel_max"]
    where = res["worst_image"]["rel_max"]
    passed = worst <= tol
    verb = "match" if passed else "differ"
    msg = (f"outputs {verb}: max error {_fmt(worst)} of the output scale on '{where}' "
           f"(tolerance {_fmt(tol)}, {RUNTIME_NAMES[rt]})")
    if not passed:
        msg += f"; would pass with --tol {_fmt(_round_out(worst, True))}"
    return {"passed": passed, "gate": "tolerance", "tol": tol, "message": msg,
            "needed": {"tol": _round_out(worst, True), "observed": worst}}


def budget_gate(results: dict[str, dict], budget: dict[str, float]) -> dict:
    """Pass when every budget metric (mean over inputs, or worst_ for the worst input) is within its limit."""
    checks, needed, fails = [], {}, []
    for key, limit in budget.items():
        base = key.removeprefix("worst_")
        agg = "worst" if key.startswith("worst_") else "mean"
        higher = M.HIGHER_IS_BETTER[base]
        vals = [r[agg][base] for r in results.values() if base in r[agg]]
        if not vals:
            continue
        value = (min if higher else max)(vals)
        ok = value >= limit if higher else value <= limit
        op = ("≥" if ok else "<") if higher else ("≤" if ok else ">")
        shown = _fmt(value) if _fmt(value) != _fmt(limit) or value == limit else f"{value:.5g}"  # 0.9648 < 0.965
        checks.append(f"{key} {shown} {op} {_fmt(limit)}")
        needed[key] = _round_out(value, not higher)
        if not ok:
            fails.append(key)
    passed = not fails
    msg = ("within budget: " if passed else "over budget: ") + ", ".join(checks)
    if not passed:
        spec = ",".join(f"{k}={_fmt(needed[k]) if k in fails else _fmt(budget[k])}" for k in budget)
        msg += f"; would pass with --budget {spec}"
    return {"passed": passed, "gate": "budget", "budget": dict(budget), "message": msg, "needed": needed}


def _metrics_block(results: dict[str, dict], primary: str) -> dict:
    res = results[primary]
    block = {k: res[k] for k in ("mean", "worst", "worst_image")}
    if len(res["outputs"]) == 1:
        block["per_image"] = next(iter(res["outputs"].values()))["per_image"]
    else:
        block["outputs"] = res["outputs"]
    return block


def check_pass(before: ModelHandle, after: ModelHandle, *, exact: bool, inputs: InputSet | None = None,
               split: str | None = None, images: str | Path | None = None, budget: dict | str | None = None,
               tol: float | None = None, runtime: str = "ov", seed: int = 0, count: int | None = None) -> dict:
    """The gate the pass manager runs after each pass (``split="validation"``) and on the final model
    against the original (``split="test"``).

    ``inputs`` are the split's feeds (``rewriter.inputs.Splits``); exact passes add ``EXACT_RANDOM_FEEDS``
    seeded random feeds from the split's own seed range. Without ``inputs``, images come from ``images``
    (else the scikit-image photos) as in ``rewrite verify``. Exact passes: tolerance gate (``tol`` or
    ``DEFAULT_TOL``). Approximate passes: budget gate (``budget`` or the default for the input kind, see the
    module docstring). Returns ``{"passed", "gate", "split", "metrics", "message", "needed", "inputs",
    "images", "runtime", "runtimes", "notes", "tol"|"budget", "seconds"}``; the message names the split.
    """
    t0 = time.perf_counter()
    before, after = _as_handle(before), _as_handle(after)
    check_compatible(before, after)
    if inputs is None:
        inputs = verification_inputs(before, images, exact=exact, seed=seed, count=count)
    else:
        inputs = _with_exact_feeds(before, inputs, exact, split or "validation", seed, count)
    runtimes, notes = _resolve_runtimes(runtime, before, after)
    notes += inputs.notes
    results = {rt: _compare(before, after, inputs, rt)[0] for rt in runtimes}
    gate = _gate(results, exact, inputs.is_images, budget, tol, notes)
    if split:
        gate["message"] = f"{split} split: {gate['message']}"
    gate.update(split=split, metrics=_metrics_block(results, runtimes[0]), inputs=describe_inputs(inputs, seed),
                images=list(inputs.names), runtime="+".join(runtimes), notes=notes,
                seconds=round(time.perf_counter() - t0, 3))
    if len(runtimes) > 1:
        gate["runtimes"] = {rt: {"mean": r["mean"], "worst": r["worst"]} for rt, r in results.items()}
    return gate


def _with_exact_feeds(model: ModelHandle, inputs: InputSet, exact: bool, split: str, seed: int,
                      count: int | None) -> InputSet:
    """The split's feeds (first ``count``), plus its own random feeds when ``exact`` and they are images."""
    feeds, names = list(inputs.feeds[:count]), list(inputs.names[:count])
    source = inputs.source
    if exact and inputs.is_images:
        from .inputs import SPLITS, split_random_feeds

        extra = split_random_feeds(model, split if split in SPLITS else "validation", EXACT_RANDOM_FEEDS, seed)
        feeds += extra.feeds
        names += extra.names
        source += "+random"
    return InputSet(feeds, source, names, inputs.preprocess, list(inputs.notes))


def _gate(results: dict[str, dict], exact: bool, is_images: bool, budget: dict | str | None,
          tol: float | None, notes: list[str]) -> dict:
    if exact:
        t = DEFAULT_TOL if tol is None else float(tol)
        if not (t >= 0 and math.isfinite(t)):
            raise RewriteError(f"--tol {tol!r}: must be a finite number ≥ 0")
        return tolerance_gate(results, t)
    b = parse_budget(budget) if budget else default_budget(is_images)
    if not is_images and any(k.removeprefix("worst_") in DEPTH_KEYS for k in b):
        notes.append("depth metrics (absrel, delta1) on random inputs say little about real depth maps; "
                     "give --images for a meaningful budget")
    if not budget:
        kind = "depth budget on images" if is_images else "breakage bound on random inputs"
        notes.append(f"default budget ({kind}): " + ",".join(f"{k}={v}" for k, v in b.items()))
    return budget_gate(results, b)


# ---- first-divergence locator -------------------------------------------------------------------------
@dataclass
class _Tensor:
    names: tuple[str, ...]  # tensor names (ONNX: exactly one)
    node: str  # producing node (ONNX node name / IR friendly name)
    op: str
    port: int
    numel: int | None
    is_float: bool | None
    index: int  # position in the model's tensor list (topological)
    ancestors: int  # bitmask of the indices of every tensor this one is computed from
    shape_only: bool = False  # computed from shapes only (Shape/ShapeOf chains): never a divergence


_SHAPE_OPS = {"Shape", "Size", "ShapeOf"}  # outputs depend on a tensor's shape, not its values

def _ov_port_info(model) -> dict[str, tuple[int | None, bool]]:
    """{tensor name: (values, is float)} from an openvino.Model (cheaper than ONNX shape inference)."""
    info = {}
    for op in model.get_ops():
        for o in op.outputs():
            ps = o.get_partial_shape()
            numel = int(np.prod([d.get_length() for d in ps])) if ps.is_static else None
            for n in o.get_names():
                info[n] = (numel, bool(o.get_element_type().is_real()))
    return info


def _tensors(h: ModelHandle, ov_model=None) -> list[_Tensor]:
    """Every computed (non-constant) tensor of ``h`` in topological order, read from its graph view.

    Sizes and element types come from ``ov_model`` (the model that will run) when given, else the view.
    """
    v = graph_view(h)
    info = _ov_port_info(ov_model) if ov_model is not None else None
    const: set[str] = set()
    index: dict[str, int] = {}
    out: list[_Tensor] = []
    for n in v.nodes:
        if n.op_type in ("Parameter", "Result"):
            continue
        ins = [i for i in n.inputs if i]
        if n.op_type == "Constant" or (ins and all(i in const for i in ins)) or (not ins and v.format == "onnx"):
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
            out.append(_Tensor(names, n.id, n.op_type, port, numel, is_float, len(out), anc, shape_only))
    return out


def _common_tensors(before: ModelHandle, after: ModelHandle, ov_before=None, ov_after=None
                    ) -> list[tuple[str, _Tensor]]:
    """(tap key, after-graph tensor) for tensors both graphs compute, in the after graph's topological order.

    Matched by tensor name; IR-to-IR also by "friendly_name:port" when the op type agrees. Graph outputs,
    integer tensors and shape arithmetic (anything computed from Shape/ShapeOf only, such as an
    Interpolate's computed sizes) are left out: outputs are compared by the gate, and a shape computation
    matching says nothing about the values upstream of it. With
    ``ov_before``/``ov_after`` (the models that will run), only names those models still carry are kept.
    """
    bt = _tensors(before, ov_before)
    by_name = {n: t for t in bt for n in t.names}
    by_port = {f"{t.node}:{t.port}": t for t in bt} if before.format == "ir" else {}
    outputs = set(before.outputs()) | set(after.outputs())
    runnable = None
    if ov_before is not None and ov_after is not None:  # ONNX names OpenVINO dropped cannot be tapped
        runnable = set(_ov_port_info(ov_before)) & set(_ov_port_info(ov_after))
    common = []
    for t in _tensors(after, ov_after):
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


def _next_chunk(todo: list[int], common: list[tuple[str, _Tensor]]) -> list[int]:
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
    from .runtime import Runner

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


def _search(common: list[tuple[str, _Tensor]], check, tol: float) -> tuple[int, float, float] | None:
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


def _tag_probes(common: list[tuple[str, _Tensor]], tensors: list[_Tensor], tags: dict[str, str]
                ) -> list[tuple[_Tensor, int]]:
    """(tensor of a tagged node, index in ``common`` of the tensor that measures it), in topological order.

    A node the pass changed keeps its output in both graphs and is measured there; a node the pass added has
    no counterpart in the model before, so it is measured at the first shared tensor computed from it.
    """
    pos = {t.index: i for i, (_, t) in enumerate(common)}
    probes = []
    for t in tensors:
        if t.node not in tags or t.is_float is False or t.shape_only:
            continue
        if t.index in pos:
            probes.append((t, pos[t.index]))
            continue
        below = next((i for i, (_, c) in enumerate(common) if (c.ancestors >> t.index) & 1), None)
        if below is not None:
            probes.append((t, below))
    return probes


def _first_tagged(probes: list[tuple[_Tensor, int]], common: list[tuple[str, _Tensor]], check, tol: float
                  ) -> tuple[_Tensor, int, float, float] | None:
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


def _producer_graph(h: ModelHandle) -> dict[str, list[str]]:
    """{node id: ids of the nodes feeding it} (to find the tagged node behind a divergence)."""
    v = graph_view(h)
    return {n.id: [v.producer[i].id for i in n.inputs if i in v.producer] for n in v.nodes}


def _nearest_tag(node: str, h: ModelHandle, tags: dict[str, str], depth: int = 8) -> tuple[str, str] | None:
    if node in tags:
        return node, tags[node]
    graph = _producer_graph(h)
    frontier, seen = [node], {node}
    for _ in range(depth):  # breadth-first over producers: the closest rewritten node upstream
        nxt = []
        for n in frontier:
            for p in graph.get(n, []):
                if p in tags:
                    return p, tags[p]
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        frontier = nxt
    return None


def _finding(h: ModelHandle, tags: dict[str, str], node: str, op: str, tensor: str, err: float,
             abs_err: float) -> dict:
    res: dict[str, Any] = {"node": node, "op": op, "pass": None, "error": err, "max_abs": abs_err,
                           "tensor": tensor}
    hit = _nearest_tag(node, h, tags)
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
    before, after = _as_handle(before), _as_handle(after)
    pairs = check_compatible(before, after)
    tol = DEFAULT_TOL if tol is None else float(tol)
    tags = after.tags() if tags is None else tags
    if inputs is None:
        inputs = verification_inputs(before, None, exact=True, seed=seed)
    feeds = (inputs.feeds if isinstance(inputs, InputSet) else list(inputs))[:LOCATE_FEEDS]
    if runtime == "both" or (runtime == "ort" and "ir" in (before.format, after.format)):
        runtime = "ov"
    ov_b = ov_a = None
    run_b, run_a = before, after
    if runtime == "ov":  # convert ONNX once, not once per chunk
        ov_b, ov_a = before.ov_model(), after.ov_model()
        run_b = before if before.format == "ir" else ModelHandle(ov_b, before.source)
        run_a = after if after.format == "ir" else ModelHandle(ov_a, after.source)
    common = _common_tensors(before, after, ov_b, ov_a)
    chunks = []

    def check(keys: list[str]) -> list[tuple[float, float]]:
        chunks.append(len(keys))
        return _chunk_errors(run_b, run_a, feeds, runtime, keys)

    tagged = _first_tagged(_tag_probes(common, _tensors(after, ov_a), tags), common, check, tol) if tags else None
    if tagged is not None:
        t, i, err, abs_err = tagged
        key, probe = common[i]
        res = _finding(after, tags, t.node, t.op, key, err, abs_err)
        if probe.index != t.index:
            res["measured_at"] = probe.node
        res["checked"] = {"tensors": sum(chunks), "of": len(common), "chunks": len(chunks)}
        return res
    hit = _search(common, check, tol)
    if hit is not None:
        i, err, abs_err = hit
        key, t = common[i]
        res = _finding(after, tags, t.node, t.op, key, err, abs_err)
        res["checked"] = {"tensors": sum(chunks), "of": len(common), "chunks": len(chunks)}
        return res
    # nothing shared diverged inside: blame the producer of the first divergent output
    rb, ra = _run_feeds(run_b, feeds, runtime), _run_feeds(run_a, feeds, runtime)
    producers = {n: t for t in _tensors(after, ov_a) for n in t.names}
    for oi, (nb, na) in enumerate(pairs):
        err = max(M.rel_max(_pick(b, nb, oi), _pick(a, na, oi)) for b, a in zip(rb, ra))
        if err > tol:
            abs_err = max(M.max_abs(_pick(b, nb, oi), _pick(a, na, oi)) for b, a in zip(rb, ra))
            t = producers.get(na)
            node, op = (t.node, t.op) if t is not None else (na, "output")
            res = _finding(after, tags, node, op, na, err, abs_err)
            res["checked"] = {"tensors": sum(chunks), "of": len(common), "chunks": len(chunks)}
            return res
    return None


_locate = locate  # verify_models has a `locate` flag that shadows the function


# ---- ground truth -------------------------------------------------------------------------------------
def _read_disparity(path: Path) -> np.ndarray:
    if not path.exists():
        raise RewriteError(f"{path}: ground-truth disparity file does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            d = np.load(path)
        elif suffix == ".pfm":
            d = _read_pfm(path)
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


def _read_pfm(path: Path) -> np.ndarray:
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
        d = _read_disparity(Path(disp))
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
    rb, ra = _run_feeds(before, feeds, runtime), _run_feeds(after, feeds, runtime)
    rows = []
    for (gname, _, disp), b, a in zip(pairs, rb, ra):
        row: dict[str, Any] = {"image": gname}
        for side, res, oname in (("before", b, out_b), ("after", a, out_a)):
            pred = _pick(res, oname, 0)
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


# ---- library and CLI ----------------------------------------------------------------------------------
def verify_models(before: Any, after: Any, *, images: str | Path | None = None, runtime: str = "ov",
                  tol: float | None = None, budget: dict | str | None = None, locate: bool = False,
                  gt: list[str] | None = None, pictures: str | Path | None = None, seed: int = 0,
                  count: int | None = None) -> dict:
    """Compare any two models on the same inputs (the library form of ``rewrite verify``).

    Gate: float tolerance (``tol``, default ``DEFAULT_TOL``) unless a ``budget`` is given; both when both
    are given (both must hold). Returns the gate dict of ``check_pass`` plus ``"before"``, ``"after"``,
    ``"first_divergence"`` (when ``locate``), ``"ground_truth"`` (``gt``), ``"pictures"``
    (``pictures`` folder) and ``"exit_code"`` (0 match, 1 differ).
    """
    t0 = time.perf_counter()
    b, a = _as_handle(before), _as_handle(after)
    check_compatible(b, a)
    budget_d = parse_budget(budget) if budget else {}
    use_tol = tol is not None or not budget_d
    inputs = verification_inputs(b, images, exact=use_tol, seed=seed, count=count)
    runtimes, notes = _resolve_runtimes(runtime, b, a)
    notes += inputs.notes
    results, arrays = {}, None
    for rt in runtimes:
        results[rt], rb, ra = _compare(b, a, inputs, rt)
        arrays = arrays or (rb, ra)  # pictures show the first runtime's outputs
    gates = []
    if use_tol:
        gates.append(_gate(results, True, inputs.is_images, None, tol, notes))
    if budget_d:
        gates.append(_gate(results, False, inputs.is_images, budget_d, None, notes))
    report: dict[str, Any] = {"before": b.name, "after": a.name, **gates[0]}
    if len(gates) > 1:
        report.update(passed=all(g["passed"] for g in gates), gate="tolerance+budget",
                      message="; ".join(g["message"] for g in gates),
                      needed={k: v for g in gates for k, v in g["needed"].items()}, budget=gates[1]["budget"])
    report.update(metrics=_metrics_block(results, runtimes[0]), inputs=describe_inputs(inputs, seed),
                  images=list(inputs.names), runtime="+".join(runtimes), notes=notes)
    if len(runtimes) > 1:
        report["runtimes"] = {rt: {"mean": r["mean"], "worst": r["worst"]} for rt, r in results.items()}
    report["first_divergence"] = None
    if locate:
        limit = DEFAULT_TOL if tol is None else tol
        if max(r["worst"]["rel_max"] for r in results.values()) <= limit:
            notes.append("--locate: the outputs match to float tolerance; nothing to locate")
        else:
            report["first_divergence"] = _locate(b, a, inputs, tol=tol, runtime=runtimes[0], seed=seed)
    if gt:
        report["ground_truth"] = ground_truth(b, a, gt, runtimes[0])
    if pictures is not None:
        from .pictures import save_worst_pictures

        rb, ra = arrays
        key = "delta1" if inputs.is_images else "rel_l2"
        worst_name = results[runtimes[0]]["worst_image"].get(key) or inputs.names[0]
        worst_name = worst_name.split(" (")[0]
        i = inputs.names.index(worst_name)
        nb, na = check_compatible(b, a)[0]
        report["pictures"] = save_worst_pictures(_pick(rb[i], nb, 0), _pick(ra[i], na, 0), pictures,
                                                 image=worst_name)
    report["exit_code"] = 0 if report["passed"] else 1
    report["seconds"] = round(time.perf_counter() - t0, 3)
    return report


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``rewrite verify BEFORE AFTER``."""
    parser.description = ("Run two models on the same inputs and compare their outputs. Exit 0 when they "
                          "match, 1 when they differ beyond the tolerance/budget, 2 on bad input.")
    parser.add_argument("before", help="reference model (.onnx or OpenVINO .xml)")
    parser.add_argument("after", help="model to check against it (same input names and shapes)")
    parser.add_argument("--locate", action="store_true",
                        help="name the first node whose output diverges (tensors both graphs share)")
    parser.add_argument("--report", metavar="FILE.json", help="write the JSON report")
    parser.add_argument("--images", metavar="DIR", help="folder of images (default: scikit-image photos)")
    parser.add_argument("--count", type=int, metavar="N", help="use at most N images")
    parser.add_argument("--check-runtime", choices=("ov", "ort", "both"), default="ov",
                        help="runtime: OpenVINO CPU (default), onnxruntime (ONNX only) or both")
    parser.add_argument("--budget", help="fidelity budget instead of float tolerance, e.g. "
                                         f"delta1=0.98,absrel=0.03 (keys: {', '.join(BUDGET_METRICS)}, "
                                         "prefix worst_ for the worst image)")
    parser.add_argument("--tol", type=float, help="max error relative to the output scale, max(range, peak) "
                                                  f"(default {DEFAULT_TOL:g})")
    parser.add_argument("--gt", action="append", metavar="IMAGE:DISPARITY",
                        help="ground truth pair for absolute accuracy (repeatable); 'motorcycle' uses the "
                             "Middlebury pair shipped with scikit-image")
    parser.add_argument("--pictures", metavar="DIR", help="write before/after depth and |error| PNGs of the "
                                                          "worst image here")
    parser.add_argument("--seed", type=int, default=0, help="seed for random inputs (default 0)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the verdict line")


def render_verify(rep: dict, quiet: bool = False) -> str:
    """Plain-text summary of a ``verify_models`` report."""
    verdict = "MATCH" if rep["passed"] else "DIFFER"
    lines = [f"{verdict}: {rep['message']}"]
    if quiet:
        return lines[0]
    where = " + ".join(RUNTIME_NAMES.get(r, r) for r in rep["runtime"].split("+"))
    lines.insert(0, f"verify {rep['before']} vs {rep['after']}: {rep['inputs']}, {where}")
    m, w = rep["metrics"]["mean"], rep["metrics"]["worst"]
    row = (f"  mean: rel L2 {_fmt(m['rel_l2'])}, cosine {m['cosine']:.6f}, PSNR {m['psnr']:.1f} dB, "
           f"max error {_fmt(m['rel_max'])} of scale")
    if "delta1" in m and any(not n.startswith("random") for n in rep.get("images", [])):
        row += f", AbsRel {_fmt(m['absrel'])}, delta1 {m['delta1']:.4f}"
    lines.append(row)
    worst_rel = rep["metrics"]["worst_image"].get("rel_l2", "?")
    lines.append(f"  worst input: {worst_rel} (rel L2 {_fmt(w['rel_l2'])}, max error {_fmt(w['rel_max'])})")
    fd = rep.get("first_divergence")
    if fd:
        by = f", made by pass {fd['pass']}" if fd.get("pass") else ""
        lines.append(f"  first divergence: {fd['node']} ({fd['op']}{by}), error {_fmt(fd['error'])} "
                     f"of scale at tensor {fd['tensor']}")
    gt = rep.get("ground_truth")
    if gt:
        lines.append(f"  ground truth: before AbsRel {_fmt(gt['before']['absrel'])} delta1 "
                     f"{gt['before']['delta1']:.4f}; after AbsRel {_fmt(gt['after']['absrel'])} delta1 "
                     f"{gt['after']['delta1']:.4f}")
    if rep.get("pictures"):
        lines.append(f"  pictures: {', '.join(str(v) for k, v in rep['pictures'].items() if k.endswith('png'))}")
    lines += [f"  note: {n}" for n in rep.get("notes", [])]
    return "\n".join(lines)


def run_verify(args: argparse.Namespace) -> int:
    """``rewrite verify``: 0 match, 1 differ beyond tolerance/budget, 2 bad input."""
    try:
        rep = verify_models(args.before, args.after, images=getattr(args, "images", None),
                            runtime=getattr(args, "check_runtime", "ov") or "ov", tol=getattr(args, "tol", None),
                            budget=getattr(args, "budget", None),
                            locate=bool(getattr(args, "locate", False)), gt=getattr(args, "gt", None),
                            pictures=getattr(args, "pictures", None), seed=getattr(args, "seed", 0) or 0,
                            count=getattr(args, "count", None))
    except RewriteError as e:
        print(f"rewrite verify: error: {e}", file=sys.stderr)
        return e.exit_code
    print(render_verify(rep, quiet=bool(getattr(args, "quiet", False))))
    if getattr(args, "report", None):
        from .report import write_json

        try:
            write_json(jsonable(rep), args.report)
        except RewriteError as e:
            print(f"rewrite verify: error: {e}", file=sys.stderr)
            return 2
    return rep["exit_code"]
