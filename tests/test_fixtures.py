"""Fixtures: structure of each export (Resize/Interpolate census), runtime agreement, cache, tiny graphs.

Fast tests use the 256x256 small fixtures only (built on first use, ~1-2 min); midasnet, the other sizes
and the trained proxy are ``slow``.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # fixtures/ is a top-level folder of the repo, not an installed package
    sys.path.insert(0, str(ROOT))

import fixtures  # noqa: E402
from fixtures import tiny  # noqa: E402

pytest.importorskip("torch")


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _const_value(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in model.graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def resize_census(model: onnx.ModelProto) -> Counter:
    """(mode, coordinate_transformation_mode) of every Resize."""
    return Counter((_attrs(n)["mode"].decode(), _attrs(n)["coordinate_transformation_mode"].decode())
                   for n in model.graph.node if n.op_type == "Resize")


def interpolate_census(xml: Path) -> Counter:
    """(version, mode, coordinate_transformation_mode) of every IR Interpolate."""
    import openvino as ov

    m = ov.Core().read_model(str(xml))
    return Counter((op.get_type_info().version_id, op.get_attributes()["mode"],
                    op.get_attributes()["coordinate_transformation_mode"])
                   for op in m.get_ops() if op.get_type_name() == "Interpolate")


EXPECTED_ONNX = Counter({("linear", "align_corners"): 4, ("linear", "half_pixel"): 1})
EXPECTED_IR = Counter({("opset11", "linear_onnx", "align_corners"): 4, ("opset11", "linear_onnx", "half_pixel"): 1})


# ---- tiny graphs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(tiny.ALL))
def test_tiny_graph_checks_and_runs(name):
    import onnxruntime as ort

    m = tiny.ALL[name]()
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(sess.get_inputs()[0].shape).astype(np.float32)
    y = sess.run(None, {"x": x})[0]
    assert list(y.shape) == [d.dim_value for d in m.graph.output[0].type.tensor_type.shape.dim]
    assert np.isfinite(y).all()


def test_tiny_resize_forms():
    op11 = tiny.resize("linear", "align_corners", opset=11)
    node = [n for n in op11.graph.node if n.op_type == "Resize"][0]
    assert node.input[1] != "" and _const_value(op11, node.input[1]).size == 0  # empty roi Constant
    np.testing.assert_array_equal(_const_value(op11, node.input[2]), [1, 1, 2, 2])
    op17 = tiny.resize("linear", "asymmetric", opset=17)
    node = [n for n in op17.graph.node if n.op_type == "Resize"][0]
    assert node.input[1] == "" and len(node.input) == 3
    sizes = tiny.resize("linear", "half_pixel", opset=17, use_sizes=True)
    node = [n for n in sizes.graph.node if n.op_type == "Resize"][0]
    assert node.input[2] == "" and list(_const_value(sizes, node.input[3])) == [1, 4, 16, 16]
    chain = tiny.resize_shape_chain()
    assert {"Shape", "Slice", "Mul", "Concat"} <= {n.op_type for n in chain.graph.node}
    assert [n.op_type for n in tiny.upsample_opset9().graph.node] == ["Constant", "Upsample"]


def test_tiny_resize_align_corners_numerics():
    """The align_corners graph maps the corners exactly (x2 of an 8-wide ramp gives the same ramp ends)."""
    import onnxruntime as ort

    m = tiny.resize("linear", "align_corners", opset=11, channels=1)
    x = np.tile(np.arange(8, dtype=np.float32), (8, 1))[None, None]
    y = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y[0, 0, 0, [0, -1]], [0, 7], atol=1e-6)
    np.testing.assert_allclose(y[0, 0, 0, 1], 7 / 15, atol=1e-6)


def test_tiny_conv_kinds():
    dw = tiny.conv("depthwise")
    node = [n for n in dw.graph.node if n.op_type == "Conv"][0]
    assert _attrs(node)["group"] == 8
    assert len(tiny.conv("full3x3", bias=False).graph.initializer) == 1
    assert [n.op_type for n in tiny.conv("pad_fed").graph.node] == ["Constant", "Pad", "Conv"]
    stack = tiny.conv_resize_stack()
    assert resize_census(stack) == Counter({("linear", "align_corners"): 1, ("linear", "half_pixel"): 1})


# ---- registry and cache ----------------------------------------------------------------------------------
REQUIRED = ["small_ts11_256x256", "small_ts17_256x256", "small_ts17_288x512", "small_ts17_384x672",
            "small_dynamo_256x256", "small_ts17_dynamic", "small_ir_288x512", "small_ir_fp16_288x512",
            "small_ir_256x256", "midasnet_ts11_384x384", "midasnet_ir_384x384", "midasnet_ir_omz_384x384",
            "small_trained_ts17_288x512", "small_trained_ir_288x512"]


def test_registry_names_every_required_fixture():
    assert set(REQUIRED) <= set(fixtures.list_fixtures())
    keys = {fixtures.fixture_key(n) for n in fixtures.FIXTURES}
    assert len(keys) == len(fixtures.FIXTURES)  # every fixture has its own cache key
    with pytest.raises(KeyError, match="unknown fixture"):
        fixtures.fixture_path("small_ts99")


def test_cache_builds_once_atomically(tmp_path, monkeypatch):
    monkeypatch.setenv("REWRITER_FIXTURES", str(tmp_path))
    calls = []

    def fake_build(fx, tmp, src, log):
        calls.append(fx.name)
        tmp.write_bytes(b"model")

    monkeypatch.setattr(fixtures, "_build", fake_build)
    p1 = fixtures.fixture_path("small_ts17_256x256")
    p2 = fixtures.fixture_path("small_ts17_256x256")
    assert p1 == p2 and p1.read_bytes() == b"model" and calls == ["small_ts17_256x256"]
    assert p1.parent == tmp_path and fixtures.fixture_key("small_ts17_256x256") in p1.name
    assert not [f for f in tmp_path.iterdir() if ".tmp" in f.name]  # temp files renamed or removed


def test_cache_reuses_real_fixture(monkeypatch):
    p = fixtures.fixture_path("small_ts17_256x256")
    mtime = p.stat().st_mtime_ns

    def no_build(*a, **k):
        raise AssertionError("rebuilt a cached fixture")

    monkeypatch.setattr(fixtures, "_build", no_build)
    assert fixtures.fixture_path("small_ts17_256x256") == p
    assert p.stat().st_mtime_ns == mtime


def test_cli_path_prints_path_last():
    r = subprocess.run([sys.executable, "-m", "fixtures", "path", "small_ts17_256x256"], cwd=ROOT,
                       capture_output=True, text=True, check=True)
    last = r.stdout.strip().splitlines()[-1]
    assert Path(last).exists() and last.endswith(".onnx")
    r = subprocess.run([sys.executable, "-m", "fixtures", "path", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "unknown fixture" in r.stderr


# ---- small 256x256 exports ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small_ts11_256x256", "small_ts17_256x256", "small_dynamo_256x256"])
def test_small_resize_census(name):
    m = onnx.load(str(fixtures.fixture_path(name)))
    assert resize_census(m) == EXPECTED_ONNX
    opset = {o.domain: o.version for o in m.opset_import if o.domain in ("", "ai.onnx")}
    for n in (n for n in m.graph.node if n.op_type == "Resize"):
        scales = _const_value(m, n.input[2])
        np.testing.assert_array_equal(scales, [1, 1, 2, 2])
        if name.startswith("small_ts11"):  # TorchScript opset 11: roi is an empty Constant
            assert opset[""] == 11 and _const_value(m, n.input[1]).size == 0
        else:  # opset 13+: roi omitted
            assert n.input[1] == ""
    assert sum(n.op_type == "Conv" for n in m.graph.node) == 97
    assert m.graph.input[0].name == "image" and m.graph.output[0].name == "inverse_depth"


def test_small_ts_exports_keep_tf_same_pads():
    m = onnx.load(str(fixtures.fixture_path("small_ts17_256x256")))
    ops = Counter(n.op_type for n in m.graph.node)
    assert ops["Pad"] == 5 and ops["Shape"] > 0  # stem + 4 stride-2 stages, pads from a shape chain


def test_small_ir_interpolate_census():
    assert interpolate_census(fixtures.fixture_path("small_ir_256x256")) == EXPECTED_IR


@pytest.mark.parametrize("name", ["small_ts11_256x256", "small_ts17_256x256", "small_dynamo_256x256",
                                  "small_ir_256x256"])
def test_small_ort_matches_openvino(name):
    from fixtures.verify import check

    r = check(name)
    assert r["rel_max_abs_diff"] < 1e-4, r
    assert r["zero_fraction"] < 0.02


def test_seeded_small_is_smooth():
    from fixtures.verify import smoothness

    s = smoothness("seeded")
    assert s["zero_fraction"] < 0.02
    assert s["asymmetric_rel_l2"] < 0.2  # a random MiDaS gives ~1.0
    assert s["half_pixel_rel_l2"] < s["asymmetric_rel_l2"]


def test_small_stats():
    from fixtures.midas_small import MidasNetSmall
    from fixtures.stats import count

    s = count(MidasNetSmall(), 256, 256)
    assert s.params == 16_563_873 and s.torch_params == 21_320_545
    assert 4.5e9 < s.macs < 4.7e9


# ---- slow: other sizes, midasnet, trained proxy --------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["small_ts17_288x512", "small_ts17_384x672", "small_ts17_dynamic",
                                  "small_ir_288x512", "small_ir_fp16_288x512", "midasnet_ts11_384x384",
                                  "midasnet_ir_384x384", "midasnet_ir_omz_384x384", "small_trained_ts17_288x512",
                                  "small_trained_ir_288x512"])
def test_slow_census_and_agreement(name):
    from fixtures.verify import check

    path = fixtures.fixture_path(name)
    if path.suffix == ".xml":
        assert interpolate_census(path) == EXPECTED_IR
    else:
        assert resize_census(onnx.load(str(path))) == EXPECTED_ONNX
    r = check(name)
    tol = 1e-2 if "fp16" in name else 1e-4
    assert r["rel_max_abs_diff"] < tol, r


@pytest.mark.slow
def test_dynamic_export_runs_at_two_sizes():
    from fixtures.verify import run_ort

    p = fixtures.fixture_path("small_ts17_dynamic")
    for h, w in ((256, 256), (384, 672)):
        assert run_ort(p, np.zeros((1, 3, h, w), np.float32)).shape == (1, h, w)


@pytest.mark.slow
def test_midasnet_stats_match_open_model_zoo():
    from fixtures.midasnet import MidasNet
    from fixtures.stats import count

    s = count(MidasNet(), 384, 384)
    assert round(s.params / 1e6, 3) == 104.081
    assert abs(s.gflops - 207.25) / 207.25 < 0.01


@pytest.mark.slow
def test_omz_ir_preprocessing_inside():
    import openvino as ov

    m = ov.Core().read_model(str(fixtures.fixture_path("midasnet_ir_omz_384x384")))
    assert m.inputs[0].get_any_name() == "image" and m.outputs[0].get_any_name() == "inverse_depth"
    types = [op.get_type_name() for op in m.get_ordered_ops()[:8]]
    assert "Gather" in types and "Subtract" in types


@pytest.mark.slow
def test_trained_proxy_beats_constant_baseline():
    fixtures.trained_weights()
    s = fixtures.trained_summary()
    assert s["held_out_ssi_rmse"] < 0.9 * s["constant_baseline_ssi_rmse"]
    assert s["held_out_ssi_rmse"] < s["seeded_held_out_ssi_rmse"]  # training helped
    assert s["motorcycle_zero_fraction"] < 0.05  # no zero plateaus on the real photo
    lo, hi = s["motorcycle_output_range"]
    assert hi > 2 * max(lo, 1e-6)  # and not a flat map
