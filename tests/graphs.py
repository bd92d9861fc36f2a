"""Test graphs, written once in ``onnx.parser`` text, and the helpers that make them models in both formats.

Weights are declared as graph inputs in the text and turned into seeded random initializers by
:func:`onnx_model`, so a graph reads as its structure. :func:`handle` gives the graph as ONNX, as OpenVINO IR
(converted the way users convert: ``ov.convert_model``), as an FP16-precision IR (every tensor f16) or as an
FP16-compressed IR (f16 weights + Convert, ``compress_to_fp16=True``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx.parser
from onnx import numpy_helper

from rewriter.model import ModelHandle

FORMATS = ("onnx", "ir")

# A MiDaS-like decoder tail: conv → align_corners x2 (fusion upsample) → conv → half_pixel x2 (the head,
# small-channel) → 1x1 conv. Weights (w*, scales) become initializers.
HEAD = """
<ir_version: 8, opset_import: ["" : 17]>
head (float[1,32,12,12] x, float[32,32,3,3] w1, float[32] b1, float[4] s1, float[4,32,3,3] w2,
      float[4] s2, float[1,4,1,1] w3) => (float[1,1,48,48] y)
{
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    r1 = Relu (c1)
    u1 = Resize <mode = "linear", coordinate_transformation_mode = "align_corners"> (r1, , s1)
    c2 = Conv <pads = [1, 1, 1, 1]> (u1, w2)
    u2 = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel"> (c2, , s2)
    y = Conv (u2, w3)
}
"""

# One wide 3x3 conv and an x2 asymmetric upsample with many channels (both worth rewriting on an NPU).
WIDE = """
<ir_version: 8, opset_import: ["" : 17]>
wide (float[1,64,16,16] x, float[64,64,3,3] w1, float[64] b1, float[4] s1) => (float[1,64,32,32] y)
{
    c1 = Conv <pads = [1, 1, 1, 1]> (x, w1, b1)
    y = Resize <mode = "linear", coordinate_transformation_mode = "asymmetric"> (c1, , s1)
}
"""

GRAPHS = {"head": HEAD, "wide": WIDE}
SCALES = {"s1": [1, 1, 2, 2], "s2": [1, 1, 2, 2]}


def onnx_model(name: str, dtype: type = np.float32, seed: int = 0) -> onnx.ModelProto:
    """Graph ``name`` as an ONNX model, weights seeded; ``dtype=np.float16`` makes every tensor f16."""
    m = onnx.parser.parse_model(GRAPHS[name])
    rng = np.random.default_rng(seed)
    g = m.graph
    keep = []
    for vi in g.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        if vi.name in SCALES:
            g.initializer.append(numpy_helper.from_array(np.array(SCALES[vi.name], np.float32), vi.name))
        elif vi.name.startswith(("w", "b")):
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            v = rng.standard_normal(shape) / np.sqrt(fan_in)
            g.initializer.append(numpy_helper.from_array(v.astype(dtype), vi.name))
        else:
            keep.append(vi)
    del g.input[:]
    g.input.extend(keep)
    if dtype == np.float16:  # every float tensor f16 (scales stay f32, as Resize wants)
        elem = onnx.TensorProto.FLOAT16
        for vi in [*g.input, *g.output]:
            vi.type.tensor_type.elem_type = elem
    onnx.checker.check_model(m)
    return m


def handle(name: str, fmt: str = "onnx", precision: str = "f32") -> ModelHandle:
    """Graph ``name`` as a ModelHandle: ``fmt`` onnx/ir; ``precision`` f32, f16 (every tensor f16) or
    f16c (FP16-compressed IR: f16 weights + Convert)."""
    proto = onnx_model(name, np.float16 if precision == "f16" else np.float32)
    if fmt == "onnx":
        return ModelHandle.load(proto)
    import openvino as ov

    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "m.onnx"
        onnx.save(proto, str(src))
        m = ov.convert_model(str(src))
        if precision != "f16c":
            return ModelHandle.load(m)
        ov.save_model(m, str(Path(d) / "m.xml"), compress_to_fp16=True)
        h = ModelHandle.load(Path(d) / "m.xml")
        h.ov = h.ov.clone()  # detach from the temporary files
        h.source = None
        return h


def feed(model: ModelHandle, seed: int = 7) -> dict[str, np.ndarray]:
    """One seeded input for every graph input, in its element type."""
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal([d or 1 for d in shape]).astype(dtype) for n, shape, dtype in model.inputs()}
