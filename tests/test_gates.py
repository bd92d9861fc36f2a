"""Honest gates: per-pass gates on the validation split, the cumulative gate (final vs original, test split)
with rollback / stop / keep, and the never-slower flags of the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from onnx import helper, numpy_helper

from rewriter import GateFailed, ModelHandle
from rewriter.manager import rewrite
from rewriter.passbase import KEEP, REGISTRY, Decision, Outcome, Pass, load_passes
from rewriter.runtime import run
from rewriter.verify import parse_budget

FACTOR = 1.05  # each test pass scales one bias-free conv by this: the output moves by exactly 5% rel L2


def _scale_pass(name: str, node: str) -> type[Pass]:
    class _Scale(Pass):
        description = f"test-only approximate pass: scale {node}'s weights by {FACTOR}"
        formats = ("onnx",)
        exact = False

        def plan(self, view, ctx):
            return [Decision(node, self.name, "conv", (KEEP, "scale"), "scale", "named conv")]

        def emit(self, decision, editor, ctx):
            n = editor.view.node(decision.site)
            editor.set_const(decision.site, 1, editor.view.weight(n) * np.float32(FACTOR))

    _Scale.name = name
    return _Scale


class _AddZero(Pass):
    """Test-only exact pass that makes the model slower on every target: an identity 3x3 conv before conv2.

    A whole-model pass (``emit_all``), so the engine's per-site never-slower check does not stop it: the
    report's predicted-slower flag is what is under test."""

    name = "_gt_add_zero"
    description = "test-only: identity conv before conv2 (exact, predicted slower)"
    formats = ("onnx",)
    exact = True

    def plan(self, view, ctx):
        done = any(n.name == "identity" for n in view.nodes)
        return [Decision("conv2", self.name, "conv", (KEEP, "add"), KEEP if done else "add",
                         "already added" if done else "identity conv before conv2")]

    def emit_all(self, decisions, model, ctx):
        if not any(d.will_change for d in decisions):
            return Outcome()
        g = model.onnx.graph
        w = np.zeros((8, 8, 3, 3), np.float32)
        w[np.arange(8), np.arange(8), 1, 1] = 1.0
        g.initializer.append(numpy_helper.from_array(w, "w_identity"))
        conv2 = next(n for n in g.node if n.name == "conv2")
        conv2.input[0] = "up_identity"
        g.node.insert(list(g.node).index(conv2), helper.make_node(
            "Conv", ["up", "w_identity"], ["up_identity"], pads=[1, 1, 1, 1], name="identity"))
        model.set_onnx(model.onnx)
        return Outcome(modified=["identity"])


TEST_PASSES = [_scale_pass("_gt_a", "conv1"), _scale_pass("_gt_b", "conv2"), _scale_pass("_gt_c", "conv2"), _AddZero]


@pytest.fixture(autouse=True)
def test_passes():
    """Register the test passes for one test and restore the registry afterwards."""
    load_passes()  # the real passes register once per process: never clear them
    saved = dict(REGISTRY)
    for cls in TEST_PASSES:
        REGISTRY[cls.name] = cls
    yield
    for cls in TEST_PASSES:
        REGISTRY.pop(cls.name, None)
    assert REGISTRY == saved


def _per_pass_error(tiny_onnx) -> float:
    _, rep = rewrite(tiny_onnx, "_gt_b", budget="rel_l2=1", targets=("cpu",))
    return rep["passes"][0]["fidelity"]["metrics"]["mean"]["rel_l2"]


def test_cumulative_gate_catches_passes_that_each_pass_alone(tiny_onnx):
    e = _per_pass_error(tiny_onnx)
    budget = f"rel_l2={2.5 * e:.6f}"  # two passes' worth fits, three do not
    _, rep = rewrite(tiny_onnx, "_gt_a,_gt_b,_gt_c", budget=budget, on_fail="keep", targets=("cpu",))
    for p in rep["passes"]:
        assert p["status"] == "applied" and p["fidelity"]["passed"], p["fidelity"]["message"]
        assert p["fidelity"]["split"] == "validation" and p["fidelity"]["message"].startswith("validation split")
        assert set(p["fidelity"]["images"]) == set(rep["inputs"]["validation"])
    cum = rep["cumulative"]
    assert cum["split"] == "test" and not cum["passed"] and cum["gate"] == "budget"
    assert "test split" in cum["message"] and cum["dropped"] == []
    assert cum["metrics"]["mean"]["rel_l2"] > 2.5 * e
    assert set(cum["images"]) == set(rep["inputs"]["test"])
    assert rep["exit_code"] == 0  # --on-fail keep: reported, kept


def test_rollback_at_the_cumulative_gate_drops_the_last_approximate_pass(tiny_onnx):
    e = _per_pass_error(tiny_onnx)
    model, rep = rewrite(tiny_onnx, "_gt_a,_gt_b,_gt_c,_gt_add_zero", budget=f"rel_l2={2.5 * e:.6f}",
                         on_fail="rollback", targets=("cpu",))
    status = {p["name"]: p["status"] for p in rep["passes"]}
    assert status == {"_gt_a": "applied", "_gt_b": "applied", "_gt_c": "rolled_back_cumulative",
                      "_gt_add_zero": "applied"}
    cum = rep["cumulative"]
    assert cum["passed"] and [d["pass"] for d in cum["dropped"]] == ["_gt_c"]
    assert "over budget" in cum["dropped"][0]["reason"]
    add_zero = rep["passes"][3]
    assert any("re-run after _gt_c was dropped" in n for n in add_zero["notes"])
    # the result is the original with conv1 and conv2 scaled once each, plus the exact Add
    x = {"x": np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)}
    want = run(ModelHandle.load(tiny_onnx), [x])[0]["y"] * FACTOR ** 2
    np.testing.assert_allclose(run(model, [x])[0]["y"], want, rtol=1e-4, atol=1e-5)
    assert sorted(set(model.tags().values())) == ["_gt_a", "_gt_add_zero", "_gt_b"]


def test_rollback_keeps_dropping_until_within_budget(tiny_onnx):
    e = _per_pass_error(tiny_onnx)
    _, rep = rewrite(tiny_onnx, "_gt_a,_gt_b,_gt_c", budget=f"rel_l2={1.5 * e:.6f}", targets=("cpu",))
    assert [d["pass"] for d in rep["cumulative"]["dropped"]] == ["_gt_c", "_gt_b"]
    assert rep["cumulative"]["passed"]


def test_stop_at_the_cumulative_gate_raises_and_writes_nothing(tmp_path, tiny_onnx):
    e = _per_pass_error(tiny_onnx)
    out = tmp_path / "never.onnx"
    with pytest.raises(GateFailed, match="cumulative gate failed") as exc:
        rewrite(tiny_onnx, "_gt_a,_gt_b,_gt_c", budget=f"rel_l2={2.5 * e:.6f}", on_fail="stop", output=out,
                targets=("cpu",))
    assert not out.exists()
    rep = exc.value.report
    assert rep["exit_code"] == 1 and not rep["cumulative"]["passed"]
    assert all(p["status"] == "applied" for p in rep["passes"])
    # the CLI: exit 1, no model written, the report says why
    from rewriter.cli import main

    report = tmp_path / "r.json"
    code = main(["--passes", "_gt_a,_gt_b,_gt_c", "--budget", f"rel_l2={2.5 * e:.6f}", "--on-fail", "stop",
                 str(tiny_onnx), "-o", str(out), "--report", str(report), "--target", "cpu", "-q"])
    assert code == 1 and not out.exists()
    assert json.loads(report.read_text())["cumulative"]["passed"] is False


def test_exact_passes_only_get_a_tolerance_cumulative_gate(tiny_onnx):
    _, rep = rewrite(tiny_onnx, "_gt_add_zero", targets=("cpu",))
    cum = rep["cumulative"]
    assert cum["gate"] == "tolerance" and cum["passed"] and cum["split"] == "test"
    assert any(n.startswith("random2") for n in cum["images"])  # test split's own seed range


def test_report_flags_a_result_predicted_slower(tiny_onnx):
    _, rep = rewrite(tiny_onnx, "_gt_add_zero", targets=("kmb", "mtl", "cpu"))
    for t in ("kmb", "mtl", "cpu"):
        assert rep["latency"][t]["slower"] is True, rep["latency"][t]
    assert any("predicted slower than the input on cpu" in n and "_gt_add_zero" in n for n in rep["notes"])
    from rewriter.report import render_html, render_text

    assert "WARNING: predicted slower than the input" in render_text(rep)
    assert "cumulative check (final vs original, test split): PASSED" in render_html(rep)
    _, rep2 = rewrite(tiny_onnx, "_gt_b", budget="rel_l2=1", targets=("cpu",))
    assert rep2["latency"]["cpu"]["slower"] is False


def test_measured_slowdown_warning_names_the_passes():
    from rewriter.manager import _flag_slower

    rep = {"passes": [{"name": "interp_deconv", "status": "applied"}], "notes": [], "latency": {},
           "measured": {"ratio": 1.2, "ratio_p10_p90": [1.1, 1.3], "runs": 20}}
    _flag_slower(rep)
    assert rep["measured"]["slower"] and "interp_deconv" in rep["notes"][0]
    noisy = {"passes": [], "notes": [], "latency": {}, "measured": {"ratio": 1.01, "ratio_p10_p90": [0.9, 1.1]}}
    _flag_slower(noisy)
    assert not noisy["measured"]["slower"] and not noisy["notes"]


def test_budget_keys_rel_l2_and_psnr():
    assert parse_budget("rel_l2=0.05,psnr=30,absrel=0.02,delta1=0.98") == {
        "rel_l2": 0.05, "psnr": 30.0, "absrel": 0.02, "delta1": 0.98}
