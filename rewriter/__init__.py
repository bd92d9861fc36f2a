"""MiDaS NPU graph rewriter: apply passes to ONNX / OpenVINO IR models, verify, predict and measure latency."""

from .errors import GateFailed, InvalidGraph, RewriteError
from .model import ModelHandle

__all__ = ["GateFailed", "InvalidGraph", "ModelHandle", "RewriteError", "cost_report", "diff_models", "load",
           "optimize", "rewrite", "verify_models"]
__version__ = "0.1.0"


def load(src) -> ModelHandle:
    """Load a model from a path, an ``onnx.ModelProto`` or an ``openvino.Model``."""
    return ModelHandle.load(src)


def rewrite(model, passes, **kwargs):
    """Apply passes in order; returns ``(new ModelHandle, RewriteReport)``. See ``rewriter.manager.rewrite``."""
    from .manager import rewrite as _rewrite

    return _rewrite(model, passes, **kwargs)


def verify_models(before, after, **kwargs):
    """Compare two models on the same inputs; see ``rewriter.verify.verify_models``."""
    from .verify import verify_models

    return verify_models(before, after, **kwargs)


def diff_models(a, b, **kwargs):
    """Structural diff of two models (any mix of ONNX and IR); see ``rewriter.diff.diff``."""
    from .diff import diff as _diff

    return _diff(a, b, **kwargs)


def cost_report(model, targets=("kmb", "mtl", "cpu"), **kwargs):
    """Predicted fps, ms per engine and per-layer rows per target; see ``rewriter.cost.command.cost_report``."""
    from .cost.command import cost_report as _cost_report

    return _cost_report(model, targets, **kwargs)


def optimize(model, **kwargs):
    """Fastest model within a fidelity budget, chosen site by site; returns ``(ModelHandle, OptimizeReport)``.

    See ``rewriter.optimizer.optimize`` (the subpackage is ``optimizer``, so this name stays a function).
    """
    from .optimizer import optimize as _optimize

    return _optimize(model, **kwargs)
