"""The dwpw pass: site selection with reasons, exact full rank, predicted MACs, refit, idempotence, IR."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from rewriter.errors import RewriteError
from rewriter.model import ModelHandle
from rewriter.passbase import PassContext, build_passes
from rewriter.refit import rel_l2
from rewriter.runtime import run

CPU = PassContext(targets=())  # no never-slower check: form=auto reads "cpu" then; tests pin what emit writes


def dwpw(model: ModelHandle, ctx: PassContext = CPU, **opts):
    p = build_passes(["dwpw"], {"dwpw": opts})[0]
    return p, p.apply(model, ctx)


def make_model(nodes, inits, in_shape, opset=17) -> ModelHandle:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * 4)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    return ModelHandle.load(m)


def single_conv(cin=4, cout=6, k=(3, 3), hw=(12, 12), bias=True, seed=0, name="conv", **attrs) -> ModelHandle:
    rng = np.random.default_rng(seed)
    inits = {"w": (rng.standard_normal((cout, cin // attrs.get("group", 1), *k)) * 0.3).astype(np.float32)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rng.standard_normal(cout).astype(np.float32)
        ins.append("b")
    node = helper.make_node("Conv", ins, ["y"], name=name, kernel_shape=list(k), **attrs)
    return make_model([node], inits, [1, cin, *hw])


def feeds_for(model: ModelHandle, n=2, seed=7):
    rng = np.random.default_rng(seed)
    return [{name: rng.standard_normal([d or 1 for d in shape]).astype(np.float32)
             for name, shape, _ in model.inputs()} for _ in range(n)]


def site(res, name="conv"):
    return next(s for s in res.sites if s.node == name)


def max_rel(a: ModelHandle, b: ModelHandle, runtime="ort", feeds=None) -> float:
    feeds = feeds or feeds_for(a)
    ya, yb = run(a, feeds, runtime), run(b, feeds, runtime)
    out = a.outputs()[0]
    return max(rel_l2(q[b.outputs()[0]], p[out]) for p, q in zip(ya, yb))


def conv_macs(model: ModelHandle) -> int:
    """MACs of every Conv in an ONNX model, from shape inference."""
    m = onnx.shape_inference.infer_shapes(model.onnx)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    total = 0
    for n in m.graph.node:
        if n.op_type == "Conv":
            w = inits[n.input[1]]
            out = shapes[n.output[0]]
            total += int(np.prod(w.shape)) * out[2] * out[3]
    return total


# ---- properties over random conv shapes ------------------------------------------------------------------------
conv_shapes = st.fixed_dictionaries({
    "cin": st.integers(1, 6), "cout": st.integers(1, 10), "kh": st.integers(2, 4), "kw": st.integers(1, 4),
    "stride": st.integers(1, 2), "dilation": st.integers(1, 2), "pads": st.lists(st.integers(0, 2), min_size=4,
                                                                                 max_size=4),
    "bias": st.booleans(), "form": st.sampled_from(["split", "multiplier"]), "seed": st.integers(0, 999)})


def _random_conv(s) -> ModelHandle:
    return single_conv(s["cin"], s["cout"], (s["kh"], s["kw"]), (11, 10), s["bias"], s["seed"],
                       strides=[s["stride"]] * 2, dilations=[s["dilation"]] * 2, pads=s["pads"])


@settings(max_examples=25, deadline=None)
@given(s=conv_shapes)
def test_full_rank_is_exact_on_random_convs(s):
    m = _random_conv(s)
    before = m.clone()
    p, res = dwpw(m, rank=s["kh"] * s["kw"], min_gain="none", strided=True, form=s["form"])
    assert res.sites_changed == 1 and res.exact
    assert "Conv" in m.op_types() and m.outputs() == ["y"]
    m.validate(compile_cpu=False)
    assert max_rel(before, m) < 1e-5


@settings(max_examples=15, deadline=None)
@given(s=conv_shapes, rank=st.integers(1, 5))
def test_any_rank_gives_a_valid_graph_of_the_predicted_macs(s, rank):
    m = _random_conv(s)
    macs_before = conv_macs(m)
    p, res = dwpw(m, rank=rank, min_gain="none", strided=True, form=s["form"], refit=False)
    m.validate(compile_cpu=False)
    site = res.sites[0]
    assert site.details["macs_before"] == macs_before
    assert conv_macs(m) == site.details["macs_after"] == res.extra["macs_after"]
    assert res.exact == (site.details["rank"] >= min(s["cout"], s["kh"] * s["kw"]))


@pytest.mark.parametrize("form", ["split", "multiplier"])
def test_full_rank_is_exact_in_openvino_onnx_and_ir(form):
    m = single_conv(8, 16, (3, 3), (12, 12), pads=[0, 1, 2, 1], dilations=[2, 2])
    ir = m.to_ir()
    for h in (m, ir):
        before = h.clone()
        _, res = dwpw(h, rank=9, min_gain="none", form=form)
        assert res.sites_changed == 1
        h.validate()
        assert max_rel(before, h, runtime="ov") < 1e-5
    assert ir.op_types().get("GroupConvolution") == (9 if form == "split" else 1)


def test_auto_pad_and_pad_fed_convs_are_preserved():
    rng = np.random.default_rng(3)
    w = (rng.standard_normal((5, 3, 3, 3)) * 0.3).astype(np.float32)
    nodes = [helper.make_node("Pad", ["x", "pads"], ["xp"], name="pad"),
             helper.make_node("Conv", ["xp", "w"], ["c"], name="padded", kernel_shape=[3, 3]),
             helper.make_node("Conv", ["c", "w2"], ["y"], name="same", kernel_shape=[3, 3], auto_pad="SAME_UPPER",
                              strides=[2, 2])]
    inits = {"pads": np.array([0, 0, 0, 1, 0, 0, 1, 0], np.int64), "w": w,
             "w2": (rng.standard_normal((4, 5, 3, 3)) * 0.3).astype(np.float32)}
    m = make_model(nodes, inits, [1, 3, 9, 10])
    before = m.clone()
    _, res = dwpw(m, rank=9, min_gain="none", strided=True)
    assert res.sites_changed == 2
    assert [n.op_type for n in m.onnx.graph.node].count("Pad") == 1
    same_dw = next(n for n in m.onnx.graph.node if n.name.startswith("same/dw"))
    assert helper.get_attribute_value(next(a for a in same_dw.attribute if a.name == "auto_pad")) == b"SAME_UPPER"
    assert max_rel(before, m) < 1e-5


# ---- selection and reasons --------------------------------------------------------------------------------------
def test_skips_with_reasons():
    rng = np.random.default_rng(0)

    def w(*s):
        return (rng.standard_normal(s) * 0.3).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w_grouped"], ["a"], name="grouped", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["a", "w_dw"], ["b"], name="depthwise", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["b", "w_1x1"], ["c"], name="pointwise"),
        helper.make_node("Conv", ["c", "w_full"], ["d"], name="strided", strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("DequantizeLinear", ["w_q", "scale", "zp"], ["w_deq"], name="deq"),
        helper.make_node("Conv", ["d", "w_deq"], ["e"], name="quantized", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["e"], ["w_dyn_src"], name="relu"),
        helper.make_node("Conv", ["e", "w_full2"], ["f"], name="kept", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["f", "w_full3"], ["y"], name="excluded_by_name", pads=[1, 1, 1, 1]),
    ]
    inits = {"w_grouped": w(8, 2, 3, 3), "w_dw": w(8, 1, 3, 3), "w_1x1": w(8, 8, 1, 1), "w_full": w(8, 8, 3, 3),
             "w_q": rng.integers(-8, 8, (8, 8, 3, 3)).astype(np.int8), "scale": np.float32(0.1),
             "zp": np.int8(0), "w_full2": w(8, 8, 3, 3), "w_full3": w(8, 8, 3, 3)}
    m = make_model(nodes, inits, [1, 8, 16, 16])
    p = build_passes(["dwpw"], {"dwpw": {"rank": 1, "exclude": "excluded"}})[0]
    why = {s.node: s.decision for s in p.match(m, CPU)}
    assert why["grouped"].startswith("grouped conv (groups=4")
    assert why["depthwise"].startswith("depthwise conv")
    assert why["pointwise"].startswith("1x1 conv")
    assert why["strided"].startswith("strided conv (stride 2x2)")
    assert why["quantized"] == "already quantized (weights behind DequantizeLinear): not dequantizing"
    assert why["kept"] == "will change"
    assert why["excluded_by_name"].startswith("name matches exclude=")
    p2 = build_passes(["dwpw"], {"dwpw": {"rank": 1, "strided": "true", "include": "^(strided|kept)$"}})[0]
    assert {s.node for s in p2.match(m, CPU) if s.will_change} == {"strided", "kept"}


def test_dynamic_weights_are_skipped():
    nodes = [helper.make_node("Conv", ["x", "x"], ["y"], name="selfconv", kernel_shape=[3, 3])]
    m = make_model(nodes, {}, [4, 4, 3, 3])
    p = build_passes(["dwpw"])[0]
    assert p.match(m, CPU)[0].decision == "dynamic weights (computed at run time): nothing to factor"


def test_min_gain_skips_unprofitable_sites_and_none_forces_them():
    m = single_conv(8, 8, (3, 3), (16, 16))  # rank 8 pair: 8*8*9 + 8*8*8 MACs/pixel > 8*8*9
    p = build_passes(["dwpw"], {"dwpw": {"rank": 9}})[0]
    site = p.match(m, CPU)[0]
    assert site.decision.startswith("not cheaper on cpu at rank 8") and "min_gain=none" in site.decision
    assert build_passes(["dwpw"], {"dwpw": {"rank": 9, "min_gain": "none"}})[0].match(m, CPU)[0].will_change
    big = single_conv(64, 64, (3, 3), (64, 64))  # predicted ~4x cheaper as a rank-1 pair on cpu
    assert build_passes(["dwpw"], {"dwpw": {"rank": 1, "min_gain": 0.5}})[0].match(big, CPU)[0].will_change
    assert not build_passes(["dwpw"], {"dwpw": {"rank": 1, "min_gain": 0.9}})[0].match(big, CPU)[0].will_change


def test_option_errors():
    with pytest.raises(RewriteError, match="rank or energy"):
        build_passes(["dwpw"], {"dwpw": {"rank": 2, "energy": 0.9}})
    with pytest.raises(RewriteError, match="min_gain"):
        build_passes(["dwpw"], {"dwpw": {"min_gain": "lots"}})
    with pytest.raises(RewriteError, match="form"):
        build_passes(["dwpw"], {"dwpw": {"form": "diagonal"}})


def test_energy_picks_the_rank():
    m = single_conv(6, 16, (3, 3), (10, 10))
    _, res = dwpw(m, energy=1.0, min_gain="none", refit=False)
    assert res.sites[0].details["rank"] == 9 and res.sites[0].details["exact"]
    m = single_conv(6, 16, (3, 3), (10, 10))
    _, res = dwpw(m, energy=0.5, refit=False)
    d = res.sites[0].details
    assert 1 <= d["rank"] < 9 and d["energy"] >= 0.5


def test_idempotent_with_names_and_tags():
    for h in (single_conv(8, 16, (3, 3)), single_conv(8, 16, (3, 3)).to_ir()):
        _, first = dwpw(h, rank=2, form="split", refit=False, min_gain="none")
        assert first.sites_changed == 1
        c = first.sites[0].node  # "conv", or "conv/WithoutBiases" once OpenVINO split the bias off
        assert set(h.tags()) >= {f"{c}/dw0", f"{c}/dw1", f"{c}/dw_concat", f"{c}/pw"}
        _, second = dwpw(h, rank=2, form="split", refit=False, min_gain="none")
        assert second.sites_changed == 0
        assert all(s.decision == "made by dwpw earlier (not factored twice)" for s in second.sites)


def test_pointwise_keeps_the_output_tensor_and_bias():
    m = single_conv(4, 8, (3, 3), pads=[1, 1, 1, 1])
    dwpw(m, rank=2, form="multiplier", refit=False, min_gain="none")
    pw = next(n for n in m.onnx.graph.node if n.name == "conv/pw")
    assert list(pw.output) == ["y"] and pw.input[2] == "conv/pw.bias"
    assert [n.name for n in m.onnx.graph.node] == ["conv/dw", "conv/pw"]


def test_form_auto_follows_the_first_target():
    for targets, n_dw in ((("cpu",), 3), (("mtl", "cpu"), 1)):
        m = single_conv(8, 32, (3, 3), (16, 16))
        p = build_passes(["dwpw"], {"dwpw": {"rank": 3, "refit": False, "min_gain": "none"}})[0]
        p.apply(m, PassContext(targets=targets), selection={"conv": "rank3"})  # forced past never-slower
        assert sum(n.name.startswith("conv/dw") and n.op_type == "Conv" for n in m.onnx.graph.node) == n_dw



def test_sites_say_where_the_conv_and_its_pair_run_per_target():
    m = single_conv(32, 64, (3, 3), (24, 24))
    p = build_passes(["dwpw"], {"dwpw": {"refit": False}})[0]
    (d,) = p.apply(m, PassContext(targets=("mtl", "kmb", "cpu"))).decisions
    assert set(d.details["engine_before"]) == set(d.details["engine_after"]) == {"mtl", "kmb", "cpu"}
    before, after = d.details["engine_before"], d.details["engine_after"]
    assert before["mtl"]["engine"] == after["mtl"]["engine"] == "dpu" and before["mtl"]["rule"] == "3x3 conv"
    assert before["cpu"]["engine"] == after["cpu"]["engine"] == "cpu" and "rank 1" in after["cpu"]["rule"]

# ---- refit --------------------------------------------------------------------------------------------------------
def image_model(seed=0) -> ModelHandle:
    """3-channel image input → 1x1 expand → 3x3 conv (the site) → relu: calibration uses real photos."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], name="expand"),
             helper.make_node("Relu", ["a"], ["r"], name="relu0"),
             helper.make_node("Conv", ["r", "w1", "b1"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"], name="relu1")]
    inits = {"w0": (rng.standard_normal((16, 3, 1, 1))).astype(np.float32),
             "w1": (rng.standard_normal((24, 16, 3, 3)) * 0.2).astype(np.float32),
             "b1": rng.standard_normal(24).astype(np.float32) * 0.1}
    return make_model(nodes, inits, [1, 3, 48, 64])


def test_refit_beats_plain_svd_on_real_images():
    ctx = PassContext(targets=("cpu",))
    plain, fitted = image_model(), image_model()
    _, r0 = dwpw(plain, ctx, rank=1, refit=False)
    _, r1 = dwpw(fitted, ctx, rank=1)
    d = site(r1).details
    assert d["refit"] == "pointwise" and d["error_refit"] < 0.7 * d["error_svd"]
    calib = ctx.calibration(image_model())
    assert calib.is_images
    e_plain = max_rel(image_model(), plain, feeds=calib.feeds[:4])
    e_fit = max_rel(image_model(), fitted, feeds=calib.feeds[:4])
    assert e_fit < 0.7 * e_plain
    assert "conv/pw" in r1.new_nodes and r1.extra["layer_error_refit_mean"] < r1.extra["layer_error_svd_mean"]


def test_refit_depthwise_als_lowers_the_error_further():
    _, pw_only = dwpw(image_model(), rank=1)
    _, als = dwpw(image_model(), rank=1, refit_depthwise=3)
    assert site(als).details["error_refit"] < site(pw_only).details["error_refit"]


def test_refit_on_ir_adds_a_bias_add_and_lowers_error():
    ir = image_model().to_ir()
    before = ir.clone()
    _, res = dwpw(ir, rank=1)
    d = site(res, "conv/WithoutBiases").details
    assert d["error_refit"] < d["error_svd"]
    assert "conv/WithoutBiases/pw_bias" in res.new_nodes
    ir.validate()
    feeds = CPU.calibration(before).feeds[:2]
    assert max_rel(before, ir, runtime="ov", feeds=feeds) < 0.5


def test_non_image_model_refits_on_random_inputs_and_says_so():
    m = single_conv(64, 64, (3, 3), (16, 16))
    _, res = dwpw(m, rank=1)
    assert any("random" in n for n in res.notes)
    assert "error_refit" in res.sites[0].details


def test_full_rank_is_not_refit():
    m = image_model()
    before = m.clone()
    _, res = dwpw(m, rank=9, min_gain="none")
    assert site(res).details["refit"] == "skipped: exact at full rank"
    assert max_rel(before, m) < 1e-5


def test_fp16_compressed_ir_is_read_through_convert(tmp_path):
    src = single_conv(8, 16, (3, 3), (12, 12), pads=[1, 1, 1, 1])
    src.to_ir().save(tmp_path / "m.xml", compress_to_fp16=True)
    ir = ModelHandle.load(tmp_path / "m.xml")
    assert any(op.get_type_name() == "Convert" for op in ir.ov.get_ops())
    before = ir.clone()
    _, res = dwpw(ir, rank=9, min_gain="none")
    assert res.sites_changed == 1
    assert max_rel(before, ir, runtime="ov") < 1e-4


# ---- real exports (fixtures) ---------------------------------------------------------------------------------------
def fixture(name: str) -> ModelHandle:
    fixtures = pytest.importorskip("fixtures")
    return ModelHandle.load(fixtures.fixture_path(name))


def total_conv_macs(model: ModelHandle) -> int:
    """MACs of every conv in the model, through OpenVINO shapes (both formats)."""
    total = 0
    for op in model.ov_model().get_ops():
        if op.get_type_name() in ("Convolution", "GroupConvolution"):
            w = op.get_input_partial_shape(1).to_shape()
            out = op.get_output_partial_shape(0).to_shape()
            total += int(np.prod(w)) * out[2] * out[3]  # GroupConv weight G x Cout/G x Cin/G x k x k: same count
    return total


@pytest.mark.parametrize("name", ["small_ts17_256x256", "small_ir_256x256"])
def test_small_full_rank_reproduces_the_output(name):
    m = fixture(name)
    before = m.clone()
    _, res = dwpw(m, rank=9, min_gain="none")
    assert res.sites_changed == 20  # every decoder/head 3x3 conv; encoder convs are strided/depthwise/1x1
    feeds = CPU.calibration(before).feeds[:2]
    assert max_rel(before, m, runtime="ov", feeds=feeds) < 1e-4


def test_small_rank_1_and_2_cut_the_macs(capsys):
    base = fixture("small_ts17_256x256")
    before = total_conv_macs(base)
    for rank in (1, 2):
        m = base.clone()
        _, res = dwpw(m, rank=rank, refit=False)
        after = total_conv_macs(m)
        assert after == before - res.extra["macs_before"] + res.extra["macs_after"]
        assert after < before * (0.5 if rank == 1 else 0.7)
        with capsys.disabled():
            print(f"\nsmall_ts17_256x256 conv MACs: {before / 1e9:.3f} G → rank {rank}: {after / 1e9:.3f} G "
                  f"({res.sites_changed} sites)")


@pytest.mark.slow
def test_midasnet_grouped_convs_are_skipped_with_reason():
    m = fixture("midasnet_ts11_384x384")
    sites = build_passes(["dwpw"], {"dwpw": {"rank": 1}})[0].match(m, CPU)
    grouped = [s for s in sites if s.decision.startswith("grouped conv (groups=32")]
    assert len(grouped) >= 20 and any(s.will_change for s in sites)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small_trained_ts17_288x512"])
def test_refit_lowers_the_output_error_on_the_trained_proxy(name, capsys):
    base = fixture(name)
    feeds = CPU.calibration(base).feeds[:4]
    errs = {}
    for refit in (False, True):
        m = base.clone()
        dwpw(m, rank=1, refit=refit)
        errs[refit] = max_rel(base, m, runtime="ov", feeds=feeds)
    with capsys.disabled():
        print(f"\n{name} rank 1 output rel. L2: SVD {errs[False]:.3f}, refit {errs[True]:.3f}")
    assert errs[True] < 0.5 * errs[False]
