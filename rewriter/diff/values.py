"""Values in a diff: content digests of constants (robust to FP16 storage) and their JSON display."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import onnx

from ..jsonable import jsonable


def digest(a: np.ndarray) -> str:
    """Content hash robust to FP16 weight compression: floats are hashed after rounding to float16."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        with np.errstate(over="ignore"):
            a = a.astype(np.float16)
    elif a.dtype.kind in "iub":
        a = a.astype(np.int64)
    h = hashlib.sha1(str(a.shape).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def small_value(value: np.ndarray | None) -> Any:
    """A small constant as a JSON-able list (floats rounded for display)."""
    if value is None:
        return None
    v = np.asarray(value)
    if v.dtype.kind == "f":
        return [float(f"{x:.6g}") for x in v.ravel()]
    if v.dtype.kind in "iub":
        return [int(x) for x in v.ravel()]
    return [str(x) for x in v.ravel()]


def _onnx_special(x: Any) -> Any:
    if isinstance(x, onnx.TensorProto):
        return small_value(onnx.numpy_helper.to_array(x))
    if isinstance(x, onnx.GraphProto):
        return f"<graph {x.name}>"
    return None


def report_value(x: Any) -> Any:
    """``x`` as JSON data; ONNX tensor attributes become value lists, subgraphs their name."""
    return jsonable(x, _onnx_special)
