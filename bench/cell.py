"""One rewrite in its own process, so its wall time and peak memory are the tool's alone.

    python -m bench.cell SPEC.json RESULT.json

SPEC: {"model", "passes", "opts", "output", "calib", "images", "seed", "verify", "on_fail", "targets"}, or
with "optimize": {"targets", "budget", "workers"} a ``rewriter.optimize`` run instead (its report as JSON).
RESULT: {"report", "rewrite_s", "import_s", "rss_before_mb", "peak_rss_mb", "error", "traceback"}.
The result file is written even when the rewrite fails; the exit code is 0 unless writing it failed.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import traceback
from pathlib import Path


def _rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run_cell(spec: dict) -> dict:
    """Import the tool, then time ``rewriter.manager.rewrite`` on the spec; never raises."""
    t0 = time.perf_counter()
    out: dict = {"report": None, "error": None}
    try:
        import openvino  # noqa: F401  (imported up front so import time is not counted as rewrite time)

        from rewriter.manager import rewrite
        from rewriter.passbase import load_passes

        load_passes()
        out["import_s"] = round(time.perf_counter() - t0, 2)
        out["rss_before_mb"] = _rss_mb()
        t1 = time.perf_counter()
        if spec.get("optimize"):
            out["report"] = _optimize(spec)
            out["rewrite_s"] = round(time.perf_counter() - t1, 2)
            out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
            return out
        _, report = rewrite(spec["model"], spec["passes"], opts=spec.get("opts") or None, output=spec["output"],
                            calib=spec.get("calib"), images=spec.get("images"),
                            targets=tuple(spec.get("targets", ("kmb", "mtl", "cpu"))),
                            verify=spec.get("verify", True), on_fail=spec.get("on_fail", "keep"),
                            seed=spec.get("seed", 0))
        out["rewrite_s"] = round(time.perf_counter() - t1, 2)
        out["report"] = report.to_json()
    except Exception as e:  # every failure becomes a recorded cell error, never a lost run
        out["error"] = f"{type(e).__name__}: {e}"
        out["traceback"] = traceback.format_exc(limit=8)
        report = getattr(e, "report", None)  # GateFailed carries the partial report (a RewriteReport)
        if hasattr(report, "to_json"):
            out["report"] = report.to_json()
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    return out


def _optimize(spec: dict) -> dict:
    """``rewriter.optimize`` on the spec (same calibration and held-out folders as a rewrite); its report."""
    from rewriter import optimize

    o = spec["optimize"]
    _, rep = optimize(spec["model"], targets=tuple(o["targets"]), budget=o.get("budget"), calib=spec.get("calib"),
                      images=spec.get("images"), output=spec["output"], workers=int(o.get("workers") or 0),
                      seed=spec.get("seed", 0), progress=lambda m: (sys.stderr.write(m), sys.stderr.flush()))
    report = rep.to_json()
    report["output"] = rep.output
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point: read SPEC, run, write RESULT as JSON."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    result = run_cell(spec)
    Path(args[1]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
