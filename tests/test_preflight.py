"""Up-front checks: every bad input is refused with one line and exit 2 before any pass runs."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_tiny, sha256
from onnx import helper, numpy_helper

import rewriter
from rewriter import cli
from rewriter.errors import RewriteError
from rewriter.passbase import load_passes
from rewriter.preflight import check_finite, preflight


@pytest.fixture
def applied(monkeypatch) -> list[str]:
    """Names of passes whose match/apply ran (a refused request must leave this empty)."""
    calls: list[str] = []
    for cls in load_passes().values():
        for meth in ("apply", "match"):
            orig = getattr(cls, meth)

            def spy(self, *a, _orig=orig, **k):
                calls.append(self.name)
                return _orig(self, *a, **k)

            monkeypatch.setattr(cls, meth, spy)
    return calls


def _with_bad_weight(value: float, name: str = "w1") -> onnx.ModelProto:
    m = make_tiny()
    for init in m.graph.initializer:
        if init.name == name:
            w = numpy_helper.to_array(init).copy()
            w.flat[5] = value
            init.CopyFrom(numpy_helper.from_array(w, name))
    return m


def _run(capsys, *args) -> tuple[int, list[str], str]:
    code = cli.main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, [ln for ln in cap.err.splitlines() if ln.strip()], cap.out


def _refused(capsys, tmp_path: Path, applied: list[str], args: list, inputs: list[Path], needle: str) -> str:
    digests = {p: sha256(p) for p in inputs}
    before = set(tmp_path.rglob("*"))
    code, err, _ = _run(capsys, *args)
    assert code == 2, err
    assert len(err) == 1, err
    assert needle in err[0], err[0]
    assert applied == [], f"passes ran before the refusal: {applied}"
    assert {p: sha256(p) for p in inputs} == digests
    assert set(tmp_path.rglob("*")) == before
    return err[0]


@pytest.mark.parametrize("value,kind", [(np.nan, "NaN"), (np.inf, "Inf"), (-np.inf, "Inf")])
def test_nonfinite_initializer_named_exit_2(tmp_path, capsys, applied, value, kind):
    bad = tmp_path / "bad.onnx"
    onnx.save(_with_bad_weight(value), str(bad))
    line = _refused(capsys, tmp_path, applied, ["--passes", "asym_interp", bad, "-o", tmp_path / "o.onnx"],
                    [bad], "'w1'")
    assert f"1 {kind}" in line


def test_inf_weight_cannot_hang_dwpw(tmp_path, capsys, applied):
    """An Inf weight once stalled dwpw's SVD/refit for minutes; it is refused before dwpw sees it."""
    bad = tmp_path / "inf.onnx"
    onnx.save(_with_bad_weight(np.inf), str(bad))
    _refused(capsys, tmp_path, applied, ["--passes", "dwpw", "--opt", "dwpw.min_gain=none", bad,
                                         "-o", tmp_path / "o.onnx"], [bad], "non-finite weights")
    with pytest.raises(RewriteError, match="'w1'"):
        rewriter.rewrite(str(bad), "dwpw", verify=False)
    assert applied == []


def test_nonfinite_constant_node_named(tmp_path):
    m = make_tiny()
    const = helper.make_node("Constant", [], ["w2"], name="w2_const",
                             value=numpy_helper.from_array(np.full((1, 8, 3, 3), np.nan, np.float32), "w2"))
    init = [i for i in m.graph.initializer if i.name != "w2"]
    del m.graph.initializer[:]
    m.graph.initializer.extend(init)
    m.graph.node.insert(0, const)
    with pytest.raises(RewriteError, match=r"Constant 'w2_const' \(72 NaN\)"):
        check_finite(rewriter.load(m))


def test_fp16_initializer_checked():
    m = make_tiny()
    w = numpy_helper.to_array(m.graph.initializer[0]).astype(np.float16)
    w.flat[0] = np.float16(np.inf)
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w, "w1"))
    with pytest.raises(RewriteError, match="'w1'"):
        check_finite(rewriter.load(m))


def _ir_with_nan(tiny_ir: Path) -> Path:
    """The tiny IR with a NaN written into the first float weight of its .bin."""
    root = ET.parse(tiny_ir).getroot()
    for layer in root.iter("layer"):
        data = layer.find("data")
        if layer.get("type") == "Const" and data.get("element_type") == "f32" and int(data.get("size")) > 16:
            blob = bytearray(tiny_ir.with_suffix(".bin").read_bytes())
            off = int(data.get("offset"))
            blob[off:off + 4] = np.float32(np.nan).tobytes()
            tiny_ir.with_suffix(".bin").write_bytes(bytes(blob))
            return tiny_ir
    raise AssertionError("no float constant in the tiny IR")


def test_nonfinite_ir_constant_named(tmp_path, capsys, applied, tiny_ir):
    bad = _ir_with_nan(tiny_ir)
    line = _refused(capsys, tmp_path, applied, ["--passes", "asym_interp", bad, "-o", tmp_path / "o.xml"],
                    [bad, bad.with_suffix(".bin")], "non-finite weights in constant '")
    assert "1 NaN" in line


def test_explain_refuses_nonfinite_before_matching(tmp_path, capsys, applied):
    bad = tmp_path / "nan.onnx"
    onnx.save(_with_bad_weight(np.nan), str(bad))
    _refused(capsys, tmp_path, applied, ["--explain", "--passes", "asym_interp", bad], [bad], "'w1'")


@pytest.mark.parametrize("case", ["parent_is_file", "output_is_dir", "report_under_file", "xml_without_to",
                                  "ir_to_onnx", "missing_calib", "bad_budget", "unknown_target_pass"])
def test_bad_request_refused_before_passes(tmp_path, capsys, applied, tiny_onnx, tiny_ir, case):
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = tmp_path / "o.onnx"
    args, needle = {
        "parent_is_file": ([tiny_onnx, "-o", afile / "o.onnx"], "is a file, not a folder"),
        "output_is_dir": ([tiny_onnx, "-o", tmp_path], "is a directory"),
        "report_under_file": ([tiny_onnx, "-o", out, "--report", afile / "r.json"], "is a file, not a folder"),
        "xml_without_to": ([tiny_onnx, "-o", tmp_path / "o.xml"], "needs --to ir"),
        "ir_to_onnx": ([tiny_ir, "-o", out, "--to", "onnx"], "cannot be saved as ONNX"),
        "missing_calib": ([tiny_onnx, "-o", out, "--calib", tmp_path / "nope"], "--calib"),
        "bad_budget": ([tiny_onnx, "-o", out, "--budget", "delta1=x"], "--budget"),
        "unknown_target_pass": ([tiny_onnx, "-o", out, "--opt", "dwpw.rank=2"], "not in --passes"),
    }[case]
    _refused(capsys, tmp_path, applied, ["--passes", "asym_interp", *args], [tiny_onnx, tiny_ir, afile], needle)


def test_library_rewrite_refuses_output_under_file_before_passes(tmp_path, applied, tiny_onnx):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(RewriteError, match="is a file, not a folder"):
        rewriter.rewrite(str(tiny_onnx), "asym_interp", output=afile / "o.onnx")
    assert applied == []


def test_random_feed_note_only_without_image_input(tmp_path):
    no_image = preflight(make_tiny(), "asym_interp")
    assert any("random feeds" in n for n in no_image.notes)
    assert [p.name for p in no_image.passes] == ["asym_interp"]
    m = make_tiny()
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 3
    w1 = numpy_helper.to_array(m.graph.initializer[0])[:, :3].copy()
    m.graph.initializer[0].CopyFrom(numpy_helper.from_array(w1, "w1"))
    assert preflight(m, "asym_interp").notes == []
    _, report = rewriter.rewrite(make_tiny(), "asym_interp", verify=False, targets=("cpu",))
    assert any("random feeds" in n for n in report["notes"])


def test_default_output_derived_and_checked(tiny_onnx):
    c = preflight(tiny_onnx, "asym_interp", default_output=True)
    assert c.output == tiny_onnx.with_name("tiny.rewritten.onnx")
    assert c.handle.format == "onnx" and c.handle.source == tiny_onnx


def test_progress_lines_only_with_verbose(tmp_path, capsys, tiny_onnx):
    code, err, out = _run(capsys, "--passes", "asym_interp", tiny_onnx, "-o", tmp_path / "o.onnx", "--no-verify")
    assert code == 0 and err == [], err  # not a TTY under pytest, no -v: stderr stays clean
    code, err, _ = _run(capsys, "--passes", "asym_interp", tiny_onnx, "-o", tmp_path / "o2.onnx", "--no-verify",
                        "-v")
    assert code == 0
    assert any("[asym_interp]" in ln for ln in err) and any("random feeds" in ln for ln in err)


@pytest.mark.parametrize("extra", [[], ["--explain"]])
def test_preflight_runs_once_per_invocation(tmp_path, capsys, tiny_onnx, monkeypatch, extra):
    """The CLI checks the request once: ``rewrite()`` reuses the CLI's ``Checked`` (no second weight scan)."""
    import rewriter.preflight as pf

    calls: list[str] = []
    finite: list[str] = []
    real, real_finite = pf.preflight, pf.check_finite
    monkeypatch.setattr(pf, "preflight", lambda *a, **k: calls.append("preflight") or real(*a, **k))
    monkeypatch.setattr(pf, "check_finite", lambda h: finite.append(h.name) or real_finite(h))
    code = cli.main(["--passes", "asym_interp", str(tiny_onnx), "-o", str(tmp_path / "o.onnx"), "--no-verify",
                     "-q", *extra])
    assert code == 0, capsys.readouterr().err
    assert calls == ["preflight"] and len(finite) == 1


def test_library_rewrite_runs_preflight_itself(tmp_path, tiny_onnx, monkeypatch):
    """Without a ``checked`` from the caller the library entry checks the request itself, once."""
    import rewriter.preflight as pf

    calls: list[int] = []
    real = pf.preflight
    monkeypatch.setattr(pf, "preflight", lambda *a, **k: calls.append(1) or real(*a, **k))
    rewriter.rewrite(str(tiny_onnx), "asym_interp", verify=False, output=tmp_path / "o.onnx")
    assert calls == [1]
