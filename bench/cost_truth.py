"""Does the cost model tell the truth? Prints (never asserts):

1. CPU: predicted vs measured speedup per pass on a MiDaS-small export (default: the trained proxy at 288x512):
   dwpw rank 1, dwpw rank 2 (multiplier form, the default for a first target kmb), dwpw rank 2 split form, int8,
   and the pipelines asym_interp,dwpw,int8 (rank 1 and 2). Measured = interleaved A/B on OpenVINO CPU
   (median of per-pair ratios); error = predicted / measured - 1.
2. NPU: the dw/pw per-layer ratio table, conv3x3 64->64 vs dw3x3 + pw1x1, FP16 and INT8, 16^2..256^2, kmb and mtl.
3. NPU (stretch): an exact DPU form of align_corners x2, Y = A X B^T as two constant MatMuls + MemPermutes,
   costed against today's lowering of MiDaS's four align_corners resizes.

    python -m bench.cost_truth [--model small_trained_ts17_288x512] [--calibrate] [--runs 15] [--out DIR]

``--calibrate`` first refits the cpu profile (``calibrate_cpu``) on the base model and every variant, so each
form's kernel (multiplier depthwise, split depthwise + Concat, INT8 depthwise, ...) gets its own rate.
Variants are built without refit (timing does not depend on the weights' values) and cached in ``--out``.
Set REWRITER_CACHE to keep a ``--calibrate`` run from replacing the shared cache's cpu profile.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "dwpw_r1": ("dwpw", {"dwpw": {"rank": 1, "refit": False}}),
    "dwpw_r2": ("dwpw", {"dwpw": {"rank": 2, "refit": False}}),
    "dwpw_r2_split": ("dwpw", {"dwpw": {"rank": 2, "refit": False, "form": "split"}}),
    "int8": ("int8", {"int8": {"subset_size": 8}}),
    "asym_dwpw_r1_int8": ("asym_interp,dwpw,int8", {"dwpw": {"rank": 1, "refit": False}, "int8": {"subset_size": 8}}),
    "asym_dwpw_r2_int8": ("asym_interp,dwpw,int8", {"dwpw": {"rank": 2, "refit": False}, "int8": {"subset_size": 8}}),
}


def build_variants(base: Path, out: Path, names: list[str]) -> dict[str, Path]:
    """Rewrite ``base`` with each variant's passes (targets kmb, mtl, cpu; no verification), cached in ``out``."""
    from rewriter import rewrite

    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in names:
        passes, opts = VARIANTS[name]
        dst = out / f"{base.stem}.{name}{base.suffix}"
        if not dst.exists():
            t0 = time.perf_counter()
            rewrite(str(base), passes, opts=opts, output=dst, verify=False, targets=("kmb", "mtl", "cpu"))
            print(f"built {dst.name} in {time.perf_counter() - t0:.0f} s", flush=True)
        paths[name] = dst
    return paths


def cpu_truth(base: Path, variants: dict[str, Path], runs: int) -> list[dict]:
    """Predicted and measured CPU speedup of each variant over ``base``."""
    from rewriter.cost import measure_ab, predict

    pb = predict(base, "cpu").total_ms
    rows = []
    for name, path in variants.items():
        pa = predict(path, "cpu").total_ms
        m = measure_ab(base, path, runs=runs, warmup=2)
        pred, meas = pb / pa, m["speedup"]
        rows.append({"variant": name, "predicted_speedup": round(pred, 3), "measured_speedup": meas,
                     "error": round(pred / meas - 1.0, 3), "before_ms": m["before_ms"], "after_ms": m["after_ms"],
                     "ratio_p10_p90": m["ratio_p10_p90"]})
        print(f"{name:<20} predicted {pred:5.2f}x  measured {meas:5.2f}x  error {100 * (pred / meas - 1):+5.0f}%  "
              f"({m['before_ms']:.0f} -> {m['after_ms']:.0f} ms)", flush=True)
    return rows


def dwpw_table(sizes=(16, 32, 64, 128, 256)) -> list[dict]:
    """conv3x3 64->64 vs dw3x3 + pw1x1 per layer on kmb and mtl, FP16 and INT8."""
    from rewriter.cost import conv_cost_us, dwpw_pair_cost_us

    rows = []
    print(f"\n{'chip':<5}{'prec':<6}" + "".join(f"{f'{s}x{s}':>22}" for s in sizes))
    for t in ("kmb", "mtl"):
        for prec in ("fp16", "int8"):
            cells = []
            for s in sizes:
                full = conv_cost_us(t, 64, 64, 3, s, s, precision=prec)
                pair = dwpw_pair_cost_us(t, 64, 64, 3, s, s, precision=prec)
                rows.append({"target": t, "precision": prec, "hw": s, "conv_us": round(full, 2),
                             "dwpw_us": round(pair, 2), "gain": round(full / pair, 3)})
                cells.append(f"{full:8.1f}/{pair:7.1f}={full / pair:4.2f}x")
            print(f"{t:<5}{prec:<6}" + "".join(f"{c:>22}" for c in cells))
    print("(us conv3x3 / us dw3x3+pw1x1 = gain)")
    return rows


def separable_matmul_us(target: str, c: int, h: int, w: int, precision: str = "fp16") -> dict:
    """Exact align_corners x2 as Y = A X B^T: two constant MatMuls (dense on the DPU: a 1x1 conv with the
    resized axis as channels) and three MemPermutes (DMA copies; through DDR when the tensor exceeds CMX)."""
    from rewriter.cost.layers import make_layer
    from rewriter.cost.model import RUNTIME_CMX, dpu_time, get_profile

    p = get_profile(target)
    bpe = 1 if precision == "int8" else 2
    # W pass: [C*H pixels, W channels] -> 2W; H pass: [C*2W pixels, H channels] -> 2H
    mw = make_layer("mm_w", "Conv", "conv", [[1, w, c * h, 1]], [1, 2 * w, c * h, 1], weight_shape=[2 * w, w, 1, 1],
                     precision=precision)
    mh = make_layer("mm_h", "Conv", "conv", [[1, h, c * 2 * w, 1]], [1, 2 * h, c * 2 * w, 1],
                     weight_shape=[2 * h, h, 1, 1], precision=precision)
    mm_us = dpu_time("conv", mw, p, precision)[0] + dpu_time("conv", mh, p, precision)[0]
    perm_us = 0.0
    for elems in (c * h * w, c * h * 2 * w, c * 4 * h * w):  # in, between the passes, out
        b = elems * bpe
        fits = b / p.tiles <= p.cmx_bytes_per_tile - RUNTIME_CMX
        perm_us += b / (p.cmx_bytes_per_cycle * p.dpu_clock_mhz if fits else p.ddr_gbps * 1e3 / 2) + p.dma_latency_us
    return {"matmul_us": mm_us, "permute_us": perm_us, "total_us": mm_us + perm_us,
            "macs": mw.macs + mh.macs}


def interp_matmul_table(hw=(288, 512)) -> list[dict]:
    """Stretch: the exact separable-MatMul form of MiDaS's four align_corners x2 resizes vs the compiler's
    lowering (SHAVE kernel or per-line GroupConvs) and vs half_pixel / asymmetric, per chip, FP16 and INT8."""
    from rewriter.cost import resize_lowering
    from rewriter.cost.layers import make_layer, resize_attrs
    from rewriter.cost.model import get_profile, lowered_resize_us

    rows = []
    print(f"\nexact align_corners x2 as separable MatMuls (MiDaS small at {hw[1]}x{hw[0]}), us")
    print(f"{'chip':<5}{'prec':<6}{'C x H x W':<16}{'today':>18}{'matmul+perm':>13}{'half_pixel':>12}"
          f"{'asymmetric':>12}{'MMAC':>8}")
    for t in ("mtl", "kmb"):
        p = get_profile(t)
        for prec in ("fp16", "int8"):
            tot = {"today": 0.0, "matmul": 0.0}
            for c, div in ((512, 32), (256, 16), (128, 8), (64, 4)):
                h, w = hw[0] // div, hw[1] // div
                ins, outs = [1, c, h, w], [1, c, 2 * h, 2 * w]
                costs = {}
                for cm in ("align_corners", "half_pixel", "asymmetric"):
                    low = resize_lowering("linear", cm, ins, outs, t, precision=prec)
                    li = make_layer("up", "Resize", "resize", [ins], outs, precision=prec,
                                     attrs=resize_attrs("linear", cm, ins, outs))
                    costs[cm] = (low.engine, lowered_resize_us(low, li, p, prec, 0, False))
                mm = separable_matmul_us(t, c, h, w, prec)
                tot["today"] += costs["align_corners"][1]
                tot["matmul"] += mm["total_us"]
                rows.append({"target": t, "precision": prec, "shape": [c, h, w],
                             "align_corners": {"engine": costs["align_corners"][0],
                                               "us": round(costs["align_corners"][1], 1)},
                             "separable_matmul": {k: round(v, 1) for k, v in mm.items()},
                             "half_pixel_us": round(costs["half_pixel"][1], 1),
                             "asymmetric_us": round(costs["asymmetric"][1], 1)})
                today = f"{costs['align_corners'][1]:.0f} {costs['align_corners'][0]}"
                print(f"{t:<5}{prec:<6}{f'{c}x{h}x{w}':<16}{today:>18}{mm['total_us']:>13.0f}"
                      f"{costs['half_pixel'][1]:>12.0f}{costs['asymmetric'][1]:>12.0f}{mm['macs'] / 1e6:>8.0f}")
            print(f"{t:<5}{prec:<6}{'sum of four':<16}{tot['today']:>18.0f}{tot['matmul']:>13.0f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.cost_truth", description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="small_trained_ts17_288x512", help="fixture name or model path")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    ap.add_argument("--runs", type=int, default=15, help="A/B rounds per variant (default 15)")
    ap.add_argument("--calibrate", action="store_true", help="refit the cpu profile on base + variants first")
    ap.add_argument("--out", help="folder for the variants (default: the cache dir's cost_truth/)")
    ap.add_argument("--npu-only", action="store_true", help="only print the NPU dw/pw table")
    args = ap.parse_args(argv)
    result: dict = {"npu_dwpw": dwpw_table(), "interp_matmul": interp_matmul_table()}
    if not args.npu_only:
        base = Path(args.model)
        if not base.exists():
            import fixtures

            base = Path(fixtures.fixture_path(args.model))
        from rewriter.cost.calibrate import cache_dir

        out = Path(args.out) if args.out else cache_dir() / "cost_truth"
        variants = build_variants(base, out, [v for v in args.variants.split(",") if v])
        if args.calibrate:
            from rewriter.cost import calibrate_cpu

            t0 = time.perf_counter()
            prof = calibrate_cpu([base, *variants.values()], runs=7)
            print(f"calibrated cpu profile in {time.perf_counter() - t0:.0f} s: {prof.source}", flush=True)
            result["cpu_profile"] = prof.to_json()
        print(f"\nCPU, {base.name}: predicted vs measured speedup over the original")
        result["cpu"] = cpu_truth(base, variants, args.runs)
        result["model"] = str(base)
        dst = Path(__file__).parent / "results" / f"{time.strftime('%Y-%m-%d')}-cost-truth-{base.stem}.json"
        dst.write_text(json.dumps(result, indent=1))
        print(f"wrote {dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
