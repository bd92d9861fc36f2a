"""Wall time and peak RSS of one rewrite on a large model, this tree against a baseline revision.

    python -m bench.graph_speed [--fixture midasnet_ts11_384x384] [--baseline main] [--passes asym_interp,dwpw]
                                [--opt dwpw.refit=false] [--skip-baseline]

Runs ``rewrite --passes P --no-verify --opt ... MODEL -o OUT -q`` in a fresh process per tree and prints
seconds, peak RSS (MiB) and peak RSS over the model's file size. The baseline is the revision's tree
(``git archive``) run with this virtualenv. Never run as a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int, float]:
    """(wall seconds, peak RSS in MiB, exit code, CPU seconds) of one command in a fresh process (CPU time
    is the figure to trust on a loaded machine: wall time there includes waiting for a core)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.stderr.write(proc.stderr.read().decode(errors="replace")[-2000:])
    return wall, usage.ru_maxrss / 1024, proc.returncode, usage.ru_utime + usage.ru_stime


def baseline_tree(rev: str, into: Path) -> Path:
    """The files of ``rev`` under ``into``, with passes/ reachable as rewriter.passes (as installed)."""
    data = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    tar = into / "src.tar"
    tar.write_bytes(data)
    with tarfile.open(tar) as t:
        t.extractall(into, filter="data")
    (into / "rewriter" / "passes").symlink_to(into / "passes", target_is_directory=True)
    return into


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.graph_speed", description=__doc__.splitlines()[0])
    ap.add_argument("--fixture", default="midasnet_ts11_384x384")
    ap.add_argument("--model", help="a model path instead of a fixture")
    ap.add_argument("--passes", default="asym_interp,dwpw")
    ap.add_argument("--opt", action="append", default=None)
    ap.add_argument("--baseline", default="main", help="git revision to compare with")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args(argv)
    opts = args.opt if args.opt is not None else ["dwpw.refit=false"]
    if args.model:
        model = Path(args.model).resolve()
    else:
        sys.path.insert(0, str(ROOT))
        from fixtures import fixture_path

        model = Path(fixture_path(args.fixture))
    size_mib = model.stat().st_size / 2**20
    trees = [("this tree", ROOT)]
    with tempfile.TemporaryDirectory(prefix="graph-speed-") as tmp:
        if not args.skip_baseline:
            trees.insert(0, (f"baseline {args.baseline}", baseline_tree(args.baseline, Path(tmp) / "base")))
        print(f"model {model.name} ({size_mib:.0f} MiB); rewrite --passes {args.passes} --no-verify "
              + " ".join(f"--opt {o}" for o in opts))
        print(f"{'tree':<22} {'seconds':>8} {'CPU s':>7} {'peak RSS MiB':>13} {'x model':>8}   (load avg "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
        for label, tree in trees:
            env = dict(os.environ)
            if tree != ROOT:  # this tree is the installed (editable) package
                env["PYTHONPATH"] = str(tree)
            out = Path(tmp) / f"out-{len(label)}.onnx"
            cmd = [sys.executable, "-c", "import sys; from rewriter.cli import main; sys.exit(main())",
                   "--passes", args.passes, "--no-verify", *[x for o in opts for x in ("--opt", o)],
                   str(model), "-o", str(out), "-q"]
            wall, rss, code, cpu = measure(cmd, Path(tmp), env)
            status = "" if code == 0 else f"  (exit {code})"
            print(f"{label:<22} {wall:8.1f} {cpu:7.1f} {rss:13.0f} {rss / size_mib:8.1f}{status}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
