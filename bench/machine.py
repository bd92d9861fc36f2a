"""What the numbers were measured on: CPU model, ISA flags that matter for INT8, cores, memory, packages."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

# ISA flags that change OpenVINO CPU kernels: VNNI / AMX decide whether INT8 pays off (overflow_fix needs).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
PACKAGES = ("onnx", "onnx-graphsurgeon", "onnxruntime", "openvino", "nncf", "numpy", "torch", "scikit-image",
            "matplotlib", "midas-npu-rewriter")


def parse_cpuinfo(text: str) -> dict:
    """CPU model name and the ISA flags of interest from /proc/cpuinfo text (first processor block)."""
    model, flags = "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "flags": {f: f in flags for f in ISA_FLAGS}}


def machine_info(repo: Path | None = None) -> dict:
    """Machine description for the results file (never raises: unknown fields say so)."""
    try:
        info = parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        info = {"cpu_model": platform.processor() or "unknown", "flags": {}}
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info.update(logical_cpus=os.cpu_count(), usable_cpus=usable, memory_gb=_mem_gb(),
                platform=platform.platform(), python=platform.python_version(),
                load_average=list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
                packages=package_versions(), git_commit=_git_commit(repo))
    return info


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of the packages the numbers depend on (None when absent)."""
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = None
    return out


def _mem_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _git_commit(repo: Path | None) -> str | None:
    try:  # read-only query; a dirty tree is noted so results are not mistaken for a clean commit
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("+dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        return None


def describe(info: dict) -> str:
    """One line: 'AMD EPYC, 2 cores, 23 GB, flags avx2 (no VNNI/AMX)'."""
    flags = [f for f, on in info.get("flags", {}).items() if on and f != "fma"]
    vnni = any(info.get("flags", {}).get(f) for f in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return (f"{info.get('cpu_model')}, {info.get('usable_cpus')} usable cores, {info.get('memory_gb')} GB, "
            f"flags {' '.join(flags) or 'none'}{'' if vnni else ' (no VNNI/AMX: INT8 without VNNI)'}")
