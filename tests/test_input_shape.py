"""``--input-shape``: one parser (``rewriter.graph.parse_input_shape``) and one error format for ``rewrite``,
``rewrite cost`` and ``rewrite optimize``; a bad shape is refused with exit 2 before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from rewriter import cli
from rewriter.errors import RewriteError
from rewriter.graph import parse_input_shape
from rewriter.model import ModelHandle

BAD = [  # (spec, the message after "--input-shape 'SPEC': ")
    ("1,3,a,8", "expected integers like 1,3,288,512 (or NAME:1,3,288,512;OTHER:...)"),
    ("1,3,0,8", "dimensions must be integers >= 1"),
    ("z:1,3,8,8", "the model has no input 'z' (inputs: x)"),
    ("1,3,8", "input 'x' has 4 dims, got 3"),
]


@pytest.fixture
def dynamic_onnx(tmp_path: Path) -> Path:
    m = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,3,H,W] x) => (float[1,4,H,W] y) { y = Conv <pads = [1, 1, 1, 1]> (x, w) }""")
    m.graph.initializer.append(onnx.numpy_helper.from_array(np.full((4, 3, 3, 3), 0.1, np.float32), "w"))
    path = tmp_path / "dyn.onnx"
    onnx.save(m, path)
    return path


def test_parser_forms(dynamic_onnx):
    h = ModelHandle.load(dynamic_onnx)
    want = {"x": [1, 3, 16, 24]}
    for spec in ("1,3,16,24", "1x3x16x24", "x:1,3,16,24", " x : 1, 3, 16, 24 ;", [1, 3, 16, 24], want):
        assert parse_input_shape(spec, h) == want, spec
    assert parse_input_shape(None, h) is None


@pytest.mark.parametrize("spec,why", BAD)
def test_parser_errors(dynamic_onnx, spec, why):
    with pytest.raises(RewriteError) as e:
        parse_input_shape(spec, ModelHandle.load(dynamic_onnx))
    assert str(e.value) == f"--input-shape {spec!r}: {why}"


@pytest.mark.parametrize("command", ["rewrite", "cost", "optimize"])
@pytest.mark.parametrize("spec,why", BAD)
def test_every_command_refuses_the_same_way(command, spec, why, dynamic_onnx, tmp_path, capsys):
    out = tmp_path / "o.onnx"
    argv = {"rewrite": ["--passes", "asym_interp", str(dynamic_onnx), "-o", str(out)],
            "cost": ["cost", str(dynamic_onnx)],
            "optimize": ["optimize", str(dynamic_onnx), "-o", str(out)]}[command]
    assert cli.main([*argv, "--input-shape", spec]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rewrite: error: --input-shape {spec!r}: {why}"]
    assert not out.exists()


def test_cost_pins_the_given_shape(dynamic_onnx, capsys, tmp_path):
    rep = tmp_path / "c.json"
    assert cli.main(["cost", str(dynamic_onnx), "--target", "cpu", "--input-shape", "1x3x16x24", "--report",
                     str(rep), "-q"]) == 0
    import json

    rows = json.loads(rep.read_text())["targets"]["cpu"]
    assert rows["layers"] and all(r["us"] >= 0 for r in rows["layers"])
