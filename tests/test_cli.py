"""The `rewrite` command line: help, listing, bad input (exit 2, one line, input untouched, nothing written)."""

from __future__ import annotations

import json
import os

import pytest
from conftest import run_cli, sha256


def test_help_documents_flags():
    r = run_cli("--help")
    assert r.returncode == 0
    for flag in ("--passes", "--list-passes", "--explain", "--opt", "--no-verify", "--on-fail", "--target",
                 "--report", "--to", "--measure", "--calib", "-q", "-v", "exit codes"):
        assert flag in r.stdout, flag


def test_list_passes_names_every_pass_with_options():
    r = run_cli("--list-passes")
    assert r.returncode == 0
    for name in ("asym_interp", "interp_deconv", "dwpw", "int8"):
        assert name in r.stdout
    assert "--opt dwpw.rank=" in r.stdout
    j = json.loads(run_cli("--list-passes", "--json").stdout)
    assert {d["name"] for d in j} >= {"asym_interp", "interp_deconv", "dwpw", "int8"}


def _bad_cases(tmp_path, tiny_onnx, tiny_ir):
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    trunc = tmp_path / "trunc.onnx"
    trunc.write_bytes(tiny_onnx.read_bytes()[:300])
    nobin = tmp_path / "nobin.xml"
    nobin.write_text(tiny_ir.read_text())
    short = tmp_path / "short.xml"
    short.write_text(tiny_ir.read_text())
    short.with_suffix(".bin").write_bytes(tiny_ir.with_suffix(".bin").read_bytes()[:64])
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    return {
        "missing": ([str(tmp_path / "nope.onnx")], "no such file"),
        "junk": ([str(junk)], "not a valid ONNX model"),
        "truncated": ([str(trunc)], "not a valid ONNX model"),
        "ir_without_bin": ([str(nobin)], "nobin.bin is missing"),
        "ir_short_bin": ([str(short)], "weights file is short"),
        "unknown_pass": (["--passes", "nosuch", str(tiny_onnx)], "unknown pass 'nosuch'"),
        "bad_option": (["--passes", "dwpw", "--opt", "dwpw.rank=two", str(tiny_onnx)], "dwpw.rank='two'"),
        "option_syntax": (["--opt", "rank", str(tiny_onnx)], "PASS.OPTION=VALUE"),
        "output_is_input": ([str(tiny_onnx), "-o", str(tiny_onnx)], "equals the input"),
        "unwritable_dir": ([str(tiny_onnx), "-o", str(ro / "x.onnx")], "not writable"),
        "missing_dir": ([str(tiny_onnx), "-o", str(tmp_path / "a" / "b.onnx")], "does not exist"),
        "no_model": (["--passes", "asym_interp"], "no input model"),
    }


CASES = ["missing", "junk", "truncated", "ir_without_bin", "ir_short_bin", "unknown_pass", "bad_option",
         "option_syntax", "output_is_input", "unwritable_dir", "missing_dir", "no_model"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, tiny_onnx, tiny_ir, case):
    if case == "unwritable_dir" and os.geteuid() == 0:
        pytest.skip("root can write into read-only folders")
    args, message = _bad_cases(tmp_path, tiny_onnx, tiny_ir)[case]
    if "--passes" not in args:
        args = ["--passes", "asym_interp", *args]
    if "-o" not in args and case != "no_model":
        args += ["-o", str(tmp_path / "out.onnx")]
    digests = {p: sha256(p) for p in (tiny_onnx, tiny_ir)}
    before = set(tmp_path.rglob("*"))
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert {p: sha256(p) for p in digests} == digests
    assert set(tmp_path.rglob("*")) == before


def test_default_output_beside_input_and_report(tmp_path, tiny_onnx):
    rep = tmp_path / "r.json"
    digest = sha256(tiny_onnx)
    # 8 channels: no mode lands on the DPU, so mode=auto would keep the site; force the swap
    r = run_cli("--passes", "asym_interp", "--opt", "asym_interp.mode=asymmetric", str(tiny_onnx), "--report",
                str(rep), "--target", "mtl")
    assert r.returncode == 0, r.stderr
    out = tiny_onnx.with_name("tiny.rewritten.onnx")
    assert out.exists() and sha256(tiny_onnx) == digest
    j = json.loads(rep.read_text())
    assert j["output"] == str(out) and j["format"] == "onnx"
    assert j["passes"][0]["name"] == "asym_interp" and j["passes"][0]["sites_changed"] == 1
    assert set(j["latency"]) == {"mtl"}


def test_ir_in_ir_out_and_onnx_to_ir(tmp_path, tiny_onnx, tiny_ir):
    r = run_cli("--passes", "asym_interp", str(tiny_ir), "-q")
    assert r.returncode == 0, r.stderr
    assert tiny_ir.with_name("tiny.rewritten.xml").exists() and tiny_ir.with_name("tiny.rewritten.bin").exists()
    out = tmp_path / "conv.xml"
    r = run_cli("--passes", "asym_interp", str(tiny_onnx), "--to", "ir", "-o", str(out), "-q")
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.with_suffix(".bin").exists()
    assert r.stdout.strip().splitlines()[-1] == str(out)


def test_explain_names_sites_and_writes_nothing(tmp_path, tiny_onnx):
    before = set(tmp_path.rglob("*"))
    r = run_cli("--explain", "--passes", "asym_interp,dwpw", str(tiny_onnx))
    assert r.returncode == 0, r.stderr
    assert "resize1" in r.stdout and "conv1" in r.stdout
    assert set(tmp_path.rglob("*")) == before


def test_on_fail_stop_exit_1_writes_no_model(tmp_path, tiny_onnx):
    out = tmp_path / "o.onnx"
    rep = tmp_path / "r.json"
    r = run_cli("--passes", "dwpw", "--opt", "dwpw.rank=1", "--opt", "dwpw.refit=false", "--opt", "dwpw.min_gain=none",
                "--on-fail", "stop",
                "--budget", "delta1=0.9999,absrel=0.0001", str(tiny_onnx), "-o", str(out), "--report", str(rep))
    assert r.returncode == 1, r.stderr
    assert not out.exists()
    assert json.loads(rep.read_text())["passes"][0]["status"] == "rolled_back"


def test_a_reader_leaving_early_stops_quietly(tiny_onnx):
    """`rewrite --list-passes --json | head -1`: the closed pipe ends the run without an 'internal error'."""
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-m", "rewriter.cli", "--list-passes", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, bufsize=0)
    p.stdout.close()  # the reader is gone before the first write
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 141, err
    assert "internal error" not in err and "Traceback" not in err
