"""End to end on a real MiDaS export: the full pipeline through the CLI, as a user runs it."""

from __future__ import annotations

import json

import pytest
from conftest import run_cli, sha256

from rewriter import ModelHandle


@pytest.mark.slow
@pytest.mark.e2e
def test_full_pipeline_on_midas_small_ir(tmp_path):
    from fixtures import fixture_path

    src = fixture_path("small_ir_256x256")
    digest = sha256(src)
    out, rep, html = tmp_path / "m.xml", tmp_path / "r.json", tmp_path / "r.html"
    r = run_cli("--passes", "asym_interp,interp_deconv,dwpw,int8", "--on-fail", "keep", "--opt", "int8.subset_size=4",
                "--opt", "dwpw.samples=4", "--target", "kmb", "--target", "mtl", "--target", "cpu", str(src),
                "-o", str(out), "--report", str(rep), "--html", str(html))
    assert r.returncode == 0, r.stderr[-3000:]
    j = json.loads(rep.read_text())
    by = {p["name"]: p for p in j["passes"]}
    assert by["asym_interp"]["sites_changed"] == 4  # the 4 fusion-block upsamples; the head stays
    deconv = by["interp_deconv"]
    skipped = [s for s in deconv["sites"] if not s["will_change"]]
    assert deconv["sites_changed"] >= 1 and deconv["exact"] and deconv["sites_changed"] + len(skipped) == 5
    assert all(s["decision"].startswith("skip: predicted slower on kmb, mtl, cpu") for s in skipped)  # never slower
    assert by["interp_deconv"]["fidelity"]["passed"]  # exact pass within float tolerance
    assert by["dwpw"]["sites_changed"] > 0 and by["int8"]["sites_changed"] > 0
    for p in j["passes"]:
        assert p["status"] in ("applied", "kept_failed") and p["fidelity"]["metrics"]
    for t in ("kmb", "mtl", "cpu"):
        assert 0 < j["latency"][t]["after_ms"] < j["latency"][t]["before_ms"]
    model = ModelHandle.load(out)
    ops = model.op_types()
    assert ops.get("Interpolate", 0) == len(skipped) and ops.get("FakeQuantize", 0) > 0
    assert ops.get("GroupConvolutionBackpropData", 0) == deconv["sites_changed"]
    assert set(model.tags().values()) >= {"interp_deconv", "dwpw", "int8"}
    assert html.read_text().count("<table") >= 2
    assert sha256(src) == digest
