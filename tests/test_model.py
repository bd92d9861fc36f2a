"""Model handle: loading both formats, bad input messages, tags that survive saving, atomic writes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import make_tiny, sha256

from rewriter import ModelHandle, RewriteError
from rewriter.runtime import run


def _feed(seed=0):
    return {"x": np.random.default_rng(seed).standard_normal((1, 8, 16, 16)).astype(np.float32)}


def test_load_onnx_path_proto_and_ir(tiny_onnx, tiny_ir):
    a = ModelHandle.load(tiny_onnx)
    b = ModelHandle.load(onnx.load(str(tiny_onnx)))
    c = ModelHandle.load(tiny_ir)
    d = ModelHandle.load(c.ov)
    assert (a.format, b.format, c.format, d.format) == ("onnx", "onnx", "ir", "ir")
    assert a.inputs()[0][:2] == ("x", [1, 8, 16, 16])
    assert c.inputs()[0][1] == [1, 8, 16, 16]
    ya, yc = run(a, [_feed()])[0], run(c, [_feed()])[0]
    np.testing.assert_allclose(next(iter(ya.values())), next(iter(yc.values())), atol=1e-5)
    assert a.op_types() == {"Conv": 2, "Relu": 1, "Resize": 1}
    assert c.op_types()["Convolution"] == 2 and c.op_types()["Interpolate"] == 1


def test_clone_is_independent(tiny_onnx):
    a = ModelHandle.load(tiny_onnx)
    b = a.clone()
    b.onnx.graph.node[0].name = "renamed"
    assert a.onnx.graph.node[0].name == "conv1"


@pytest.mark.parametrize("fmt", ["onnx", "ir"])
def test_tags_survive_save_and_reload(tmp_path, tiny_onnx, tiny_ir, fmt):
    h = ModelHandle.load(tiny_onnx if fmt == "onnx" else tiny_ir)
    name = "conv1" if fmt == "onnx" else next(op.get_friendly_name() for op in h.ov.get_ops()
                                               if op.get_type_name() == "Convolution")
    h.tag([name], "dwpw")
    assert h.tags() == {name: "dwpw"}
    out = h.save(tmp_path / ("o.onnx" if fmt == "onnx" else "o.xml"))
    assert ModelHandle.load(out).tags() == {name: "dwpw"}


def test_set_onnx_keeps_tags_of_surviving_nodes(tiny_onnx):
    import onnx_graphsurgeon as gs

    h = ModelHandle.load(tiny_onnx)
    h.tag(["conv1"], "p")
    h.set_onnx(gs.export_onnx(gs.import_onnx(h.onnx)))  # graphsurgeon drops metadata_props
    assert h.tags() == {"conv1": "p"}


def test_onnx_to_ir_keeps_numerics_and_tags(tmp_path, tiny_onnx):
    h = ModelHandle.load(tiny_onnx)
    out = h.save(tmp_path / "m.xml", to="ir")
    assert out.exists() and out.with_suffix(".bin").exists()
    ir = ModelHandle.load(out)
    np.testing.assert_allclose(next(iter(run(h, [_feed()])[0].values())),
                               next(iter(run(ir, [_feed()])[0].values())), atol=1e-5)


def test_ir_save_keeps_fp32_by_default(tmp_path, tiny_ir):
    h = ModelHandle.load(tiny_ir)
    h.save(tmp_path / "fp32.xml")
    h.save(tmp_path / "fp16.xml", compress_to_fp16=True)
    assert "f16" not in (tmp_path / "fp32.xml").read_text()
    assert "f16" in (tmp_path / "fp16.xml").read_text()


def test_external_data_round_trip(tmp_path):
    m = make_tiny()
    src = tmp_path / "ext.onnx"
    onnx.save(m, str(src), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.onnx.data",
              size_threshold=0)
    h = ModelHandle.load(src)
    assert h.external_data
    out = h.save(tmp_path / "out" / "e.onnx") if (tmp_path / "out").mkdir() is None else None
    assert (tmp_path / "out" / "e.onnx.data").exists()
    np.testing.assert_allclose(next(iter(run(ModelHandle.load(out), [_feed()])[0].values())),
                               next(iter(run(h, [_feed()])[0].values())), atol=0)


@pytest.mark.parametrize("case, expected", [
    ("missing", "no such file"),
    ("junk", "not a valid ONNX model"),
    ("empty", "empty file"),
    ("truncated", "not a valid ONNX model"),
    ("ir_no_bin", "is missing"),
    ("ir_short_bin", "weights file is short"),
    ("ir_junk", "not an OpenVINO IR"),
    ("bin", "give the IR's .xml"),
    ("txt", "unknown model type"),
])
def test_bad_input_messages(tmp_path, tiny_onnx, tiny_ir, case, expected):
    p = {"missing": tmp_path / "nope.onnx", "junk": tmp_path / "junk.onnx", "empty": tmp_path / "empty.onnx",
         "truncated": tmp_path / "trunc.onnx", "ir_no_bin": tiny_ir, "ir_short_bin": tiny_ir,
         "ir_junk": tmp_path / "junk.xml", "bin": tiny_ir.with_suffix(".bin"), "txt": tmp_path / "m.txt"}[case]
    if case == "junk":
        p.write_text("not a model")
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "truncated":
        data = tiny_onnx.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif case == "ir_no_bin":
        tiny_ir.with_suffix(".bin").unlink()
    elif case == "ir_short_bin":
        b = tiny_ir.with_suffix(".bin")
        b.write_bytes(b.read_bytes()[:100])
    elif case == "ir_junk":
        p.write_text("<html></html>")
    elif case == "txt":
        p.write_text("x")
    with pytest.raises(RewriteError, match=expected) as e:
        ModelHandle.load(p)
    assert str(p.name) in str(e.value) or str(p.with_suffix(".bin").name) in str(e.value)


def test_save_refuses_input_path_and_leaves_no_temp(tmp_path, tiny_onnx, tiny_ir):
    h = ModelHandle.load(tiny_onnx)
    before = sha256(tiny_onnx)
    with pytest.raises(RewriteError, match="equals the input"):
        h.save(tiny_onnx)
    ir = ModelHandle.load(tiny_ir)
    with pytest.raises(RewriteError, match="equals the input"):
        ir.save(tiny_ir)
    with pytest.raises(RewriteError, match="does not exist"):
        h.save(tmp_path / "no" / "dir" / "x.onnx")
    assert sha256(tiny_onnx) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rewrite-tmp")]


def test_failed_save_leaves_nothing(tmp_path, tiny_onnx, monkeypatch):
    h = ModelHandle.load(tiny_onnx)

    def boom(*a, **k):
        raise OSError("disk full")

    import rewriter.model

    monkeypatch.setattr(onnx, "save", boom)
    monkeypatch.setattr(rewriter.model, "write_onnx", boom)  # the streaming writer of in-memory models
    with pytest.raises(OSError):
        h.save(tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".rewrite-tmp")]


def test_default_output_names(tiny_onnx, tiny_ir):
    assert ModelHandle.load(tiny_onnx).default_output().name == "tiny.rewritten.onnx"
    assert ModelHandle.load(tiny_onnx).default_output("ir").name == "tiny.rewritten.xml"
    assert ModelHandle.load(tiny_ir).default_output().name == "tiny.rewritten.xml"


def test_write_onnx_streams_the_same_model(tmp_path):
    """write_onnx (initializers serialized one at a time, last) reads back equal to the model."""
    import onnx
    from onnx import helper, numpy_helper

    from rewriter.model import write_onnx

    w = numpy_helper.from_array(np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3), "w")
    b = numpy_helper.from_array(np.ones(2, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    node.metadata_props.add(key="rewriter.pass", value="p")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 2, 8, 8])],
                          initializer=[w, b], doc_string="doc")
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="t")
    m.metadata_props.add(key="k", value="v")
    write_onnx(m, tmp_path / "m.onnx")
    back = onnx.load(str(tmp_path / "m.onnx"))
    assert back == m
    assert back.graph.node[0].metadata_props[0].value == "p"
    np.testing.assert_array_equal(numpy_helper.to_array(back.graph.initializer[0]), numpy_helper.to_array(w))


def test_clone_is_copy_on_write(tiny_onnx):
    """An ONNX clone shares its source's proto until one of them is edited; edits never leak across."""
    h = ModelHandle.load(tiny_onnx)
    c = h.clone()
    assert c.shared and c.proto is h.proto  # no copy yet
    h.onnx.graph.node[0].name = "edited-in-source"  # editing access: the clone takes its copy first
    assert not c.shared
    assert c.onnx.graph.node[0].name != "edited-in-source"
    d = h.clone()
    d.onnx.graph.node[0].name = "edited-in-clone"
    assert h.proto.graph.node[0].name == "edited-in-source"
    h.tag([h.proto.graph.node[0].name], "p")
    assert d.tags() == {}


def _big_model(path) -> None:
    """x[1,64,8,8] → Conv 3x3 (36864 weights: above the view's small-constant limit) → Relu → Conv 1x1."""
    rng = np.random.default_rng(1)
    m = onnx.parser.parse_model("""
    <ir_version: 8, opset_import: ["" : 17]>
    g (float[1,64,8,8] x) => (float[1,8,8,8] y) {
        c = Conv <pads = [1, 1, 1, 1], kernel_shape = [3, 3]> (x, w)
        r = Relu (c)
        y = Conv <kernel_shape = [1, 1]> (r, w2)
    }""")
    m.graph.initializer.extend([onnx.numpy_helper.from_array(rng.standard_normal((64, 64, 3, 3), np.float32), "w"),
                                onnx.numpy_helper.from_array(rng.standard_normal((8, 64, 1, 1), np.float32), "w2")])
    onnx.save(m, str(path))


def test_donated_weights_are_read_back_from_the_file(tmp_path):
    """``donate_weights``: the first clone that edits takes the proto; the original keeps its graph and reads
    its large weights back from the unchanged file when a value is needed."""
    from rewriter.graph import view

    p = tmp_path / "big.onnx"
    _big_model(p)
    want = onnx.numpy_helper.to_array(onnx.load(str(p)).graph.initializer[0])
    h = ModelHandle.load(p)
    assert h.donate_weights()
    taken = h.proto
    c = h.clone()
    assert c.onnx is taken and h.hollow  # no copy: the clone owns the loaded proto
    big = next(t for t in h.graph_proto.graph.initializer if t.name == "w")
    assert list(big.dims) == [64, 64, 3, 3] and not big.raw_data
    assert h.op_types() == {"Conv": 2, "Relu": 1} and h.inputs()[0][1] == [1, 64, 8, 8]
    assert view(h).static_shape("y") == [1, 8, 8, 8] and h.hollow  # structure readers do not reload
    np.testing.assert_array_equal(view(h).const("w"), want)  # a value does
    assert not h.hollow
    c.onnx.graph.initializer[0].raw_data = np.zeros(want.size, np.float32).tobytes()  # the clone is its own
    h2 = ModelHandle.load(p)
    assert h2.donate_weights()
    h2.clone().onnx  # noqa: B018 (takes the proto)
    d = h2.clone()
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(d.onnx.graph.initializer[0]), want)
    assert h2.hollow  # a later clone that edits reads its own copy from the file; the donor stays light
    np.testing.assert_array_equal(onnx.numpy_helper.to_array(h.proto.graph.initializer[0]), want)


def test_donation_refused_or_refusing_when_unsafe(tmp_path):
    p = tmp_path / "big.onnx"
    _big_model(p)
    edited = ModelHandle.load(p)
    edited.onnx.graph.node[1].name = "renamed"  # handed out for editing: no longer the file's model
    assert not edited.donate_weights()
    assert not ModelHandle.load(onnx.load(str(p))).donate_weights()  # no file to read back from
    h = ModelHandle.load(p)
    assert h.donate_weights()
    h.clone().onnx  # noqa: B018
    _big_model(p)  # rewritten on disk since: its weights cannot be read back
    import os

    os.utime(p, ns=(1, 1))
    with pytest.raises(RewriteError, match="changed on disk"):
        h.proto  # noqa: B018


def test_no_verify_rewrite_donates_and_writes_the_same_model(tmp_path, monkeypatch):
    """``rewrite(verify=False)`` lets the first edit take the original's weights; the output is the same model."""
    import rewriter
    import rewriter.model as M

    hollowed: list[int] = []
    real = M._hollow_copy
    monkeypatch.setattr(M, "_hollow_copy", lambda m: hollowed.append(1) or real(m))
    p = tmp_path / "big.onnx"
    _big_model(p)
    a, rep = rewriter.rewrite(str(p), "dwpw", verify=False, opts={"dwpw": {"refit": False}},
                              output=tmp_path / "a.onnx")
    assert rep["passes"][0]["sites_changed"] >= 1 and hollowed == [1]
    b, _ = rewriter.rewrite(onnx.load(str(p)), "dwpw", verify=False, opts={"dwpw": {"refit": False}},
                            output=tmp_path / "b.onnx")
    ma, mb = onnx.load(str(tmp_path / "a.onnx")), onnx.load(str(tmp_path / "b.onnx"))
    assert [n.SerializeToString() for n in ma.graph.node] == [n.SerializeToString() for n in mb.graph.node]
    assert ({t.name: t.SerializeToString() for t in ma.graph.initializer}
            == {t.name: t.SerializeToString() for t in mb.graph.initializer})
