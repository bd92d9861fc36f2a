"""The gates a rewrite is held to: float tolerance for exact passes, a fidelity budget for approximate ones.

Inputs: the pass manager gates on its input splits (``rewriter.inputs.split_inputs``): each pass on the
**validation** split, the final model against the original on the **test** split (``check_pass(...,
inputs=, split=)``; the message names the split). ``rewrite verify`` uses real images (``--images DIR``, else
the photos shipped in scikit-image). Exact passes add ``EXACT_RANDOM_FEEDS`` seeded random inputs; models
whose input is not an image get seeded random inputs only.

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

Every gate reports what would have passed (``needed``, Polygraphy style).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from .. import metrics as M
from ..errors import RewriteError
from ..inputs import SPLITS, InputSet, split_random_feeds
from ..model import ModelHandle
from .comparison import (
    DEPTH_KEYS,
    EXACT_RANDOM_FEEDS,
    RUNTIME_NAMES,
    as_handle,
    check_compatible,
    compare_runs,
    describe_inputs,
    resolve_runtimes,
    verification_inputs,
)

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
BUDGET_METRICS = ("delta1", "absrel", "rel_l2", "cosine", "psnr", "rel_max", "max_abs")


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


# ---- gates --------------------------------------------------------------------------------------------
def short(v: float) -> str:
    """A metric value in three significant digits, as every gate message shows it."""
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
    msg = (f"outputs {verb}: max error {short(worst)} of the output scale on '{where}' "
           f"(tolerance {short(tol)}, {RUNTIME_NAMES[rt]})")
    if not passed:
        msg += f"; would pass with --tol {short(_round_out(worst, True))}"
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
        shown = short(value) if short(value) != short(limit) or value == limit else f"{value:.5g}"  # 0.9648 < 0.965
        checks.append(f"{key} {shown} {op} {short(limit)}")
        needed[key] = _round_out(value, not higher)
        if not ok:
            fails.append(key)
    passed = not fails
    msg = ("within budget: " if passed else "over budget: ") + ", ".join(checks)
    if not passed:
        spec = ",".join(f"{k}={short(needed[k]) if k in fails else short(budget[k])}" for k in budget)
        msg += f"; would pass with --budget {spec}"
    return {"passed": passed, "gate": "budget", "budget": dict(budget), "message": msg, "needed": needed}


def gate(results: dict[str, dict], exact: bool, is_images: bool, budget: dict | str | None,
         tol: float | None, notes: list[str]) -> dict:
    """The tolerance gate (``exact``, ``tol`` or ``DEFAULT_TOL``) or the budget gate (``budget`` or the default
    for the input kind) on ``compare`` results per runtime; notes on the choice are appended to ``notes``."""
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


def metrics_block(results: dict[str, dict], primary: str) -> dict:
    """The ``metrics`` of a gate report: the primary runtime's mean/worst, and per input or per output."""
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
    before, after = as_handle(before), as_handle(after)
    check_compatible(before, after)
    if inputs is None:
        inputs = verification_inputs(before, images, exact=exact, seed=seed, count=count)
    else:
        inputs = _with_exact_feeds(before, inputs, exact, split or "validation", seed, count)
    runtimes, notes = resolve_runtimes(runtime, before, after)
    notes += inputs.notes
    results = {rt: compare_runs(before, after, inputs, rt)[0] for rt in runtimes}
    g = gate(results, exact, inputs.is_images, budget, tol, notes)
    if split:
        g["message"] = f"{split} split: {g['message']}"
    g.update(split=split, metrics=metrics_block(results, runtimes[0]), inputs=describe_inputs(inputs, seed),
             images=list(inputs.names), runtime="+".join(runtimes), notes=notes,
             seconds=round(time.perf_counter() - t0, 3))
    if len(runtimes) > 1:
        g["runtimes"] = {rt: {"mean": r["mean"], "worst": r["worst"]} for rt, r in results.items()}
    return g


def _with_exact_feeds(model: ModelHandle, inputs: InputSet, exact: bool, split: str, seed: int,
                      count: int | None) -> InputSet:
    """The split's feeds (first ``count``), plus its own random feeds when ``exact`` and they are images."""
    feeds, names = list(inputs.feeds[:count]), list(inputs.names[:count])
    source = inputs.source
    if exact and inputs.is_images:
        extra = split_random_feeds(model, split if split in SPLITS else "validation", EXACT_RANDOM_FEEDS, seed)
        feeds += extra.feeds
        names += extra.names
        source += "+random"
    return InputSet(feeds, source, names, inputs.preprocess, list(inputs.notes))
