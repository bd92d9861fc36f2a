"""The parts of rewriter.verify on their own: aggregation, runtimes, gate choice, PFM reading, locator tensors."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_tiny

from rewriter.errors import RewriteError
from rewriter.model import ModelHandle
from rewriter.verify.comparison import aggregate, merge_outputs, pick_output, resolve_runtimes
from rewriter.verify.gates import DEFAULT_TOL, gate
from rewriter.verify.groundtruth import read_disparity, read_pfm
from rewriter.verify.locator import common_tensors, tensors


def _row(image: str, kind: str, **metrics: float) -> dict:
    return {"image": image, "kind": kind, **metrics}


def test_aggregate_takes_depth_metrics_over_images_only():
    rows = [_row("astronaut", "image", rel_l2=0.1, delta1=0.99),
            _row("coffee", "image", rel_l2=0.3, delta1=0.95),
            _row("random0", "random", rel_l2=0.9, delta1=0.10)]
    agg = aggregate(rows)
    assert agg["mean"]["rel_l2"] == pytest.approx(1.3 / 3)
    assert agg["worst"]["rel_l2"] == 0.9 and agg["worst_image"]["rel_l2"] == "random0"
    assert agg["mean"]["delta1"] == pytest.approx(0.97)  # the random input's 0.10 is not a depth map
    assert agg["worst"]["delta1"] == 0.95 and agg["worst_image"]["delta1"] == "coffee"


def test_merge_outputs_keeps_the_worse_output_and_names_it():
    a = {"mean": {"rel_l2": 0.1}, "worst": {"rel_l2": 0.2}, "worst_image": {"rel_l2": "x"}}
    b = {"mean": {"rel_l2": 0.3}, "worst": {"rel_l2": 0.4}, "worst_image": {"rel_l2": "y"}}
    merged = merge_outputs({"depth": a, "aux": b})
    assert merged["mean"]["rel_l2"] == 0.3 and merged["worst"]["rel_l2"] == 0.4
    assert merged["worst_image"]["rel_l2"] == "y (aux)"
    assert merge_outputs({"depth": a}) == a


def test_pick_output_by_name_else_by_position():
    res = {"y": np.zeros(1), "z": np.ones(1)}
    assert pick_output(res, "z", 0)[0] == 1.0
    assert pick_output(res, "renamed", 1)[0] == 1.0  # ONNX vs IR: outputs renamed, paired by position


def test_resolve_runtimes(tmp_path):
    onnx_h = ModelHandle.load(make_tiny())
    ir_h = onnx_h.to_ir()
    assert resolve_runtimes("both", onnx_h, onnx_h) == (["ov", "ort"], [])
    runtimes, notes = resolve_runtimes("ort", onnx_h, ir_h)
    assert runtimes == ["ov"] and "onnxruntime runs ONNX only" in notes[0]
    with pytest.raises(RewriteError, match="--check-runtime 'trt'"):
        resolve_runtimes("trt", onnx_h)


def test_gate_chooses_tolerance_or_budget_and_says_why():
    summary = {"mean": {"rel_l2": 0.2, "cosine": 0.9, "rel_max": 1e-3}, "worst": {"rel_l2": 0.3, "rel_max": 2e-3},
               "worst_image": {"rel_l2": "random1", "rel_max": "random1"}}
    results = {"ov": summary}
    notes: list[str] = []
    g = gate(results, True, False, None, None, notes)
    assert g["gate"] == "tolerance" and g["tol"] == DEFAULT_TOL and not g["passed"]
    assert "would pass with --tol 0.002" in g["message"]
    g = gate(results, False, False, None, None, notes)
    assert g["gate"] == "budget" and g["passed"] and g["budget"] == {"cosine": 0.5, "rel_l2": 1.0}
    assert notes == ["default budget (breakage bound on random inputs): cosine=0.5,rel_l2=1.0"]
    with pytest.raises(RewriteError, match="--tol -1"):
        gate(results, True, False, None, -1, notes)


def test_read_pfm_flips_rows_and_reads_either_endianness(tmp_path):
    d = np.arange(12, dtype=np.float32).reshape(3, 4)
    for scale, dtype in ((-1.0, "<f4"), (1.0, ">f4")):
        p = tmp_path / f"d{scale}.pfm"
        p.write_bytes(b"Pf\n4 3\n" + f"{scale}\n".encode() + np.flipud(d).astype(dtype).tobytes())
        assert np.array_equal(read_pfm(p), d)
        assert np.array_equal(read_disparity(p), d)
    bad = tmp_path / "bad.pfm"
    bad.write_bytes(b"P6\n4 3\n255\n")
    with pytest.raises(RewriteError, match="not a PFM file"):
        read_pfm(bad)
    np.save(tmp_path / "line.npy", np.zeros(5, np.float32))
    with pytest.raises(RewriteError, match="must be a 2-D map"):
        read_disparity(tmp_path / "line.npy")


def test_locator_tensors_sizes_come_from_the_model_that_runs():
    """ONNX tensors, sized through the OpenVINO conversion that will run them (matched by tensor name)."""
    h = ModelHandle.load(make_tiny())
    run = ModelHandle(h.ov_model(), h.source)
    own, ran = tensors(h), tensors(h, run)
    assert [t.names for t in own] == [t.names for t in ran] and own
    assert all(t.numel and t.is_float for t in own)
    assert [t.numel for t in own] == [t.numel for t in ran]
    for t in own:  # each tensor depends on exactly the tensors computed before it in this chain
        assert t.ancestors == (1 << t.index) - 1
    outputs = set(h.outputs())
    common = common_tensors(h, h.clone(), h, run)
    assert [k for k, _ in common] == [t.names[0] for t in own if t.names[0] not in outputs]
