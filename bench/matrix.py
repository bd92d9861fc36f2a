"""What the bench runs: models (fixtures), pass sets, and the per-model measurement budget.

Kept as plain data so the runner, the tables and the README agree on names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """One matrix row group: a fixture, how it is labelled, and how much measuring it can afford."""

    key: str  # short label used on the command line and in tables
    fixture: str  # name for fixtures.fixture_path
    weights: str  # "trained" (the trained proxy) or "seeded" (data-calibrated seeded weights)
    resolution: str  # "HxW"
    eval_images: int  # held-out photos used for fidelity (the GT image is always added)
    verify_images: int  # photos the tool's own per-pass gate runs on (part of its wall time)
    runs: int  # measured A/B runs per side (medians)
    warmup: int = 2
    pass_sets: tuple[str, ...] | None = None  # None: every pass set
    timeout_s: int = 900  # per rewrite child process
    note: str = ""


@dataclass(frozen=True)
class PassSet:
    """One matrix column: the passes in order and their options."""

    key: str
    passes: str
    opts: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str = ""


# dwpw rank 1 is the pipeline's choice: ranks 2-3 were measured slower than the original on CPU (CONTEXT.md).
PASS_SETS: dict[str, PassSet] = {p.key: p for p in [
    PassSet("asym", "asym_interp", note="align_corners → asymmetric on the 4 decoder upsamples"),
    PassSet("asym+deconv", "asym_interp,interp_deconv", note="then bilinear → depthwise ConvTranspose (exact)"),
    PassSet("dwpw-r1", "dwpw", {"dwpw": {"rank": 1, "refit": True}}),
    PassSet("dwpw-r1-norefit", "dwpw", {"dwpw": {"rank": 1, "refit": False}}),
    PassSet("dwpw-r2", "dwpw", {"dwpw": {"rank": 2, "refit": True}}),
    PassSet("dwpw-r2-norefit", "dwpw", {"dwpw": {"rank": 2, "refit": False}}),
    PassSet("dwpw-e0.9", "dwpw", {"dwpw": {"energy": 0.9, "refit": True}}),
    PassSet("dwpw-e0.9-norefit", "dwpw", {"dwpw": {"energy": 0.9, "refit": False}}),
    PassSet("int8", "int8"),
    PassSet("asym+dwpw+int8", "asym_interp,dwpw,int8", {"dwpw": {"rank": 1, "refit": True}},
            note="full pipeline, dwpw rank 1 with refit"),
]}

# midasnet runs ~2 s per inference on 2 cores: few images, few runs, and the pass sets that matter.
MIDASNET_SETS = ("asym", "asym+deconv", "dwpw-r1", "dwpw-r1-norefit", "int8", "asym+dwpw+int8")

# Order = run order: the headline rows first (trained proxy, then midasnet), so a cut-short run still has them.
MODELS: dict[str, ModelSpec] = {m.key: m for m in [
    ModelSpec("small288-trained", "small_trained_ts17_288x512", "trained", "288x512", eval_images=4,
              verify_images=3, runs=15, note="trained proxy: the fidelity numbers to believe"),
    ModelSpec("midasnet384", "midasnet_ts11_384x384", "seeded", "384x384", eval_images=1, verify_images=2,
              runs=4, warmup=1, pass_sets=MIDASNET_SETS, timeout_s=2400,
              note="~2 s per inference here: 1 held-out photo + the GT image, 4 A/B runs, 6 pass sets"),
    ModelSpec("small256", "small_ts17_256x256", "seeded", "256x256", eval_images=4, verify_images=3, runs=15),
    ModelSpec("small288", "small_ts17_288x512", "seeded", "288x512", eval_images=4, verify_images=3, runs=15),
    ModelSpec("small384x672", "small_ts17_384x672", "seeded", "384x672", eval_images=4, verify_images=3,
              runs=10),
]}

QUICK_MODELS = ("small256", "small288-trained")
QUICK_SETS = ("asym", "dwpw-r1", "int8", "asym+dwpw+int8")
QUICK_RUNS = 6  # measured A/B runs per side in --quick
QUICK_IMAGES = 2  # held-out photos for fidelity and photos for the tool's gates in --quick


def cells(models: list[str], sets: list[str], restrict: bool = True) -> list[tuple[ModelSpec, PassSet]]:
    """The (model, pass set) cells to run, in order.

    With ``restrict`` (the default matrix) a model's own pass-set list applies; explicit ``--sets`` lift it.
    """
    out = []
    for mk in models:
        m = model_spec(mk)
        for sk in sets:
            if sk not in PASS_SETS:
                raise KeyError(f"unknown pass set '{sk}' (known: {', '.join(PASS_SETS)})")
            if restrict and m.pass_sets is not None and sk not in m.pass_sets:
                continue
            out.append((m, PASS_SETS[sk]))
    return out


def model_spec(key: str) -> ModelSpec:
    """The spec for a model key, or an ad-hoc spec for any other fixture name or model path (default budget)."""
    if key in MODELS:
        return MODELS[key]
    fixture = key
    if key.endswith((".onnx", ".xml")):  # a model file: label it by its file stem
        key = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    weights = "trained" if "trained" in key else "seeded"
    tail = key.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("_", 1)[-1]  # "..._288x512[.onnx]" → "288x512"
    res = tail if "x" in tail else "?"
    heavy = "midasnet" in key
    return ModelSpec(key, fixture, weights, res, eval_images=1 if heavy else 4, verify_images=2 if heavy else 3,
                     runs=4 if heavy else 10, pass_sets=MIDASNET_SETS if heavy else None,
                     timeout_s=2400 if heavy else 900)
