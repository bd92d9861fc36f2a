"""The parts of rewriter.diff on their own: the normalised graph over the GraphView, digests, the matcher."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import make_tiny
from onnx import TensorProto, helper, numpy_helper

from rewriter.diff import build_graph, diff, match, replacements
from rewriter.diff.values import digest
from rewriter.model import ModelHandle

W = (np.random.default_rng(3).standard_normal((4, 4, 3, 3)) * 0.2).astype(np.float32)
PADS = [0, 0, 1, 1, 0, 0, 1, 1]


def _padded(pads_by_chain: bool) -> onnx.ModelProto:
    """x → Pad (pads an initializer, or torch's TF-"same" chain from ConstantOfShape) → Conv 3x3 → y."""
    n, i64 = helper.make_node, lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    inits = [numpy_helper.from_array(W, "w")]
    if pads_by_chain:
        zeros = helper.make_tensor("zero", TensorProto.INT64, [1], [0])
        nodes = [n("ConstantOfShape", ["four"], ["zeros"], value=zeros),
                 n("Concat", ["ones", "zeros"], ["flat"], axis=0),  # [1,1,1,1,0,0,0,0]: W, H, C, N pairs
                 n("Reshape", ["flat", "pairs"], ["by_dim"]),
                 n("Slice", ["by_dim", "minus1", "minus_big", "axis0", "minus1"], ["reversed"]),
                 n("Transpose", ["reversed"], ["begin_end"], perm=[1, 0]),
                 n("Reshape", ["begin_end", "minus1"], ["pads_i"]),
                 n("Cast", ["pads_i"], ["pads"], to=TensorProto.INT64)]
        inits += [i64("four", [4]), i64("ones", [1, 1, 1, 1]), i64("pairs", [-1, 2]), i64("minus1", [-1]),
                  i64("minus_big", [-(2 ** 62)]), i64("axis0", [0])]
    else:
        nodes, inits = [], [*inits, i64("pads", PADS)]
    nodes += [n("Pad", ["x", "pads"], ["p"], name="pad"), n("Conv", ["p", "w"], ["y"], name="conv")]
    g = helper.make_graph(nodes, "padded", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    return m


def test_constant_chains_fold_to_their_values_through_the_view():
    """Two exports computing the same pads differently are the same model: the view folds the chain."""
    g = build_graph(ModelHandle(_padded(True)), "chain")
    assert [n.op for n in g.ops] == ["Pad", "Conv"]  # the constant chain is a weight, not ops
    pad = g.ops[0]
    assert [(c.port, c.value.tolist()) for c in pad.consts] == [("pads", PADS)]
    r = diff(_padded(True), _padded(False))
    assert (r["changed"], r["added"], r["removed"]) == ([], [], [])


def test_onnx_graph_fills_schema_defaults_and_names_ports():
    g = build_graph(ModelHandle(make_tiny()), "tiny")
    resize = next(n for n in g.ops if n.op == "Resize")
    assert resize.attrs["coordinate_transformation_mode"] == "align_corners"
    assert resize.attrs["cubic_coeff_a"] == -0.75  # absent in the model: the schema default
    assert [c.port for c in resize.consts] == ["scales"]
    conv = next(n for n in g.ops if n.name == "conv1")
    assert conv.attrs["kernel_shape"] == [3, 3] and conv.attrs["pads"] == [1, 1, 1, 1]
    assert "groups" not in conv.attrs and "weight_shape" not in conv.attrs  # the view's summaries stay out
    assert conv.describe() == "Conv 3x3 8→8 ch" and conv.macs == 16 * 16 * 8 * 72


def test_unnamed_nodes_take_their_view_ids():
    m = make_tiny()
    m.graph.node[1].name = ""
    g = build_graph(ModelHandle(m), "tiny")
    assert [n.name for n in g.ops] == ["conv1", "Relu:r1", "resize1", "conv2"]


def test_onnx_as_ir_keeps_onnx_names_and_folds_the_bias_add():
    m = make_tiny()
    b = numpy_helper.from_array(np.arange(8, dtype=np.float32), "b1")
    m.graph.initializer.append(b)
    m.graph.node[0].input.append("b1")
    g = build_graph(ModelHandle(m), "tiny", as_ir=True)
    assert [(n.name, n.op) for n in g.ops] == [("conv1", "Conv"), ("relu1", "Relu"), ("resize1", "Resize"),
                                               ("conv2", "Conv")]
    conv1 = g.ops[0]
    assert [c.port for c in conv1.consts] == ["in1", "bias"] and conv1.params == 8 * 72 + 8


def test_digest_survives_fp16_storage_but_not_a_change():
    assert digest(W) == digest(W.astype(np.float16).astype(np.float32))
    assert digest(W) != digest(W * np.float32(1.01))
    assert digest(W) != digest(W.reshape(4, 36))  # the shape is part of the content


def test_match_pairs_through_renames_and_replacements_pair_regions():
    a = build_graph(ModelHandle(make_tiny()), "a")
    renamed = make_tiny()
    for k, node in enumerate(renamed.graph.node):
        node.name = f"n{k}"
    b = build_graph(ModelHandle(renamed), "b")
    ab = match(a, b)
    assert {x.name: ab[id(x)].name for x in a.ops} == {"conv1": "n0", "relu1": "n1", "resize1": "n2", "conv2": "n3"}
    assert replacements(a, b, ab) == []
    other = make_tiny()
    other.graph.node[1].op_type = "Sigmoid"
    c = build_graph(ModelHandle(other), "c")
    assert replacements(a, c, match(a, c)) == [{"removed": ["relu1"], "added": ["relu1"]}]


def test_attributes_named_like_view_summaries_are_still_compared():
    """The view's conv summaries (groups, bias, ...) are left out of conv attributes only: Shrink's bias stays."""
    def shrink(bias: float) -> onnx.ModelProto:
        g = helper.make_graph([helper.make_node("Shrink", ["x"], ["y"], bias=bias, name="shrink")], "s",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])

    r = diff(shrink(0.5), shrink(0.25))
    assert [c["attributes"] for c in r["changed"]] == [{"bias": [0.5, 0.25]}]
