"""Fuzzing: random small MiDaS-like graphs through every pass, with checks a user would make.

    python -m bench.fuzz [--count N] [--seed S] [--passes asym_interp,interp_deconv,dwpw,dwpw_r1,int8]
                         [--out bench/fuzz_failures] [--ir-share 0.5] [--json results.json]

Each graph (deterministic from the seed and its index) is a conv stack with full, depthwise, grouped,
strided and dilated convolutions (symmetric, asymmetric and TF-same explicit ``Pad`` padding), residual adds,
concats and ``Resize`` in every mode (linear, nearest, cubic; align_corners, asymmetric, half_pixel,
pytorch_half_pixel, and half_pixel_symmetric from opset 19) at integer scales 2–4, given as scales, as
constant sizes or as sizes computed from a ``Shape`` chain; odd sizes; opsets 11–20; ONNX or OpenVINO IR.

For every graph and pass (through the public ``rewriter.rewrite(model, passes, verify=False)``):

- crash: an exception other than a refusal, or the pass reported ``status: failed``;
- invalid: the output fails ``onnx.checker`` (full check) / OpenVINO validation, or does not compile;
- inexact: an exact pass (``interp_deconv``; ``dwpw`` at full rank) moves the output by more than
  ``EXACT_RTOL`` (1e-5) of its peak in OpenVINO, or in onnxruntime for ONNX;
- not_idempotent: running the pass again on its output changes a site.

A failing graph is saved to ``--out`` (the ONNX, plus a .json naming the pass, the kind and the message);
``tests/test_fuzz.py`` replays every saved case.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

EXACT_RTOL = 1e-5
FAILURES = Path(__file__).resolve().parent / "fuzz_failures"
MAX_HW = 48  # spatial cap: graphs stay small so hundreds run in minutes
OPSETS = tuple(range(11, 21))


@dataclass(frozen=True)
class PassSpec:
    """A pass as the fuzzer runs it: registry name, options and whether it must be exact."""

    key: str
    name: str
    opts: dict
    exact: bool


PASSES: dict[str, PassSpec] = {s.key: s for s in [
    PassSpec("asym_interp", "asym_interp", {}, False),
    PassSpec("interp_deconv", "interp_deconv", {}, True),
    PassSpec("dwpw", "dwpw", {"rank": 25, "min_gain": "none", "strided": True}, True),  # full rank: exact
    PassSpec("dwpw_r1", "dwpw", {"rank": 1, "min_gain": "none", "samples": 2, "positions": 256}, False),
    PassSpec("int8", "int8", {"subset_size": 2}, False),
]}

KINDS = ("crash", "invalid", "inexact", "not_idempotent", "refused")
SLOW = ("dwpw_r1", "int8")  # calibrate on captured activations: several times slower than the others


# ---- graph generator -----------------------------------------------------------------------------------
@dataclass
class Case:
    """One generated graph."""

    seed: int
    index: int
    opset: int
    fmt: str  # "onnx" | "ir"
    blocks: list[str]
    model: onnx.ModelProto

    @property
    def name(self) -> str:
        return f"s{self.seed}-{self.index}"


@dataclass
class _Builder:
    rng: np.random.Generator
    opset: int
    nodes: list = field(default_factory=list)
    inits: list = field(default_factory=list)
    n: int = 0

    def fresh(self, stem: str) -> str:
        self.n += 1
        return f"{stem}{self.n}"

    def init(self, stem: str, value: np.ndarray) -> str:
        name = self.fresh(stem)
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.fresh(op.lower() + "_")
        self.nodes.append(helper.make_node(op, inputs, [out], name=self.fresh(op), **attrs))
        return out


def _conv_out(n: int, k: int, stride: int, dil: int, pb: int, pe: int) -> int:
    return (n + pb + pe - dil * (k - 1) - 1) // stride + 1


def _conv(b: _Builder, x: str, shape: tuple[int, int, int], kind: str) -> tuple[str, tuple[int, int, int], str]:
    c, h, w = shape
    r = b.rng
    k = int(r.choice([1, 3, 3, 3, 5])) if kind in ("full", "grouped") else 3
    stride, dil, group = 1, 1, 1
    cout = int(r.choice([4, 8, 12, 16]))
    if kind == "depthwise":
        group, cout = c, c
    elif kind == "grouped":
        divs = [g for g in (2, 3, 4) if c % g == 0]
        if not divs:
            kind = "full"
        else:
            group = int(r.choice(divs))
            cout = group * int(r.choice([1, 2, 3]))
    elif kind in ("strided", "tf_same"):
        stride = 2
    elif kind == "dilated":
        dil = 2
    if kind == "tf_same" or (kind == "strided" and r.random() < 0.3):  # TF-same: explicit Pad, unpadded conv
        pads = [0, 0, 0, 0, 0, 0, 1, 1] if r.random() < 0.7 else [0, 0, 1, 1, 0, 0, 1, 1]
        x = b.node("Pad", [x, b.init("pads", np.array(pads, np.int64))], mode="constant")
        h, w = h + pads[2] + pads[6], w + pads[3] + pads[7]
        p = [0, 0, 0, 0]
        kind = "tf_same"
    elif r.random() < 0.25:  # asymmetric explicit pads
        p = [int(v) for v in r.integers(0, k, size=4)]
    else:
        half = dil * (k - 1) // 2
        p = [half] * 4
    if min(h, w) + min(p[0] + p[2], p[1] + p[3]) < dil * (k - 1) + 1:  # too small for this kernel: go 1x1
        k, p, dil = 1, [0, 0, 0, 0], 1
    cin_g = c // group
    wt = (r.standard_normal((cout, cin_g, k, k)) / np.sqrt(cin_g * k * k)).astype(np.float32)
    ins = [x, b.init("W", wt)]
    if r.random() < 0.6:
        ins.append(b.init("B", (0.1 * r.standard_normal(cout)).astype(np.float32)))
    y = b.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], dilations=[dil, dil], pads=p,
               group=group)
    oh, ow = _conv_out(h, k, stride, dil, p[0], p[2]), _conv_out(w, k, stride, dil, p[1], p[3])
    act = r.choice(["relu", "clip", "none"])
    if act == "relu":
        y = b.node("Relu", [y])
    elif act == "clip":
        y = b.node("Clip", [y, b.init("lo", np.float32(0)), b.init("hi", np.float32(6))])
    return y, (cout, oh, ow), f"conv:{kind}:k{k}s{stride}d{dil}g{group}:{cout}"


_COORDS = ("align_corners", "asymmetric", "half_pixel", "pytorch_half_pixel")


def _resize(b: _Builder, x: str, shape: tuple[int, int, int]) -> tuple[str, tuple[int, int, int], str]:
    c, h, w = shape
    r = b.rng
    mode = str(r.choice(["linear", "linear", "linear", "nearest", "cubic"]))
    coords = _COORDS + (("half_pixel_symmetric",) if b.opset >= 19 else ())
    coord = str(r.choice(coords))
    s_h = int(r.choice([2, 3, 4]))
    s_w = s_h if r.random() < 0.8 else int(r.choice([2, 3, 4]))
    while h * s_h > MAX_HW or w * s_w > MAX_HW:  # keep the graph small
        if s_h == s_w == 2:
            break
        s_h, s_w = max(2, s_h - 1), max(2, s_w - 1)
    attrs: dict[str, Any] = {"mode": mode, "coordinate_transformation_mode": coord}
    if mode == "nearest":
        attrs["nearest_mode"] = str(r.choice(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    if mode == "cubic":
        attrs["cubic_coeff_a"] = -0.75
    if b.opset >= 18 and r.random() < 0.5:  # the dynamo exporter writes these explicitly
        attrs["antialias"] = 0
        attrs["keep_aspect_ratio_policy"] = "stretch"
    roi = b.init("roi", np.array([], np.float32)) if b.opset < 13 else ""
    form = str(r.choice(["scales", "scales", "sizes", "shape_chain"]))
    oh, ow = h * s_h, w * s_w
    if form == "scales":
        ins = [x, roi, b.init("scales", np.array([1, 1, s_h, s_w], np.float32))]
    else:
        if form == "sizes":
            sizes = b.init("sizes", np.array([1, c, oh, ow], np.int64))
        else:  # sizes = Concat(Shape(x)[:2], Shape(x)[2:] * s), as exporters write dynamic-size upsampling
            shp = b.node("Shape", [x])
            nc = b.node("Slice", [shp, b.init("st", np.int64([0])), b.init("en", np.int64([2]))])
            hw = b.node("Slice", [shp, b.init("st", np.int64([2])), b.init("en", np.int64([4]))])
            hw2 = b.node("Mul", [hw, b.init("sc", np.array([s_h, s_w], np.int64))])
            sizes = b.node("Concat", [nc, hw2], axis=0)
        empty = b.init("noscales", np.array([], np.float32)) if b.opset < 13 else ""
        ins = [x, roi, empty, sizes]
    y = b.node("Resize", ins, **attrs)
    return y, (c, oh, ow), f"resize:{mode}:{coord}:x{s_h}x{s_w}:{form}"


def generate(seed: int, index: int, ir_share: float = 0.5) -> Case:
    """Graph ``index`` of the stream ``seed`` (the same pair always gives the same graph)."""
    r = np.random.default_rng([seed, index])
    opset = int(r.choice(OPSETS))
    b = _Builder(r, opset)
    c0 = int(r.choice([3, 4, 8]))
    h, w = int(r.integers(5, 25)), int(r.integers(5, 25))
    x, shape, blocks = "x", (c0, h, w), []
    n_blocks = int(r.integers(2, 7))
    resized = False
    for i in range(n_blocks):
        roll = r.random()
        last = i == n_blocks - 1
        if (roll < 0.3 or (last and not resized)) and shape[1] * 2 <= MAX_HW and shape[2] * 2 <= MAX_HW:
            x, shape, d = _resize(b, x, shape)
            resized = True
        elif roll < 0.45:  # residual unit: x + conv(relu(x)) with the same shape
            t = b.node("Relu", [x])
            wt = (r.standard_normal((shape[0], shape[0], 3, 3)) / np.sqrt(9 * shape[0]) * 0.5).astype(np.float32)
            t = b.node("Conv", [t, b.init("W", wt)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            x, d = b.node("Add", [x, t]), "residual"
        elif roll < 0.55:  # concat with a 1x1 projection of itself
            co = int(r.choice([2, 4, 8]))
            wt = (r.standard_normal((co, shape[0], 1, 1)) / np.sqrt(shape[0])).astype(np.float32)
            t = b.node("Conv", [x, b.init("W", wt)], kernel_shape=[1, 1])
            x, shape, d = b.node("Concat", [x, t], axis=1), (shape[0] + co, shape[1], shape[2]), "concat"
        else:
            kinds = ["full", "full", "depthwise", "grouped", "dilated"]
            if min(shape[1:]) >= 6:
                kinds += ["strided", "tf_same"]
            x, shape, d = _conv(b, x, shape, str(r.choice(kinds)))
        blocks.append(d)
    g = helper.make_graph(b.nodes, f"fuzz_{seed}_{index}",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c0, h, w])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, *shape])], b.inits)
    opsets = [helper.make_opsetid("", opset)]
    m = helper.make_model(g, opset_imports=opsets, producer_name="bench.fuzz")
    m.ir_version = min(helper.find_min_ir_version_for(opsets), 9)
    onnx.checker.check_model(m, full_check=True)
    return Case(seed, index, opset, "ir" if r.random() < ir_share else "onnx", blocks, m)


def handle_of(model: onnx.ModelProto, fmt: str):
    """The graph as a ``rewriter.ModelHandle`` in ``fmt`` (IR: converted the way users convert)."""
    from rewriter.model import ModelHandle

    h = ModelHandle(model)
    return h.to_ir() if fmt == "ir" else h


# ---- checks ----------------------------------------------------------------------------------------------
def _feed(handle, seed: int) -> dict[str, np.ndarray]:
    r = np.random.default_rng(seed)
    return {n: r.standard_normal([d or 8 for d in s]).astype(dt) for n, s, dt in handle.inputs()}


def _run_ov(handle, feed) -> np.ndarray:
    from rewriter.model import ov_core

    compiled = ov_core().compile_model(handle.ov_model(), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(feed)[0], np.float64)


def _run_ort(handle, feed) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(handle.onnx.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(None, feed)[0], np.float64)


def _validity_onnx(handle) -> str | None:
    """Why an ONNX model fails ``onnx.checker`` with full check, or None (IR: always None)."""
    if handle.format != "onnx":
        return None
    try:
        onnx.checker.check_model(handle.onnx, full_check=True)
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        return f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    return None


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-6)) if a.shape == b.shape else np.inf


def check_pass(before, spec: PassSpec, seed: int = 0, refs: dict | None = None,
               stats: Counter | None = None) -> list[dict]:
    """Findings (kind, message) of one pass on one graph (a ``ModelHandle``); empty when every check holds.

    No targets are given to ``rewrite``: the fuzzer checks graphs, not predicted latency. ``refs`` caches the
    original's outputs per runtime across passes (one compile per graph, not per pass); ``stats`` counts
    runs that changed sites, sites changed and exactness comparisons made.
    """
    stats = Counter() if stats is None else stats
    import rewriter
    from rewriter.errors import RewriteError

    fmt = before.format
    findings: list[dict] = []

    def found(kind: str, msg: str, **extra) -> list[dict]:
        findings.append({"kind": kind, "message": msg[:600], **extra})
        return findings

    try:
        after, rep = rewriter.rewrite(before, spec.name, opts={spec.name: dict(spec.opts)}, verify=False,
                                      targets=(), seed=seed)
    except RewriteError as e:
        return found("refused", str(e))
    except Exception as e:  # noqa: BLE001 - a crash is the finding
        return found("crash", f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
    entry = rep["passes"][0]
    if entry["status"] == "failed":  # the manager validated (checker + compile) and rolled back, or it crashed
        error = entry.get("error", "status failed")
        kind = "invalid" if "produced an invalid model" in error else "crash"
        return found(kind, error, traceback=entry.get("traceback"))
    changed = entry["sites_changed"]
    stats["changed_runs"] += bool(changed)
    stats["sites_changed"] += changed
    if changed:  # the manager has compiled it; onnx.checker's full check is stricter than its own
        why = _validity_onnx(after)
        if why:
            return found("invalid", why, sites_changed=changed)
        if spec.exact and entry.get("exact", True):
            feed = _feed(before, seed)
            refs = {} if refs is None else refs
            runs = [("ov", _run_ov)] + ([("ort", _run_ort)] if fmt == "onnx" else [])
            for rt, run in runs:
                try:
                    if rt not in refs:
                        refs[rt] = run(before, feed)
                    err = _rel(refs[rt], run(after, feed))
                    stats[f"exact_checks_{rt}"] += 1
                except Exception as e:  # noqa: BLE001 - a runtime refusing the output is the finding
                    return found("invalid", f"{rt} cannot run the output: {type(e).__name__}: {e}")
                if not err <= EXACT_RTOL:
                    found("inexact", f"{rt}: max abs error {err:.3g} of the output peak (> {EXACT_RTOL:g})",
                          runtime=rt, error=err)
    try:
        _, rep2 = rewriter.rewrite(after, spec.name, opts={spec.name: dict(spec.opts)}, verify=False,
                                   targets=(), seed=seed)
        again = rep2["passes"][0]
        if again["status"] == "failed":
            found("crash", "second run: " + again.get("error", "status failed"))
        elif again["sites_changed"]:
            sites = [s["node"] for s in again["sites"] if s["will_change"]]
            found("not_idempotent", f"second run changed {again['sites_changed']} site(s): {sites[:5]}")
    except RewriteError as e:
        found("refused", f"second run: {e}")
    except Exception as e:  # noqa: BLE001
        found("crash", f"second run: {type(e).__name__}: {e}", traceback=traceback.format_exc(limit=6))
    for f in findings:
        f["sites_changed"] = changed
    return findings


def input_problem(case: Case) -> str | None:
    """Why the generated graph itself cannot be a test input (OpenVINO cannot convert or compile it, or
    onnxruntime cannot run it), or None. Such graphs are counted, not run through the passes."""
    try:
        h = handle_of(case.model, case.fmt)
        feed = _feed(h, 0)
        _run_ov(h, feed)
        _run_ort(handle_of(case.model, "onnx"), feed)
    except Exception as e:  # noqa: BLE001 - any refusal makes the graph unusable as input
        first = str(e).strip().splitlines()
        return f"{type(e).__name__}: {' '.join(first[:3])[:200]}"
    return None


def save_failure(case: Case, spec: PassSpec, findings: list[dict], out: Path) -> Path:
    """Write the graph and what failed, for ``tests/test_fuzz.py`` to replay."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{case.name}-{spec.key}"
    onnx.save(case.model, str(stem.with_suffix(".onnx")))
    meta = {"seed": case.seed, "index": case.index, "opset": case.opset, "format": case.fmt,
            "blocks": case.blocks, "pass": spec.key, "findings": findings}
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1, default=str))
    return stem.with_suffix(".json")


def run(count: int, seed: int = 0, passes: list[str] | None = None, out: Path | None = FAILURES,
        ir_share: float = 0.5, log=print, start: int = 0, slow_every: int = 1) -> dict:
    """Fuzz ``count`` graphs through ``passes``; save failures to ``out`` (None: do not save).

    ``slow_every``: run the slow passes (``SLOW``: NNCF int8, dwpw with refit) on every n-th graph only.
    """
    specs = [PASSES[k] for k in (passes or list(PASSES))]
    counts: Counter = Counter()
    failures: list[dict] = []
    graphs: Counter = Counter()
    graphs_failed = 0
    unusable: list[dict] = []
    t0 = time.time()
    for i in range(start, start + count):
        case = generate(seed, i, ir_share)
        problem = input_problem(case)
        if problem is not None:
            graphs["unusable"] += 1
            unusable.append({"case": case.name, "blocks": case.blocks, "why": problem})
            continue
        graphs[case.fmt] += 1
        handle = handle_of(case.model, case.fmt)
        refs: dict = {}
        bad = False
        for spec in specs:
            t1 = time.time()
            if spec.key in SLOW and i % slow_every:
                continue
            stats: Counter = Counter()
            findings = check_pass(handle, spec, seed, refs, stats)
            counts[(spec.key, "runs")] += 1
            for k, v in stats.items():
                counts[(spec.key, k)] += v
            for f in findings:
                counts[(spec.key, f["kind"])] += 1
            if findings:
                bad = True
                path = save_failure(case, spec, findings, out) if out is not None else None
                failures.append({"case": case.name, "format": case.fmt, "opset": case.opset, "pass": spec.key,
                                 "kinds": sorted({f["kind"] for f in findings}),
                                 "message": findings[0]["message"][:200], "saved": str(path) if path else None})
                log(f"  {case.name} ({case.fmt}, opset {case.opset}) {spec.key}: "
                    f"{failures[-1]['kinds']} {failures[-1]['message'][:160]} [{time.time() - t1:.1f}s]")
        graphs_failed += bad
        if (i - start + 1) % 10 == 0:
            log(f"{i - start + 1}/{count} graphs, {graphs_failed} with findings, "
                f"{time.time() - t0:.0f}s")
    by_pass = {s.key: {k: v for (p, k), v in counts.items() if p == s.key} for s in specs}
    return {"count": count, "seed": seed, "start": start, "formats": dict(graphs),
            "graphs_failed": graphs_failed, "unusable": unusable, "by_pass": by_pass, "failures": failures,
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.fuzz", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=100, help="graphs to generate (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="stream seed (default 0)")
    ap.add_argument("--start", type=int, default=0, help="first graph index (to resume or split a run)")
    ap.add_argument("--passes", default=",".join(PASSES), help=f"comma-separated, from {', '.join(PASSES)}")
    ap.add_argument("--out", default=str(FAILURES), help="folder for failing graphs (default bench/fuzz_failures)")
    ap.add_argument("--no-save", action="store_true", help="do not save failing graphs")
    ap.add_argument("--ir-share", type=float, default=0.5, help="fraction of graphs converted to IR (default 0.5)")
    ap.add_argument("--json", help="write the summary as JSON here")
    ap.add_argument("--slow-every", type=int, default=1,
                    help=f"run the slow passes ({', '.join(SLOW)}: calibration) on every n-th graph only")
    args = ap.parse_args(argv)
    keys = [p.strip() for p in args.passes.split(",") if p.strip()]
    unknown = [k for k in keys if k not in PASSES]
    if unknown:
        ap.error(f"unknown pass {unknown[0]!r} (use {', '.join(PASSES)})")
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)
    res = run(args.count, args.seed, keys, None if args.no_save else Path(args.out), args.ir_share,
              start=args.start, slow_every=max(1, args.slow_every))
    print(f"\n{res['count']} graphs (seed {res['seed']}, {res['formats']}), {res['graphs_failed']} with findings, "
          f"{res['seconds']}s")
    if res["unusable"]:
        why = Counter(u["why"][:70] for u in res["unusable"])
        print(f"{len(res['unusable'])} generated graphs unusable as input (not run): {dict(why)}")
    print(f"{'pass':<14}{'runs':>6}  findings by kind")
    for key, c in res["by_pass"].items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k in KINDS) or "none"
        checks = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in KINDS and k != "runs")
        kinds += f"  ({checks})" if checks else ""
        print(f"{key:<14}{c.get('runs', 0):>6}  {kinds}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 1 if res["graphs_failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
