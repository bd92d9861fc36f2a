"""MiDaS NPU graph rewriter: apply passes to ONNX / OpenVINO IR models, verify, predict and measure latency."""

from .errors import GateFailed, RewriteError
from .model import ModelHandle

__all__ = ["GateFailed", "ModelHandle", "RewriteError", "load", "rewrite", "verify", "diff", "optimize"]
__version__ = "0.1.0"


def load(src) -> ModelHandle:
    """Load a model from a path, an ``onnx.ModelProto`` or an ``openvino.Model``."""
    return ModelHandle.load(src)


def rewrite(model, passes, **kwargs):
    """Apply passes in order; returns ``(new ModelHandle, report dict)``. See ``rewriter.manager.rewrite``."""
    from .manager import rewrite as _rewrite

    return _rewrite(model, passes, **kwargs)


def verify(before, after, **kwargs):
    """Compare two models on the same inputs; see ``rewriter.verify.verify_models``."""
    from .verify import verify_models

    return verify_models(before, after, **kwargs)


def diff(a, b, **kwargs):
    """Structural diff of two models (any mix of ONNX and IR); see ``rewriter.diff.diff``."""
    from .diff import diff as _diff

    return _diff(a, b, **kwargs)


def optimize(model, **kwargs):
    """Fastest model within a fidelity budget, chosen site by site; returns ``(ModelHandle, OptimizeReport)``.

    See ``rewriter.optimizer.optimize`` (the subpackage is ``optimizer``, so this name stays a function).
    """
    from .optimizer import optimize as _optimize

    return _optimize(model, **kwargs)
