"""`rewrite cost`, cost_report, alongside (library, cost and rewrite), and the seed team's sanity figures."""

from __future__ import annotations

import json

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper, numpy_helper

import rewriter
from rewriter import ModelHandle, RewriteError
from rewriter.cli import main
from rewriter.cost import alongside, cost_report, predict

RNG = np.random.default_rng(1)


@pytest.fixture(autouse=True)
def _empty_cost_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REWRITER_CACHE", str(tmp_path / "cost-cache"))


def _tiny(path, c=16, h=16, w=16):
    """conv3x3 -> relu -> resize x2 align_corners ("resize1") -> conv3x3 -> 1 channel."""
    w1 = numpy_helper.from_array((RNG.standard_normal((c, c, 3, 3)) * 0.2).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((RNG.standard_normal((1, c, 3, 3)) * 0.2).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Resize", ["r1", "", "sc"], ["up"], mode="linear",
                              coordinate_transformation_mode="align_corners", name="resize1"),
             helper.make_node("Conv", ["up", "w2"], ["y"], pads=[1, 1, 1, 1], name="conv2")]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2 * h, 2 * w])],
                          [w1, w2, numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_cost_report_fields_and_engines(tmp_path):
    m = _tiny(tmp_path / "t.onnx")
    rep = rewriter.cost_report(str(m), ("kmb", "mtl", "cpu"))
    assert set(rep["targets"]) == {"kmb", "mtl", "cpu"}
    for t, tj in rep["targets"].items():
        assert {"total_ms", "fps", "frame_share", "by_engine", "layers"} <= set(tj)
        assert tj["fps"] == pytest.approx(1000 / tj["total_ms"], rel=1e-3)
        assert sum(tj["by_engine"].values()) == pytest.approx(tj["total_ms"], abs=1e-3)
        row = next(r for r in tj["layers"] if r["node"] == "resize1")
        assert list(row)[:4] == ["node", "op", "engine", "us"]
        assert row["engine"] == ("cpu" if t == "cpu" else "shave")
        assert "alongside" not in tj
    json.dumps(rep)


def test_cost_cli_json_svg_html_on_onnx_and_ir(tmp_path, capsys):
    m = _tiny(tmp_path / "t.onnx")
    xml = tmp_path / "t.xml"
    ov.save_model(ov.convert_model(str(m)), str(xml), compress_to_fp16=True)
    for src in (m, xml):
        rep, svg, page = tmp_path / f"{src.suffix}.json", tmp_path / "c.svg", tmp_path / "c.html"
        code = main(["cost", str(src), "--target", "mtl", "--precision", "int8", "--report", str(rep),
                     "--svg", str(svg), "--html", str(page), "--alongside-ms", "12.5"])
        assert code == 0
        j = json.loads(rep.read_text())
        tj = j["targets"]["mtl"]
        assert j["precision"] == "int8" and all(r["precision"] == "int8" for r in tj["layers"])
        al = tj["alongside"]
        assert al["others_ms"] == 12.5 and al["frame_ms"] == 16.67
        assert al["total_ms"] == pytest.approx(tj["total_ms"] + 12.5, abs=1e-3)
        assert al["fits"] == (al["total_ms"] <= 1000 / 60)
        assert al["headroom_ms"] == pytest.approx(1000 / 60 - al["total_ms"], abs=1e-3)
        text = svg.read_text()
        assert text.startswith("<svg") and "resize1" in text and "shave" in text
        assert "<svg" in page.read_text() and "resize1" in page.read_text()
    assert "fps" in capsys.readouterr().out


def test_cost_cli_bad_input_exit_2(tmp_path, capsys):
    m = _tiny(tmp_path / "t.onnx")
    assert main(["cost", str(tmp_path / "missing.onnx")]) == 2
    assert main(["cost", str(m), "--alongside", str(tmp_path / "nope.xml")]) == 2
    assert main(["cost", str(m), "--alongside-ms", "-1"]) == 2
    assert main(["cost", str(m), "--report", str(tmp_path / "no-dir" / "r.json")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 4 and all(x.startswith("rewrite: error:") for x in err)
    assert "missing.onnx" in err[0] and "nope.xml" in err[1] and "alongside-ms" in err[2]


def test_alongside_sums_models_and_ms_on_the_same_target(tmp_path):
    m = _tiny(tmp_path / "t.onnx")
    other = _tiny(tmp_path / "o.onnx", c=32, h=32, w=32)
    for t in ("kmb", "mtl"):
        ours = predict(m, t).total_ms
        theirs = predict(other, t).total_ms
        al = alongside(ours, [str(other)], 15.0, t)
        assert al["others"] == [{"model": str(other), "ms": round(theirs, 4)}]
        assert al["others_ms"] == pytest.approx(theirs + 15.0, abs=1e-3)
        assert al["total_ms"] == pytest.approx(ours + theirs + 15.0, abs=1e-3)
        assert al["fits"] is (ours + theirs + 15.0 <= 1000 / 60)
        assert alongside(ours, None, 1.0, t)["fits"] is True
        assert alongside(ours, None, 20.0, t)["fits"] is False
    with pytest.raises(RewriteError, match="alongside-ms"):
        alongside(1.0, None, -2.0, "mtl")
    rep = cost_report(m, ("mtl",), alongside_models=[other])
    assert rep["targets"]["mtl"]["alongside"]["others"][0]["model"] == str(other)


def test_rewrite_cli_alongside_in_latency(tmp_path):
    m = _tiny(tmp_path / "t.onnx")
    rep = tmp_path / "r.json"
    code = main(["--passes", "asym_interp", str(m), "-o", str(tmp_path / "o.onnx"), "--no-verify", "--target", "mtl",
                 "--target", "kmb", "--alongside", str(m), "--alongside-ms", "1", "--report", str(rep), "-q"])
    assert code == 0
    lat = json.loads(rep.read_text())["latency"]
    for t in ("mtl", "kmb"):
        al = lat[t]["alongside"]
        assert al["model_ms"] == pytest.approx(lat[t]["after_ms"], abs=1e-3)
        assert al["others_ms"] == pytest.approx(lat[t]["before_ms"] + 1.0, abs=1e-3)  # the same model, unrewritten
        assert {"total_ms", "frame_ms", "fits", "headroom_ms"} <= set(al)
    assert main(["--passes", "asym_interp", str(m), "--alongside", str(tmp_path / "nope.onnx")]) == 2


# ---- the seed team's figures ------------------------------------------------------------------------------
def _fixture(name):
    fx = pytest.importorskip("fixtures")
    pytest.importorskip("torch")
    return fx.fixture_path(name)


def test_seed_sanity_midas_small_kmb_int8_and_dwpw_gain():
    """midas_v21_small at 512x288 on KMB INT8 lands inside the seed team's 60-127 fps band (spreadsheet 126.77,
    device ~60, learned model 99); replacing its 3x3 convs by dw+pw predicts a gain of the order of their
    99 -> 120 fps (1.21x)."""
    from rewriter.passbase import PassContext, build_passes

    h = ModelHandle.load(_fixture("small_ts17_288x512"))
    base = predict(h, "kmb", precision="int8")
    assert 60.0 <= base.fps <= 127.0, base.fps
    dwpw = build_passes(["dwpw"], {"dwpw": {"rank": 1, "refit": False}})[0]
    after = h.clone()
    assert dwpw.apply(after, PassContext(targets=("kmb",), original=h)).sites_changed >= 10
    gain = base.total_ms / predict(after, "kmb", precision="int8").total_ms
    assert 1.05 < gain < 1.6, gain
