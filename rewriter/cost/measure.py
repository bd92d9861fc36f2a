"""Measured latency on OpenVINO CPU: interleaved A/B timing and per-layer performance counters.

Machines are noisy (the same model's median moved 135–243 ms across runs here), so A and B are compiled once
and run alternately, and the ratio is the median of per-pair ratios, not a ratio of medians.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

from ..errors import RewriteError
from ..model import ModelHandle, ov_core
from .layers import fixed_input_shapes, layers


def _handle(model: ModelHandle | Any) -> ModelHandle:
    return model if isinstance(model, ModelHandle) else ModelHandle.load(model)


def _compiled(handle: ModelHandle, fixed: dict[str, list[int]], perf: bool = False, threads: int | None = None):
    """Compile for CPU at FP32 with static input shapes; returns (compiled model, ov.Model)."""
    m = handle.ov_model()
    if any(not p.get_partial_shape().is_static for p in m.inputs):
        m = m.clone()
        m.reshape(fixed)
    cfg: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
    if perf:
        cfg["PERF_COUNT"] = "YES"
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        return ov_core().compile_model(m, "CPU", cfg), m
    except Exception as e:
        raise RewriteError(f"{handle.name}: OpenVINO CPU cannot compile it for timing: {str(e)[:300]}") from e


def _feed(handle: ModelHandle, fixed: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {}
    for name, _shape, dtype in handle.inputs():
        shape = fixed[name]
        if np.issubdtype(dtype, np.floating):
            feed[name] = rng.standard_normal(shape).astype(dtype)
        else:
            feed[name] = rng.integers(0, 2, size=shape).astype(dtype)
    return feed


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def measure_ab(a: ModelHandle | Any, b: ModelHandle | Any, runs: int = 20, warmup: int = 3,
               threads: int | None = None, seed: int = 0,
               input_shape: dict[str, list[int]] | list[int] | None = None) -> dict[str, Any]:
    """Interleaved A/B latency on OpenVINO CPU (FP32 hint; INT8 layers still run INT8).

    Both models are compiled once; each round runs A then B (odd rounds B then A, so neither always goes
    first). Returns before/after median and p90 in ms, ``ratio`` = median over rounds of after/before (< 1
    means B is faster), ``speedup`` = 1 / ratio, and the run count.
    """
    if runs < 1:
        raise RewriteError(f"measure runs={runs}: must be >= 1")
    from ..progress import count

    ha, hb = _handle(a), _handle(b)
    fa, fb = fixed_input_shapes(ha, input_shape), fixed_input_shapes(hb, input_shape)
    ca, _ = _compiled(ha, fa, threads=threads)
    cb, _ = _compiled(hb, fb, threads=threads)
    ra, rb = ca.create_infer_request(), cb.create_infer_request()
    xa, xb = _feed(ha, fa, seed), _feed(hb, fb, seed)
    for _ in range(max(0, warmup)):
        ra.infer(xa)
        rb.infer(xb)
    ta: list[float] = []
    tb: list[float] = []
    for i in range(runs):
        order = ((ra, xa, ta), (rb, xb, tb)) if i % 2 == 0 else ((rb, xb, tb), (ra, xa, ta))
        for req, x, acc in order:
            t0 = time.perf_counter()
            req.infer(x)
            acc.append((time.perf_counter() - t0) * 1000.0)
        count("measuring (interleaved A/B runs)", i + 1, runs)
    ratios = [y / x for x, y in zip(ta, tb) if x > 0]
    ratio = statistics.median(ratios)
    return {
        "before_ms": round(statistics.median(ta), 4),
        "after_ms": round(statistics.median(tb), 4),
        "before_p90_ms": round(_pct(ta, 90), 4),
        "after_p90_ms": round(_pct(tb, 90), 4),
        "ratio": round(ratio, 4),
        "ratio_p10_p90": [round(_pct(ratios, 10), 4), round(_pct(ratios, 90), 4)],
        "speedup": round(1.0 / ratio, 4) if ratio > 0 else None,
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "device": "CPU",
    }


def _ov_to_graph_names(handle: ModelHandle, ovm) -> dict[str, str]:
    """{OpenVINO friendly name: graph node id (as ``layers`` names it)}, read through the graph view: the name
    itself when it is a node id, else by the tensor names of the op's outputs, else by a name prefix that is a
    node id ("<node>/WithoutBiases")."""
    from ..graph import view

    v = view(handle)
    tensor_to_node = {name: n.id for n in v.nodes if n.kind != "output"  # a Result's port repeats its input's names
                      for t in n.outputs if t for name in v.names_of(t)}
    ids = set(v.by_id)
    out = {}
    for op in ovm.get_ops():
        fn = op.get_friendly_name()
        hit = fn if fn in ids else next((tensor_to_node[t] for port in op.outputs() for t in port.get_names()
                                         if t in tensor_to_node), None)
        prefix = fn
        for _ in range(3):  # "<node>/WithoutBiases" and similar decompositions keep the node name as prefix
            if hit is not None or not prefix:
                break
            if prefix in ids:
                hit = prefix
            prefix = prefix.rpartition("/")[0]
        if hit is not None:
            out[fn] = hit
    return out


class _PerfSession:
    """One model compiled with performance counters; ``infer()`` adds one run's per-node times."""

    def __init__(self, model: ModelHandle | Any, threads: int | None = None,
                 input_shape: dict[str, list[int]] | list[int] | None = None, warmup: int = 1):
        self.handle = _handle(model)
        self.fixed = fixed_input_shapes(self.handle, input_shape)
        self.compiled, self.ovm = _compiled(self.handle, self.fixed, perf=True, threads=threads)
        self.req = self.compiled.create_infer_request()
        self.x = _feed(self.handle, self.fixed)
        self.times: dict[str, list[float]] = {}
        self.meta: dict[str, tuple[str, str]] = {}
        for _ in range(max(0, warmup)):
            self.req.infer(self.x)

    def infer(self) -> None:
        self.req.infer(self.x)
        for pi in self.req.get_profiling_info():
            if str(pi.status).endswith(".EXECUTED"):  # skip NOT_RUN / OPTIMIZED_OUT nodes
                self.times.setdefault(pi.node_name, []).append(pi.real_time.total_seconds() * 1e6)
                self.meta[pi.node_name] = (pi.node_type, pi.exec_type)

    def rows(self) -> list[dict[str, Any]]:
        originals: dict[str, list[str]] = {}
        for op in self.compiled.get_runtime_model().get_ops():
            ri = op.get_rt_info()
            if "originalLayersNames" in ri:
                raw = ri["originalLayersNames"].astype(str)
                originals[op.get_friendly_name()] = [s for s in raw.split(",") if s]
        to_graph = _ov_to_graph_names(self.handle, self.ovm)
        infos = {i.node: i for i in layers(self.handle, input_shape=self.fixed)}
        rows = []
        for rname, ts in self.times.items():
            graph_nodes = []
            for o in originals.get(rname, []) or [rname]:
                g = to_graph.get(o)
                if g and g in infos and g not in graph_nodes:
                    graph_nodes.append(g)
            ltype, etype = self.meta[rname]
            if graph_nodes:
                main = max(graph_nodes, key=lambda g: (_kind_rank(infos[g].op), infos[g].macs, infos[g].bytes))
                kind = infos[main].op
            else:
                main, kind = rname, ("reorder" if ltype == "Reorder" else "other")
            rows.append({"node": main, "fused": [g for g in graph_nodes if g != main], "op": kind,
                         "runtime_name": rname, "layer_type": ltype, "exec_type": etype,
                         "us": round(statistics.median(ts), 3)})
        return rows


def perf_counters(model: ModelHandle | Any, runs: int = 5, warmup: int = 1, threads: int | None = None,
                  input_shape: dict[str, list[int]] | list[int] | None = None) -> list[dict[str, Any]]:
    """Per-layer CPU times from OpenVINO performance counters, mapped back to graph nodes.

    One row per executed runtime node: ``node`` (the graph node it is charged to: the most expensive of the
    original nodes it fused, e.g. a Conv with its ReLU), ``fused`` (the other graph nodes folded into it),
    ``op`` (cost-model kind of ``node``, or ``reorder``/``other`` for plugin-inserted nodes),
    ``runtime_name``, ``layer_type``, ``exec_type`` and ``us`` (median over ``runs``).
    """
    session = _PerfSession(model, threads=threads, input_shape=input_shape, warmup=warmup)
    for _ in range(max(1, runs)):
        session.infer()
    return session.rows()


def perf_counters_interleaved(models: list[ModelHandle | Any], runs: int = 5, warmup: int = 1,
                              threads: int | None = None) -> list[list[dict[str, Any]]]:
    """``perf_counters`` of several models, run round-robin (one inference of each per round), so a busy
    machine's slow spells hit every model alike and their per-kind rates stay comparable."""
    sessions = [_PerfSession(m, threads=threads, warmup=warmup) for m in models]
    for _ in range(max(1, runs)):
        for s in sessions:
            s.infer()
    return [s.rows() for s in sessions]


def _kind_rank(kind: str) -> int:
    order = ("conv", "gconv", "dwconv", "convtranspose", "dwconvtranspose", "resize", "pool", "eltwise",
             "concat", "pad", "activation", "other", "quant", "reshape", "shape")
    return len(order) - order.index(kind) if kind in order else 0
