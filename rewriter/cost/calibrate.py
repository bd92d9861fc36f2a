"""Calibrate the ``cpu`` profile on this machine and compare predicted with measured per-layer times.

``calibrate_cpu(models)`` runs each model with OpenVINO performance counters, fits per op kind
``time = overhead + work / rate`` (work = MACs for conv-like kinds, bytes for memory-bound kinds), and
stores the profile as JSON with the machine's description in the cache dir ($REWRITER_CACHE or
~/.cache/midas-rewriter/). ``predict(..., "cpu")`` uses it when the machine matches, else the default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..model import ModelHandle
from .layers import layers
from .model import cpu_work
from .profiles import DEFAULT_CPU, CPUProfile

_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile",
          "amx_int8", "amx_bf16", "avx512_fp16")


def cache_dir() -> Path:
    """$REWRITER_CACHE, else ~/.cache/midas-rewriter."""
    env = os.environ.get("REWRITER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "midas-rewriter"


def machine_description() -> dict[str, Any]:
    """CPU model, ISA flags that matter to OpenVINO CPU kernels, core count, OpenVINO version."""
    return dict(_machine_description())


@functools.lru_cache(maxsize=1)
def _machine_description() -> dict[str, Any]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:  # not Linux: keep platform's description
        pass
    try:
        import openvino as ov

        ov_version = ov.get_version()
    except Exception:
        ov_version = "unknown"
    return {"cpu": model, "flags": sorted(f for f in _FLAGS if f in flags), "cores": os.cpu_count(),
            "openvino": ov_version, "system": platform.system()}


def _machine_key(desc: dict[str, Any]) -> str:
    raw = json.dumps({k: desc.get(k) for k in ("cpu", "flags", "cores", "openvino")}, sort_keys=True)
    return hashlib.sha1(raw.encode()).hexdigest()[:12]


def profile_path(desc: dict[str, Any] | None = None) -> Path:
    """Where this machine's calibrated cpu profile lives."""
    return cache_dir() / f"cpu-profile-{_machine_key(desc or machine_description())}.json"


def load_cpu_profile() -> CPUProfile:
    """The cached calibration for this machine, else the shipped default profile."""
    path = profile_path()
    if path.exists():
        try:
            return CPUProfile.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # a corrupt cache falls back to the default
            pass
    return DEFAULT_CPU


_MAX_OVERHEAD_US = 50.0  # a CPU node's fixed cost is microseconds; a larger intercept is noise


def _fit(samples: list[tuple[float, float]], default: dict[str, Any]) -> dict[str, Any]:
    """Fit t = a + work / rate: the intercept from relative-error least squares (clamped to
    [0, 50 us]), the rate so the fitted times sum to the measured total (the report compares totals)."""
    work = np.array([s[0] for s in samples], dtype=float)
    t = np.array([s[1] for s in samples], dtype=float)
    a = min(float(default["overhead_us"]), float(np.min(t)) * 0.5)
    if len(samples) >= 3 and np.ptp(work) > 0:
        wts = 1.0 / np.maximum(t, 1e-3)  # relative error: small layers count as much as big ones
        coef, *_ = np.linalg.lstsq(np.stack([np.ones_like(work), work], 1) * wts[:, None], t * wts, rcond=None)
        a = float(np.clip(coef[0], 0.0, min(_MAX_OVERHEAD_US, float(np.min(t)))))
    rest = float(np.sum(np.maximum(t - a, 1e-3)))
    rate = float(np.sum(work)) / rest if rest > 0 and np.sum(work) > 0 else float(default["rate"])
    return {"metric": default["metric"], "rate": round(rate, 3), "overhead_us": round(a, 3),
            "samples": len(samples)}


def probe_models(sizes: tuple[tuple[int, int, int], ...] = ((32, 36, 64), (64, 72, 128))) -> list[ModelHandle]:
    """Single-op ONNX graphs covering every op kind the cpu profile fits, at a few (C, H, W) sizes."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    out = []

    def graph(name, nodes, c, h, w, inits, out_shape=None):
        g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
        return ModelHandle(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))

    def wt(*shape):
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    for c, h, w in sizes:
        conv = lambda nm, wshape, **kw: helper.make_node("Conv", ["x", "W"], ["y"], name=nm, **kw)  # noqa: E731
        out.append(graph("conv3", [conv("conv3", None, pads=[1, 1, 1, 1])], c, h, w, {"W": wt(c, c, 3, 3)}))
        out.append(graph("conv1", [conv("conv1", None)], c, h, w, {"W": wt(2 * c, c, 1, 1)}))
        out.append(graph("dw3", [conv("dw3", None, pads=[1, 1, 1, 1], group=c)], c, h, w, {"W": wt(c, 1, 3, 3)}))
        out.append(graph("dwm2", [conv("dwm2", None, pads=[1, 1, 1, 1], group=c)], c, h, w,
                         {"W": wt(2 * c, 1, 3, 3)}))
        out.append(graph("gconv", [conv("gconv", None, pads=[1, 1, 1, 1], group=c // 8)], c, h, w,
                         {"W": wt(c, 8, 3, 3)}))
        out.append(graph("deconv", [helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="deconv",
                                                     strides=[2, 2], pads=[1, 1, 1, 1])], c, h, w,
                         {"W": wt(c, c // 2, 4, 4)}))
        out.append(graph("dwdeconv", [helper.make_node("ConvTranspose", ["x", "W"], ["y"], name="dwdeconv",
                                                       strides=[2, 2], pads=[1, 1, 1, 1], group=c)], c, h, w,
                         {"W": wt(c, 1, 4, 4)}))
        for cm in ("align_corners", "half_pixel", "asymmetric"):
            out.append(graph(f"resize_{cm}", [helper.make_node(
                "Resize", ["x", "", "s"], ["y"], name=f"resize_{cm}", mode="linear",
                coordinate_transformation_mode=cm)], c, h, w, {"s": np.array([1, 1, 2, 2], np.float32)}))
        out.append(graph("add", [helper.make_node("Add", ["x", "x2"], ["y"], name="add"),
                                 helper.make_node("Relu", ["x"], ["x2"], name="relu")], c, h, w, {}))
        out.append(graph("sigmoid", [helper.make_node("Sigmoid", ["x"], ["y"], name="sigmoid")], c, h, w, {}))
        out.append(graph("concat", [helper.make_node("Relu", ["x"], ["x2"], name="relu"),
                                    helper.make_node("Concat", ["x", "x2"], ["y"], name="concat", axis=1)],
                         c, h, w, {}))
        out.append(graph("pad", [helper.make_node("Pad", ["x", "p"], ["y"], name="pad", mode="reflect")], c, h, w,
                         {"p": np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)}))
        out.append(graph("maxpool", [helper.make_node("MaxPool", ["x"], ["y"], name="maxpool", kernel_shape=[3, 3],
                                                      pads=[1, 1, 1, 1])], c, h, w, {}))
    return out


def calibrate_cpu(models: list[ModelHandle | Any] | None = None, runs: int = 5, save: bool = True,
                  threads: int | None = None, probes: bool = True) -> CPUProfile:
    """Fit the cpu profile's per-kind throughput from performance counters; cache it for this machine.

    The models run round-robin (``perf_counters_interleaved``) so load swings on a shared machine hit them
    alike. Uses ``models`` (e.g. the MiDaS exports being optimised) plus, with ``probes``, single-op graphs that
    cover every op kind (``probe_models()``).
    """
    from .measure import perf_counters_interleaved

    models = [m if isinstance(m, ModelHandle) else ModelHandle.load(m)
              for m in list(models or []) + (probe_models() if probes else [])]
    all_rows = perf_counters_interleaved(models, runs=runs, threads=threads)

    base = load_cpu_profile()  # refine an earlier calibration of this machine, else start from the default
    samples: dict[str, list[tuple[float, float]]] = {}
    int8_pairs: list[tuple[float, float]] = []
    for h, rows in zip(models, all_rows):
        infos = {i.node: i for i in layers(h)}
        for row in rows:
            info = infos.get(row["node"])
            if info is None or info.op in ("shape", "reshape") or (info.op == "quant"
                                                                  and not info.attrs.get("cpu_standalone")):
                continue
            kind = info.cost_kind
            spec = DEFAULT_CPU.kinds.get(kind) or DEFAULT_CPU.kinds.get(info.op) or DEFAULT_CPU.kinds["other"]
            work = cpu_work(info, spec["metric"])
            key = kind if kind in DEFAULT_CPU.kinds else info.op
            if info.precision == "int8" and spec["metric"] == "macs":
                if key == "conv":
                    int8_pairs.append((work, row["us"]))
                key = f"{key}_int8"  # each INT8 form gets its own rate (depthwise int8 is not conv int8)
            samples.setdefault(key, []).append((work, row["us"]))
    kinds = {k: dict(v) for k, v in base.kinds.items()}
    for kind, ss in samples.items():
        default = kinds.get(kind) or DEFAULT_CPU.kinds.get(kind.removesuffix("_int8")) or DEFAULT_CPU.kinds["other"]
        kinds[kind] = _fit(ss, default)
    int8_speedup = base.int8_speedup
    if int8_pairs and "conv" in kinds:
        rate8 = sum(w for w, _ in int8_pairs) / max(sum(max(t - kinds["conv"]["overhead_us"], 1e-3)
                                                        for _, t in int8_pairs), 1e-9)
        int8_speedup = round(rate8 / kinds["conv"]["rate"], 3)
    desc = machine_description()
    prof = CPUProfile(name="cpu", description=f"OpenVINO CPU plugin, FP32, calibrated on {desc['cpu']}",
                      kinds=kinds, mem_gbps=base.mem_gbps, int8_speedup=int8_speedup,
                      source=f"calibrated {time.strftime('%Y-%m-%d %H:%M:%S')} on {len(models)} model(s)",
                      machine=desc)
    if save:
        path = profile_path(desc)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(prof.to_json(), indent=1))
        os.replace(tmp, path)
    return prof


def predicted_vs_measured(model: ModelHandle | Any, runs: int = 5, top: int = 15,
                          threads: int | None = None) -> dict[str, Any]:
    """Predicted (cpu profile) vs measured (performance counters) per layer and per kind, for the report."""
    from .measure import perf_counters
    from .model import predict

    h = model if isinstance(model, ModelHandle) else ModelHandle.load(model)
    pred = predict(h, "cpu")
    pmap = {c.node: c.us for c in pred.layers}
    rows = perf_counters(h, runs=runs, threads=threads)
    measured: dict[str, float] = {}
    kinds: dict[str, str] = {}
    for r in rows:
        measured[r["node"]] = measured.get(r["node"], 0.0) + r["us"]
        kinds[r["node"]] = r["op"]
        for f in r["fused"]:  # predicted time of fused partners is compared against the group's time
            pmap[r["node"]] = pmap.get(r["node"], 0.0) + pmap.pop(f, 0.0)
    per_layer = []
    for node in sorted(set(measured) | {n for n, us in pmap.items() if us > 0},
                       key=lambda n: -max(measured.get(n, 0.0), pmap.get(n, 0.0))):
        per_layer.append({"node": node, "op": kinds.get(node) or next(
            (c.op for c in pred.layers if c.node == node), "other"),
            "predicted_us": round(pmap.get(node, 0.0), 2), "measured_us": round(measured.get(node, 0.0), 2)})
    by_kind: dict[str, dict[str, float]] = {}
    for r in per_layer:
        k = by_kind.setdefault(r["op"], {"predicted_ms": 0.0, "measured_ms": 0.0})
        k["predicted_ms"] += r["predicted_us"] / 1000.0
        k["measured_ms"] += r["measured_us"] / 1000.0
    pt, mt = pred.total_ms, sum(measured.values()) / 1000.0
    return {"predicted_ms": round(pt, 3), "measured_ms": round(mt, 3),
            "ratio": round(pt / mt, 3) if mt > 0 else None, "profile": load_cpu_profile().source,
            "by_kind": {k: {kk: round(vv, 3) for kk, vv in v.items()} for k, v in
                        sorted(by_kind.items(), key=lambda kv: -kv[1]["measured_ms"])},
            "layers": per_layer[:top], "runs": runs}
