"""Analytic per-layer latency model: predict(), compare(), what-if helpers, and a plain-text table.

Per layer: time = max(compute on its engine, DDR traffic) + per-workload overhead.
- NPU (``kmb``, ``mtl``): convolutions, depthwise, pooling and eltwise run on the DPU MAC array, with channels
  padded to groups of 16, depthwise at a fraction of the array, INT8 ``fp16_ratio`` times faster than FP16,
  105 DPU cycles per workload; a layer larger than CMX is tiled spatially, and only tensors that neither fit
  CMX nor have a single reader go to DDR (``npu_residency``). Each resize is priced as the ops the NPU compiler
  lowers it to (``lowering.resize_lowering``: SHAVE kernel, depthwise convs, per-line GroupConvs, DMA copies).
  Other activations run on the SHAVE DSPs. FP32 models are costed as FP16.
- CPU (``cpu``): per op kind (and per INT8 form), overhead + max(work / fitted rate, bytes / memory bandwidth);
  the rates come from ``calibrate_cpu`` on this machine when a calibration is cached, else the shipped default.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import RewriteError
from ..model import ModelHandle
from .layers import LayerInfo, layers, make_layer, synthetic_conv
from .lowering import Lowering, resize_lowering
from .profiles import FRAME_BUDGET_MS, NPU_PROFILES, CPUProfile, NPUProfile

TARGETS = ("kmb", "mtl", "cpu")
_DPU_KINDS = ("conv", "dwconv", "gconv", "convtranspose", "dwconvtranspose", "pool", "eltwise")
_FREE_KINDS = ("shape", "reshape", "quant")


@dataclass
class LayerCost:
    """Predicted cost of one layer on one target."""

    node: str
    op: str
    shape: list[int]
    unit: str          # dpu | shave | dma | cpu
    macs: int
    bytes: int
    us: float
    tag: str | None = None
    precision: str = "fp32"
    note: str = ""
    engine: str = ""   # where it runs: dpu | shave | dma | cpu (a resize: the compiler's lowering)
    lowering: dict[str, Any] | None = None  # resize on an NPU: {"rule", "citation", "ops"}

    def __post_init__(self) -> None:
        self.engine = self.engine or self.unit

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if d["lowering"] is None:
            del d["lowering"]
        d["us"] = round(self.us, 3)
        return d


@dataclass
class ModelCost:
    """Predicted cost of a whole model on one target."""

    target: str
    layers: list[LayerCost]
    profile: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float:
        return sum(c.us for c in self.layers) / 1000.0

    @property
    def fps(self) -> float:
        return 1000.0 / self.total_ms if self.total_ms > 0 else float("inf")

    @property
    def frame_share(self) -> float:
        """Fraction of the 60 fps frame budget (16.7 ms) this model takes."""
        return self.total_ms / FRAME_BUDGET_MS

    def by_unit(self) -> dict[str, float]:
        """{unit: ms}."""
        out: dict[str, float] = {}
        for c in self.layers:
            out[c.unit] = out.get(c.unit, 0.0) + c.us / 1000.0
        return {k: round(v, 4) for k, v in sorted(out.items())}

    def by_op(self) -> dict[str, float]:
        """{op kind: ms}."""
        out: dict[str, float] = {}
        for c in self.layers:
            out[c.op] = out.get(c.op, 0.0) + c.us / 1000.0
        return {k: round(v, 4) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}

    def top(self, n: int = 10) -> list[LayerCost]:
        """The ``n`` most expensive layers."""
        return sorted(self.layers, key=lambda c: -c.us)[:n]

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "profile": self.profile, "total_ms": round(self.total_ms, 4),
                "fps": round(self.fps, 2), "frame_share": round(self.frame_share, 4),
                "frame_budget_ms": round(FRAME_BUDGET_MS, 3), "by_unit": self.by_unit(), "by_op": self.by_op(),
                "notes": list(self.notes), "layers": [c.to_json() for c in self.layers if c.us > 0 or c.macs]}


# ---- profiles --------------------------------------------------------------------------------------------
def get_profile(target: str) -> NPUProfile | CPUProfile:
    """The profile for ``target``: the NPU tables, or the cached CPU calibration (else the default)."""
    if target in NPU_PROFILES:
        return NPU_PROFILES[target]
    if target == "cpu":
        from .calibrate import load_cpu_profile

        return load_cpu_profile()
    raise RewriteError(f"unknown target '{target}' (use one of {', '.join(TARGETS)})")


# ---- per-layer costs -------------------------------------------------------------------------------------
def _ceil_to(x: int, g: int) -> int:
    return int(math.ceil(x / g) * g) if x > 0 else 0


def _dims(info: LayerInfo) -> tuple[int, int, int, int]:
    s = info.out_shape
    if len(s) == 4:
        return s[0], s[1], s[2], s[3]
    if len(s) == 3:
        return 1, s[0], s[1], s[2]
    if len(s) == 2:
        return s[0], s[1], 1, 1
    return 1, max(1, info.out_elems), 1, 1


def _resize_lowering(info: LayerInfo, target: str, prec: str) -> Lowering:
    a = info.attrs
    in_shape = info.in_shapes[0] if info.in_shapes else info.out_shape
    return resize_lowering(str(a.get("mode")), str(a.get("coordinate_mode")), in_shape, info.out_shape, target,
                           precision=prec, single_use=len(info.consumers) <= 1)


def _dpu_work(kind: str, info: LayerInfo, p: NPUProfile, prec: str) -> tuple[float, float]:
    """(padded work units, units per cycle per DPU) of a DPU op [VPUNN-THEO]."""
    n, c, ho, wo = _dims(info)
    g16 = p.channel_group
    pix = n * ho * wo
    macs_per_cycle = p.int8_macs_per_dpu / (1.0 if prec == "int8" else p.fp16_ratio)
    kh, kw = info.kernel
    if kind in ("dwconv", "dwconvtranspose", "pool"):
        return pix * _ceil_to(c, g16) * kh * kw, macs_per_cycle * p.dw_efficiency / p.input_channels_mac
    if kind == "eltwise":
        return pix * _ceil_to(c, g16), float(p.ppe_per_dpu)  # PPE rate, elements/cycle
    g = max(1, info.groups)
    cin = info.in_shapes[0][1] if info.in_shapes and len(info.in_shapes[0]) > 1 else c
    cin_g = max(1, cin // g)
    cin_pad = 4 if cin_g <= 4 else _ceil_to(cin_g, g16)  # channel-major first layer (C <= 4)
    if info.op_type in ("Gemm", "MatMul"):
        return _ceil_to(info.macs, g16), macs_per_cycle
    return pix * g * _ceil_to(max(1, c // g), g16) * cin_pad * kh * kw, macs_per_cycle


def dpu_time(kind: str, info: LayerInfo, p: NPUProfile, prec: str, in_ddr_elems: int = 0, out_ddr: bool = False,
              tasks: int = 1) -> tuple[float, str]:
    """µs of one DPU layer: max(compute, DDR traffic) + per-workload overhead; and a note.

    Compute is split over output rows x 16-channel blocks across every DPU (idle DPUs when there is too little
    work). DDR traffic: weights (prefetched, overlapping compute [VPUNN-LAYER]) plus the activations that live
    in DDR (``in_ddr_elems``, ``out_ddr``). A layer larger than CMX is tiled spatially [VF]: each spatial tile is
    another set of workloads, each paying ``workload_overhead_cycles`` [NPU-TILER].
    """
    n, c, ho, wo = _dims(info)
    bpe = 1 if prec == "int8" else 2
    work, rate = _dpu_work(kind, info, p, prec)
    items = max(1, ho * n) * max(1, _ceil_to(c, p.channel_group) // p.channel_group)
    util = items / (math.ceil(items / p.dpus) * p.dpus)
    compute_us = work / (rate * p.dpus * util) / p.dpu_clock_mhz
    w_b = info.weight_elems * bpe
    act_b = (info.in_elems + info.out_elems) * bpe
    cmx = p.cmx_bytes_per_tile - RUNTIME_CMX - min(w_b, p.cmx_bytes_per_tile // 2)
    spatial = max(1, math.ceil(act_b / p.tiles / max(cmx, 1)))  # spatial tiles per NCE tile
    ch_blocks = math.ceil(c / p.dw_channels_per_workload) if kind in ("dwconv", "dwconvtranspose", "pool") else 1
    workloads = tasks * spatial * p.tiles * max(p.dpus_per_tile, ch_blocks)
    overhead_us = math.ceil(workloads / p.dpus) * p.workload_overhead_cycles / p.dpu_clock_mhz
    ddr_b = w_b + in_ddr_elems * bpe + (info.out_elems * bpe if out_ddr else 0)
    dma_us = ddr_b / (p.ddr_gbps * 1e3) + (p.dma_latency_us if (in_ddr_elems or out_ddr) else 0.0)
    notes = []
    if spatial > 1:
        notes.append(f"tiled x{spatial} (> CMX)")
    if in_ddr_elems or out_ddr:
        notes.append("DDR " + "/".join(x for x, on in (("in", in_ddr_elems), ("out", out_ddr)) if on))
    return max(compute_us, dma_us) + overhead_us, "; ".join(notes)


RUNTIME_CMX = 80 * 1024  # CMX reserved for the runtime [VPUNN-LAYER]


def lowered_resize_us(low: Lowering, info: LayerInfo, p: NPUProfile, prec: str, in_ddr: int, out_ddr: bool) -> float:
    """Price the ops the compiler emits for one resize (see ``lowering.resize_lowering``)."""
    bpe = 1 if prec == "int8" else 2
    total = 0.0
    for op in low.ops:
        kind = op["op"]
        if kind == "interpolate":
            _, _, hi, wi = op["in"] if len(op["in"]) == 4 else (1, 1, 1, 1)
            out = 1
            for d in op["out"]:
                out *= int(d)
            c0, ch, cw, co, cow = p.interp_coeffs
            per_shave = (ch * hi + cw * wi + co * out + cow * out / max(wi, 1)) / p.shaves
            us = (c0 + per_shave) * p.shave_scale
            ddr_b = (in_ddr + (out if out_ddr else 0)) * bpe
            total += max(us, ddr_b / (p.ddr_gbps * 1e3))
        elif kind == "copy":  # DMA copy (strided concat, slice, pad): CMX-to-CMX when it fits, else via DDR
            b = op["elems"] * bpe
            fits = b / p.tiles <= p.cmx_bytes_per_tile - RUNTIME_CMX
            bw = p.cmx_bytes_per_cycle * p.dpu_clock_mhz if fits else p.ddr_gbps * 1e3 / 2  # read + write
            total += b / bw + p.dma_latency_us
        elif kind in ("dwconv", "pool"):
            c = op["in"][1]
            li = make_layer(info.node, "GroupConvolution", "dwconv" if kind == "dwconv" else "pool", [op["in"]],
                             op["out"], weight_shape=[c, 1, *op["kernel"]] if kind == "dwconv" else None, groups=c,
                             stride=tuple(op["stride"]), kernel=tuple(op["kernel"]), precision=prec)
            total += dpu_time(li.op, li, p, prec)[0]
        elif kind == "gconv_lines":  # one tiny GroupConv per output line: overhead-bound, out of DDR
            c = op["in"][1]
            li = make_layer(info.node, "GroupConvolution", "dwconv", [op["in"]], op["out"],
                             weight_shape=[c, 1, *op["kernel"]], groups=c, kernel=tuple(op["kernel"]), precision=prec)
            one = dpu_time("dwconv", li, p, prec)[0]
            per_line_ddr = (li.in_elems + li.out_elems) * bpe / (p.ddr_gbps * 1e3)
            total += op["lines"] * max(one, per_line_ddr)
        else:
            raise RewriteError(f"resize lowering op '{kind}' has no cost")
    return total


def npu_layer_cost(info: LayerInfo, p: NPUProfile) -> LayerCost:
    """Cost of one layer on an NPU profile (residency flags from ``predict``: attrs ddr_in_elems / ddr_out)."""
    prec = "int8" if info.precision == "int8" else "fp16"  # the NPU computes FP32 models in FP16
    nbytes = info.bytes_at(prec)
    base = {"node": info.node, "op": info.op, "shape": info.out_shape, "macs": info.macs, "bytes": nbytes,
            "tag": info.tag, "precision": prec}
    kind = info.op
    if kind in _FREE_KINDS:
        unit = "dma" if kind == "reshape" else "dpu"
        return LayerCost(unit=unit, engine=unit, us=0.0, note="folded" if kind != "quant" else "fused quantization",
                         **base)
    if kind in ("activation", "pad") and info.attrs.get("fused_into"):
        return LayerCost(unit="dpu", engine="dpu", us=0.0, note=f"fused into {info.attrs['fused_into']}", **base)

    bpe = 1 if prec == "int8" else 2
    in_ddr = int(info.attrs.get("ddr_in_elems", 0))
    out_ddr = bool(info.attrs.get("ddr_out", False))
    ddr_b = (in_ddr + (info.out_elems if out_ddr else 0)) * bpe
    dma_us = ddr_b / (p.ddr_gbps * 1e3) + (p.dma_latency_us if ddr_b else 0.0)
    note = "DDR" if ddr_b else ""

    if kind == "resize":
        low = _resize_lowering(info, p.name, prec)
        us = lowered_resize_us(low, info, p, prec, in_ddr, out_ddr)
        unit = "shave" if low.engine == "shave" else ("dma" if low.engine == "dma" else "dpu")
        return LayerCost(unit=unit, engine=low.engine, us=us, note=low.rule,
                         lowering={"rule": low.rule, "citation": low.citation, "ops": len(low.ops)}, **base)
    if kind in ("activation", "other") or (kind == "eltwise" and info.op_type in ("Div", "Divide", "Pow",
                                                                                  "Power")):
        us = (p.shave_intercept_us + p.shave_us_per_byte * info.out_elems * bpe / p.shaves) * p.shave_scale
        return LayerCost(unit="shave", engine="shave", us=max(us, dma_us), note=note, **base)
    if kind in ("concat", "pad"):
        # a concat is written in place by its producers; a pad that does not fold into a conv is a DMA copy
        copy_b = 0 if kind == "concat" else info.out_elems * bpe
        cmx_us = copy_b / (p.cmx_bytes_per_cycle * p.dpu_clock_mhz)
        us = max(cmx_us, dma_us if ddr_b else 0.0) + (p.dma_latency_us if copy_b and not ddr_b else 0.0)
        return LayerCost(unit="dma", engine="dma", us=us, note=note, **base)
    if kind in _DPU_KINDS:
        us, dnote = dpu_time(kind, info, p, prec, in_ddr, out_ddr)
        return LayerCost(unit="dpu", engine="dpu", us=us, note=dnote, **base)
    raise RewriteError(f"{info.node}: no NPU cost for kind '{kind}'")


def npu_residency(infos: list[LayerInfo], p: NPUProfile, precision_of=None) -> None:
    """Mark which activations live in DDR (attrs ``ddr_out`` on producers, ``ddr_in_elems`` on readers) [VF].

    A tensor stays in CMX when it fits whole (split over the tiles), or when it has one reader (vertical fusion
    tiles producer and reader together). Otherwise (several readers, e.g. skip connections, or a graph
    input/output) it is written to DDR once and read back by each reader.
    """
    by_name = {i.node: i for i in infos}

    def free(li: LayerInfo) -> bool:
        return li.op in _FREE_KINDS or (li.op in ("activation", "pad") and bool(li.attrs.get("fused_into")))

    def readers(li: LayerInfo, seen: set) -> list[str]:
        out: list[str] = []
        for c in li.consumers:
            r = by_name.get(c)
            if r is not None and free(r) and c not in seen:
                seen.add(c)
                out += readers(r, seen) or ["<output>"]
            else:
                out.append(c)
        return out

    cmx_half = (p.cmx_bytes_per_tile - RUNTIME_CMX) / 2

    def spilled(li: LayerInfo, rs: list[str]) -> bool:
        bpe = 1 if li.precision == "int8" else 2
        whole_fits = li.out_elems * bpe / p.tiles <= cmx_half
        boundary = any(r not in by_name for r in rs)
        return not whole_fits and (len(set(rs)) != 1 or boundary)

    real_src: dict[str, str | None] = {}

    def source(name: str) -> str | None:  # the producer that really writes a tensor, through free layers
        if name not in real_src:
            li = by_name.get(name)
            real_src[name] = None
            if li is not None:
                real_src[name] = source(li.producers[0]) if free(li) and li.producers else name
        return real_src[name]

    spill = {}
    for li in infos:
        if li.op == "shape" or free(li):
            continue
        rs = readers(li, set())
        li.attrs["ddr_out"] = spill[li.node] = spilled(li, rs)
    for li in infos:
        if li.op == "shape" or free(li):
            continue
        elems = 0
        srcs = [source(s) for s in li.producers]
        for shape, src in zip(li.in_shapes, srcs + [None] * (len(li.in_shapes) - len(srcs))):
            if src is None:  # a graph input: in DDR unless it fits whole
                n = 1
                for d in shape:
                    n *= int(d)
                if n * (1 if li.precision == "int8" else 2) / p.tiles > cmx_half:
                    elems += n
            elif spill.get(src):
                n = 1
                for d in shape:
                    n *= int(d)
                elems += n
        li.attrs["ddr_in_elems"] = elems


def cpu_work(info: LayerInfo, metric: str) -> float:
    """Work of a layer for the CPU profile: MACs, or bytes moved. Non-MAC ops in an INT8 model run on f32
    between the quantizers on OpenVINO CPU (measured: a Resize fed by a DequantizeLinear costs as in FP32)."""
    if metric == "macs":
        return float(info.macs)
    return float(info.bytes_at("fp32") if info.precision == "int8" else info.bytes)


def cpu_layer_cost(info: LayerInfo, p: CPUProfile) -> LayerCost:
    """Cost of one layer on the CPU profile."""
    nbytes = info.bytes
    base = {"node": info.node, "op": info.op, "shape": info.out_shape, "macs": info.macs, "bytes": nbytes,
            "tag": info.tag, "precision": info.precision, "unit": "cpu"}
    standalone_quant = info.op == "quant" and info.attrs.get("cpu_standalone")
    if info.op in _FREE_KINDS and not standalone_quant:
        return LayerCost(us=0.0, note="folded" if info.op != "quant" else "fused quantization", **base)
    fused = info.attrs.get("fused_into") if info.op in ("activation", "pad") else info.attrs.get("cpu_fused_into")
    if fused:
        return LayerCost(us=0.0, note=f"fused into {fused}", **base)
    kind = info.cost_kind
    k = p.kinds.get(kind) or p.kinds.get(info.op) or p.kinds.get("quant" if standalone_quant else "other") \
        or p.kinds["other"]
    rate = float(k["rate"])
    if info.precision == "int8" and k["metric"] == "macs":
        # INT8 kernels differ per form (OpenVINO CPU: depthwise/multiplier int8 are their own kernels)
        k8 = p.kinds.get(f"{kind}_int8")
        if k8 is not None:
            k, rate = k8, float(k8["rate"])
        else:
            rate *= p.int8_speedup
    work = cpu_work(info, k["metric"])
    compute_us = work / rate if rate > 0 else 0.0
    mem_us = nbytes / (p.mem_gbps * 1e3)
    return LayerCost(us=max(compute_us, mem_us) + float(k["overhead_us"]), **base)


def layer_cost(info: LayerInfo, target: str, profile: NPUProfile | CPUProfile | None = None) -> LayerCost:
    """Cost of one LayerInfo on ``target``."""
    p = profile or get_profile(target)
    return npu_layer_cost(info, p) if isinstance(p, NPUProfile) else cpu_layer_cost(info, p)


# ---- whole models ----------------------------------------------------------------------------------------
PRECISIONS = ("fp32", "fp16", "int8")


def predict(model: ModelHandle | Any, target: str, *, profile: NPUProfile | CPUProfile | None = None,
            input_shape: dict[str, list[int]] | list[int] | None = None, precision: str | None = None) -> ModelCost:
    """Predicted per-layer cost and total of ``model`` on ``target`` (kmb, mtl or cpu).

    ``precision`` (fp32 | fp16 | int8) costs every layer as if compiled at that precision (e.g. an FP32 export
    costed as the INT8 build the NPU would run); default: each layer's own precision.
    """
    if target not in TARGETS:
        raise RewriteError(f"unknown target '{target}' (use one of {', '.join(TARGETS)})")
    if precision is not None and precision not in PRECISIONS:
        raise RewriteError(f"unknown precision '{precision}' (use one of {', '.join(PRECISIONS)})")
    p = profile or get_profile(target)
    infos = layers(model, input_shape=input_shape)
    if precision is not None:
        for i in infos:
            i.precision = precision
    if isinstance(p, NPUProfile):
        npu_residency(infos, p)
    costs = [layer_cost(i, target, p) for i in infos if i.op != "shape"]
    notes = list(getattr(p, "notes", ()))
    if isinstance(p, CPUProfile):
        notes.append(f"cpu profile: {p.source}")
    if any(i.precision == "fp32" for i in infos) and isinstance(p, NPUProfile):
        notes.append("FP32 layers costed as FP16 (NPU computes FP16)")
    return ModelCost(target=target, layers=costs, profile=getattr(p, "description", target), notes=notes)


def compare(before: ModelHandle | Any, after: ModelHandle | Any, target: str, *, top: int = 10,
            profile: NPUProfile | CPUProfile | None = None,
            input_shape: dict[str, list[int]] | list[int] | None = None) -> dict[str, Any]:
    """Before/after predicted latency on ``target`` with per-layer changes attributed to passes.

    ``before``/``after`` are models (or ModelCost results of ``predict`` on ``target``, to reuse them).

    Layers are matched by node name. A changed or added layer is attributed to the pass tag of the
    after-layer; a removed layer to the pass of an added layer whose name contains its name, else to the
    only pass that added layers, else "unknown".
    """
    p = profile or get_profile(target)
    cb = before if isinstance(before, ModelCost) else predict(before, target, profile=p, input_shape=input_shape)
    ca = after if isinstance(after, ModelCost) else predict(after, target, profile=p, input_shape=input_shape)
    bmap = {c.node: c for c in cb.layers}
    amap = {c.node: c for c in ca.layers}
    changes: list[dict[str, Any]] = []
    added = [c for c in ca.layers if c.node not in bmap]
    added_tags = {c.tag for c in added if c.tag}
    for c in ca.layers:
        b = bmap.get(c.node)
        if b is None:
            changes.append(_change(c.node, c.op, c.tag, 0.0, c.us, "added", c.unit))
        elif abs(b.us - c.us) > 1e-9 or b.op != c.op or b.unit != c.unit:
            changes.append(_change(c.node, c.op, c.tag, b.us, c.us, "changed", c.unit))
    for b in cb.layers:
        if b.node in amap:
            continue
        owner = next((a.tag for a in added if a.tag and b.node and b.node in a.node), None)
        if owner is None:
            owner = next(iter(added_tags)) if len(added_tags) == 1 else (b.tag or "unknown")
        changes.append(_change(b.node, b.op, owner, b.us, 0.0, "removed", b.unit))
    for ch in changes:  # where each changed layer runs, before and after (a resize may change engine)
        b, a = bmap.get(ch["node"]), amap.get(ch["node"])
        ch["engine_before"], ch["engine"] = (b.engine if b else None), (a.engine if a else None)
    resizes = [{"node": c.node, "engine_before": bmap[c.node].engine if c.node in bmap else None,
                "engine": c.engine, "rule": (c.lowering or {}).get("rule")} for c in ca.layers if c.op == "resize"]
    per_pass: dict[str, float] = {}
    for ch in changes:
        key = ch["pass"] or "untagged"
        per_pass[key] = per_pass.get(key, 0.0) + ch["delta_us"] / 1000.0
    changes.sort(key=lambda d: -abs(d["delta_us"]))
    return {
        "target": target,
        "before_ms": round(cb.total_ms, 4),
        "after_ms": round(ca.total_ms, 4),
        "delta_ms": round(ca.total_ms - cb.total_ms, 4),
        "speedup": round(cb.total_ms / ca.total_ms, 4) if ca.total_ms > 0 else None,
        "fps_before": round(cb.fps, 2),
        "fps_after": round(ca.fps, 2),
        "frame_share_before": round(cb.frame_share, 4),
        "frame_share_after": round(ca.frame_share, 4),
        "frame_budget_ms": round(FRAME_BUDGET_MS, 3),
        "by_unit_before": cb.by_unit(),
        "by_unit_after": ca.by_unit(),
        "per_pass_delta_ms": {k: round(v, 4) for k, v in per_pass.items()},
        "layers_changed": len(changes),
        "top_changed": changes[:top],
        "resizes": resizes,
        "profile": ca.profile,
    }


def _change(node: str, op: str, pass_name: str | None, b_us: float, a_us: float, status: str,
            unit: str) -> dict[str, Any]:
    return {"node": node, "op": op, "pass": pass_name, "status": status, "unit": unit,
            "before_us": round(b_us, 3), "after_us": round(a_us, 3), "delta_us": round(a_us - b_us, 3)}


# ---- what-if helpers for passes --------------------------------------------------------------------------
def conv_cost_us(target: str, cin: int, cout: int, k: int, h: int, w: int, groups: int = 1,
                 stride: int = 1, precision: str = "fp16", transposed: bool = False) -> float:
    """Predicted µs of one conv (input 1 x cin x h x w, 'same' padding) on ``target``.

    Positional or keyword arguments. With stride 1, ``h, w`` are also the output size; for a strided conv,
    passing the output size with stride=1 gives the same MACs (only the input bytes differ).
    """
    info = synthetic_conv(cin=cin, cout=cout, k=k, h=h, w=w, groups=groups, stride=stride,
                          precision=precision, transposed=transposed)
    return layer_cost(info, target).us


def resize_cost_us(target: str, mode: str, coordinate_mode: str, in_shape: list[int], out_shape: list[int],
                   precision: str = "fp16", single_use: bool = True) -> float:
    """Predicted µs of one resize ``in_shape → out_shape`` (NCHW) on ``target``, as the compiler lowers it
    (``lowering.resize_lowering``); ``single_use``: its output has one reader (the NPU's x2 fast path)."""
    from .layers import make_layer, resize_attrs

    info = make_layer("synthetic", "Resize", "resize", [list(in_shape)], list(out_shape), precision=precision,
                      attrs=resize_attrs(mode, coordinate_mode, list(in_shape), list(out_shape)))
    info.consumers = [] if single_use else ["a", "b"]
    return layer_cost(info, target).us


def dwpw_pair_cost_us(target: str, cin: int, cout: int, k: int, h: int, w: int, rank: int = 1,
                      form: str = "split", *, stride: int = 1, precision: str = "fp16") -> float:
    """Predicted µs of the depthwise + pointwise replacement of a cin->cout kxk conv at rank ``rank``.

    ``form``: ``multiplier`` — one depthwise conv with channel multiplier ``rank`` (cin -> cin*rank), or
    ``split`` — ``rank`` plain depthwise convs + a Concat; both followed by a 1x1 conv cin*rank -> cout.
    """
    pair = _pair_layers(cin, cout, k, h, w, rank, form, stride, precision)  # checks form and rank first
    p = get_profile(target)
    return sum(n * layer_cost(info, target, p).us for n, info in pair)


def dwpw_engines(target: str, cin: int, cout: int, k: int, h: int, w: int, rank: int = 1, form: str = "split",
                 *, stride: int = 1, precision: str = "fp16") -> tuple[str, str]:
    """Where a cin->cout kxk conv runs on ``target``, and where its depthwise + pointwise replacement runs
    ("dpu", or "dpu+shave" when the two halves land on different engines), as :func:`dwpw_pair_cost_us` prices them."""
    p = get_profile(target)
    conv = layer_cost(synthetic_conv(cin=cin, cout=cout, k=k, h=h, w=w, stride=stride, precision=precision),
                      target, p).engine
    pair = _pair_layers(cin, cout, k, h, w, rank, form, stride, precision)
    dw, pw = (layer_cost(pair[i][1], target, p).engine for i in (0, -1))
    return conv, dw if dw == pw else f"{dw}+{pw}"


def _pair_layers(cin: int, cout: int, k: int, h: int, w: int, rank: int, form: str, stride: int,
                 precision: str) -> list[tuple[int, LayerInfo]]:
    """The layers of a depthwise + pointwise pair as (count, layer): depthwise first, pointwise last."""
    if form not in ("multiplier", "split"):
        raise RewriteError(f"dwpw form '{form}': use 'multiplier' or 'split'")
    if rank < 1:
        raise RewriteError(f"dwpw rank {rank}: must be >= 1")
    ho, wo = math.ceil(h / stride), math.ceil(w / stride)
    multiplier = form == "multiplier"
    out = [(1 if multiplier else rank, synthetic_conv(cin=cin, cout=cin * rank if multiplier else cin, k=k, h=h, w=w,
                                                      groups=cin, stride=stride, precision=precision))]
    if not multiplier and rank > 1:
        out.append((1, make_layer("concat", "Concat", "concat", [[1, cin, ho, wo]] * rank, [1, cin * rank, ho, wo],
                                  precision=precision)))
    out.append((1, synthetic_conv(cin=cin * rank, cout=cout, k=1, h=ho, w=wo, precision=precision)))
    return out


# ---- text table ------------------------------------------------------------------------------------------
def cost_table_text(cost: ModelCost, top: int = 10) -> str:
    """Plain-text per-layer table (top ``top`` layers) and totals, at most 100 columns wide."""
    lines = [f"{cost.target}: {cost.total_ms:.3f} ms  {cost.fps:.1f} fps  "
             f"{100 * cost.frame_share:.1f}% of the 60 fps frame ({FRAME_BUDGET_MS:.1f} ms)"]
    units = "  ".join(f"{u} {ms:.3f} ms" for u, ms in cost.by_unit().items())
    lines.append(f"by unit: {units}"[:100])
    hdr = f"{'node':<34} {'op':<10} {'shape':<18} {'unit':<5} {'MMAC':>8} {'KB':>8} {'us':>9}"
    lines += [hdr, "-" * len(hdr)]
    for c in cost.top(top):
        shape = "x".join(str(d) for d in c.shape)
        node = c.node if len(c.node) <= 34 else "…" + c.node[-33:]
        lines.append(f"{node:<34} {c.op[:10]:<10} {shape[:18]:<18} {c.unit:<5} {c.macs / 1e6:>8.2f} "
                     f"{c.bytes / 1024:>8.1f} {c.us:>9.1f}")
    return "\n".join(line[:100] for line in lines)
