"""Latency: predicted per layer for kmb / mtl / cpu, and measured on OpenVINO CPU.

``predict(model, target)`` → ModelCost; ``compare(before, after, target)`` → dict for the report;
``measure_ab(a, b)`` interleaved A/B timing; ``perf_counters(model)`` per-layer CPU times;
``calibrate_cpu(models)`` fits the ``cpu`` profile on this machine; ``resize_lowering(...)`` where the NPU compiler
puts a resize; ``cost_report(model, targets)`` / ``alongside(...)`` back ``rewrite cost``.
"""

from .calibrate import calibrate_cpu, load_cpu_profile, machine_description, predicted_vs_measured
from .command import alongside, attach_alongside, cost_report
from .layers import KINDS, LayerInfo, layers
from .lowering import Lowering, resize_lowering
from .measure import measure_ab, perf_counters
from .model import (
    TARGETS,
    LayerCost,
    ModelCost,
    compare,
    conv_cost_us,
    cost_table_text,
    dwpw_engines,
    dwpw_pair_cost_us,
    get_profile,
    layer_cost,
    predict,
    resize_cost_us,
)
from .profiles import FRAME_BUDGET_MS, KMB, MTL, CPUProfile, NPUProfile

__all__ = [
    "FRAME_BUDGET_MS", "KINDS", "KMB", "MTL", "TARGETS", "CPUProfile", "LayerCost", "LayerInfo", "Lowering",
    "ModelCost", "NPUProfile", "alongside", "attach_alongside", "calibrate_cpu", "compare", "conv_cost_us",
    "cost_report", "cost_table_text", "dwpw_engines", "dwpw_pair_cost_us", "get_profile", "layer_cost", "layers",
    "load_cpu_profile", "machine_description", "measure_ab", "perf_counters", "predict", "predicted_vs_measured",
    "resize_cost_us",
    "resize_lowering",
]
