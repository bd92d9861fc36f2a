"""Run a model handle on OpenVINO CPU (default) or onnxruntime, optionally exposing intermediate tensors.

Taps name intermediate tensors: for ONNX a tensor name; for IR a tensor name or ``"friendly_name:port"``
of the producing op's output.
"""

from __future__ import annotations

import numpy as np
import onnx

from .errors import RewriteError
from .model import ModelHandle, ov_core

RUNTIMES = ("ov", "ort")


class Runner:
    """A compiled model: call ``run(feed)`` many times. Outputs come back as {name: array}."""

    def __init__(self, model: ModelHandle, runtime: str = "ov", taps: list[str] | None = None,
                 threads: int | None = None):
        if runtime not in RUNTIMES:
            raise RewriteError(f"unknown runtime '{runtime}' (use ov or ort)")
        self.runtime = runtime
        self.taps = list(taps or [])
        if runtime == "ort":
            if model.format != "onnx":
                raise RewriteError("onnxruntime runs ONNX models only; use --check-runtime ov for IR")
            import onnxruntime as ort

            proto = _with_onnx_outputs(model.proto, self.taps) if self.taps else model.proto  # read: no copy
            so = ort.SessionOptions()
            so.log_severity_level = 3
            if threads:
                so.intra_op_num_threads = threads
            self.sess = ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
            self.names = [o.name for o in self.sess.get_outputs()]
        else:
            if model.format == "onnx" and self.taps:
                m = ModelHandle(_with_onnx_outputs(model.proto, self.taps)).ov_model()
            else:
                m = model.ov_model().clone() if self.taps else model.ov_model()
                if self.taps:
                    _add_ir_outputs(m, self.taps)
            cfg = {"INFERENCE_PRECISION_HINT": "f32"}
            if threads:
                cfg["INFERENCE_NUM_THREADS"] = threads
            self.compiled = ov_core().compile_model(m, "CPU", cfg)
            self.request = self.compiled.create_infer_request()
            self.names = [_port_name(o, i) for i, o in enumerate(self.compiled.outputs)]
            self._n_model_outputs = len(self.compiled.outputs) - len(self.taps)
            if self.taps:  # extra outputs come last, in tap order
                self.names[self._n_model_outputs:] = self.taps

    def run(self, feed: dict[str, np.ndarray], borrow: bool = False) -> dict[str, np.ndarray]:
        """Outputs on ``feed``. ``borrow`` (OpenVINO): views of the runtime's output buffers, overwritten by the
        next run, instead of copies; the caller must copy what it keeps."""
        if self.runtime == "ort":
            res = self.sess.run(None, feed)
            return dict(zip(self.names, res))
        if borrow:
            res = self.request.infer(feed, share_outputs=True)
            return {n: res[o] for n, o in zip(self.names, self.compiled.outputs)}
        res = self.request.infer(feed)
        return {n: np.array(res[o], copy=True) for n, o in zip(self.names, self.compiled.outputs)}


def run(model: ModelHandle, feeds: list[dict[str, np.ndarray]], runtime: str = "ov",
        taps: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Run every feed; one output dict per feed."""
    r = Runner(model, runtime, taps)
    return [r.run(f) for f in feeds]


def _port_name(port, i: int) -> str:
    try:
        return port.get_any_name()
    except RuntimeError:
        return f"output{i}"


def _with_onnx_outputs(model: onnx.ModelProto, taps: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    produced = {o for n in m.graph.node for o in n.output}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in m.graph.value_info}
    for t in taps:
        if t in existing:
            continue
        if t not in produced:
            raise RewriteError(f"tensor '{t}' is not produced by any node of the model")
        m.graph.output.append(onnx.helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
    return m


def _add_ir_outputs(m, taps: list[str]) -> None:
    by_name = {op.get_friendly_name(): op for op in m.get_ops()}
    outs = []
    for t in taps:
        node, _, port = t.rpartition(":")
        if node and port.isdigit() and node in by_name:
            outs.append(by_name[node].output(int(port)))
            continue
        found = None
        for op in m.get_ops():
            for o in op.outputs():
                if t in o.get_names():
                    found = o
                    break
            if found is not None:
                break
        if found is None:
            raise RewriteError(f"tensor '{t}' is not in the model")
        outs.append(found)
    m.add_outputs(outs)
