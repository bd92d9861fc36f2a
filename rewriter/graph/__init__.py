"""One graph layer under both formats: a read-only :class:`GraphView` and an :class:`Editor` per format.

``view(model)`` builds the view once per model state (cached on the handle until an editor changes the
model); ``editor(model)`` opens the format's editor on the current view. Backends: ``onnx_backend``,
``openvino_backend``. Passes use only this package's format-free API.
"""

from __future__ import annotations

from typing import Any

from .editor import Builder, Editor
from .view import CONV_KINDS, KINDS, GraphView, Node, ResizeInfo

__all__ = ["CONV_KINDS", "KINDS", "Builder", "Editor", "GraphView", "Node", "ResizeInfo", "editor",
           "parse_input_shape", "view"]


def parse_input_shape(spec: str | dict | list | None, model: Any) -> dict[str, list[int]] | None:
    """``"1,3,288,512"`` (single-input models) or ``"name:1,3,288,512;other:..."`` → {input name: shape}."""
    from ..errors import RewriteError

    if spec is None or isinstance(spec, dict):
        return spec
    names = [n for n, _, _ in model.inputs()]
    items = [spec] if isinstance(spec, list) else [s for s in spec.split(";") if s.strip()]
    out: dict[str, list[int]] = {}
    for item in items:
        name, _, dims = item.rpartition(":") if isinstance(item, str) else ("", "", item)
        if not name:
            if len(names) != 1:
                raise RewriteError(f"--input-shape {spec!r}: the model has inputs {', '.join(names)}; "
                                   "give NAME:1,3,288,512")
            name = names[0]
        if name not in names:
            raise RewriteError(f"--input-shape: the model has no input '{name}' (inputs: {', '.join(names)})")
        try:
            shape = [int(d) for d in (dims.split(",") if isinstance(dims, str) else dims)]
        except ValueError as e:
            raise RewriteError(f"--input-shape {spec!r}: expected integers like 1,3,288,512") from e
        if any(d < 1 for d in shape):
            raise RewriteError(f"--input-shape {spec!r}: dimensions must be >= 1")
        out[name] = shape
    return out


def view(model: Any, input_shape: dict[str, list[int]] | None = None) -> GraphView:
    """The :class:`GraphView` of a :class:`~rewriter.model.ModelHandle` in its current state (cached)."""
    if model.format == "onnx" and getattr(model, "shared", False):  # a lazy clone reads its source's view
        return view(model._cow, input_shape)
    key = (model.version, id(model.proto if model.format == "onnx" else model.ov),
           repr(sorted((input_shape or {}).items())))
    cached = getattr(model, "_view", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    if model.format == "onnx":
        from .onnx_backend import build_view
    else:
        from .openvino_backend import build_view
    v = build_view(model, input_shape)
    model._view = (key, v)
    return v


def editor(model: Any, input_shape: dict[str, list[int]] | None = None) -> Editor:
    """An editor for ``model``, working in the node ids of its current view."""
    if model.format == "onnx":
        model.onnx  # noqa: B018 (a lazy clone takes its own copy before it is edited)
        model.own_dependents()  # lazy clones of this model keep the state before the edit
    v = view(model, input_shape)
    if model.format == "onnx":
        from .onnx_backend import OnnxEditor

        return OnnxEditor(model, v)
    from .openvino_backend import OvEditor

    return OvEditor(model, v)
