"""Shared test helpers: tiny models on disk in both formats, and CLI runners."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `fixtures` and `bench` are repo folders, not installed packages
    sys.path.insert(0, str(ROOT))


def make_tiny(coord: str = "align_corners", seed: int = 0) -> onnx.ModelProto:
    """x[1,8,16,16] → Conv3x3 → Relu → Resize x2 linear → Conv3x3(8→1): the conformance graph."""
    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
    w2 = (rng.standard_normal((1, 8, 3, 3)) * 0.2).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Resize", ["r1", "", "scales"], ["up"], mode="linear",
                         coordinate_transformation_mode=coord, name="resize1"),
        helper.make_node("Conv", ["up", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 32, 32])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
                     numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


@pytest.fixture
def tiny_onnx(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.onnx"
    onnx.save(make_tiny(), str(p))
    return p


@pytest.fixture
def tiny_ir(tmp_path: Path) -> Path:
    import openvino as ov

    src = tmp_path / "src.onnx"
    onnx.save(make_tiny(), str(src))
    p = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(src)), str(p), compress_to_fp16=False)
    src.unlink()
    return p


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed `rewrite` entry point as a user would (same interpreter)."""
    return subprocess.run([sys.executable, "-m", "rewriter.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=900, cwd=cwd)
