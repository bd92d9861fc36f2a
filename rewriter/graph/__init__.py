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
           "SHAPE_EXAMPLE", "parse_input_shape", "view"]


SHAPE_EXAMPLE = "1,3,288,512 (or NAME:1,3,288,512;OTHER:...)"


def parse_input_shape(spec: str | dict | list | None, model: Any) -> dict[str, list[int]] | None:
    """The one ``--input-shape`` parser (``rewrite``, ``rewrite cost``, ``rewrite optimize`` and the library).

    ``"1,3,288,512"`` (or ``1x3x288x512``; single-input models), ``"name:1,3,288,512;other:..."``, a list of
    dims, or ``{input name: dims}`` → ``{input name: [dims]}``, checked against ``model``'s inputs (names,
    rank, dims >= 1). Every fault is a ``RewriteError`` starting ``--input-shape 'SPEC':``.
    """
    from ..errors import RewriteError

    if spec is None:
        return None
    text = spec if isinstance(spec, str) else repr(spec)

    def bad(why: str) -> RewriteError:
        return RewriteError(f"--input-shape {text!r}: {why}")

    inputs = {n: shape for n, shape, _ in model.inputs()}
    names = list(inputs)
    if isinstance(spec, dict):
        items = list(spec.items())
    elif isinstance(spec, (list, tuple)):
        items = [("", spec)]
    else:
        items = [(name.strip(), dims) for name, _, dims in
                 (s.strip().rpartition(":") for s in spec.split(";") if s.strip())]
        if not items:
            raise bad(f"expected dims like {SHAPE_EXAMPLE}")
    out: dict[str, list[int]] = {}
    for name, dims in items:
        if not name:
            if len(names) != 1:
                raise bad(f"the model has inputs {', '.join(names)}; give NAME:1,3,288,512")
            name = names[0]
        if name not in inputs:
            raise bad(f"the model has no input '{name}' (inputs: {', '.join(names)})")
        parts = dims.replace("x", ",").split(",") if isinstance(dims, str) else list(dims)
        try:
            shape = [int(str(d).strip()) for d in parts]
        except ValueError:
            raise bad(f"expected integers like {SHAPE_EXAMPLE}") from None
        if not shape or any(d < 1 for d in shape):
            raise bad("dimensions must be integers >= 1")
        if inputs[name] and len(shape) != len(inputs[name]):  # an input without a declared rank takes any
            raise bad(f"input '{name}' has {len(inputs[name])} dims, got {len(shape)}")
        out[name] = shape
    return out


def view(model: Any, input_shape: dict[str, list[int]] | None = None) -> GraphView:
    """The :class:`GraphView` of a :class:`~rewriter.model.ModelHandle` in its current state (cached)."""
    if model.format == "onnx" and getattr(model, "shared", False):  # a lazy clone reads its source's view
        return view(model.shares, input_shape)
    key = (model.version, id(model.graph_proto if model.format == "onnx" else model.ov),
           repr(sorted((input_shape or {}).items())))
    cached = model.view_cache
    if cached is not None and cached[0] == key:
        return cached[1]
    if model.format == "onnx":
        from .onnx_backend import build_view
    else:
        from .openvino_backend import build_view
    v = build_view(model, input_shape)
    model.view_cache = (key, v)
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
