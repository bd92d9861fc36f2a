"""Numerical equivalence: run two models on the same inputs, compare, gate, and locate the first divergence.

- ``comparison``: the feeds (``verification_inputs``), running both models, per-input metrics and their
  aggregation (``compare``, ``check_compatible``);
- ``gates``: the tolerance and budget gates (``parse_budget``, ``check_pass``; defaults and their
  measurements in its docstring);
- ``locator``: the first divergent node (``locate``), read through the graph view;
- ``groundtruth``: accuracy against ground-truth disparity (``ground_truth``);
- ``command``: ``verify_models`` (the library form of ``rewrite verify``), its rendering and CLI handler.
"""

from __future__ import annotations

from .command import render_verify, run_verify, verify_models
from .comparison import (
    DEPTH_KEYS,
    EXACT_RANDOM_FEEDS,
    RUNTIME_NAMES,
    check_compatible,
    compare,
    describe_inputs,
    verification_inputs,
)
from .gates import (
    BUDGET_METRICS,
    DEFAULT_BUDGET,
    DEFAULT_GATES,
    DEFAULT_RANDOM_BUDGET,
    DEFAULT_TOL,
    budget_gate,
    check_pass,
    default_budget,
    parse_budget,
    tolerance_gate,
)
from .groundtruth import ground_truth, ground_truth_pairs
from .locator import LOCATE_CHUNK_ELEMENTS, LOCATE_CHUNK_TENSORS, LOCATE_FEEDS, locate

__all__ = ["BUDGET_METRICS", "DEFAULT_BUDGET", "DEFAULT_GATES", "DEFAULT_RANDOM_BUDGET", "DEFAULT_TOL", "DEPTH_KEYS",
           "EXACT_RANDOM_FEEDS", "LOCATE_CHUNK_ELEMENTS", "LOCATE_CHUNK_TENSORS", "LOCATE_FEEDS", "RUNTIME_NAMES",
           "budget_gate", "check_compatible", "check_pass", "compare", "default_budget", "describe_inputs",
           "ground_truth", "ground_truth_pairs", "locate", "parse_budget", "render_verify", "run_verify",
           "tolerance_gate", "verification_inputs", "verify_models"]
