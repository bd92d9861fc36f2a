"""Structural before/after diff of two models (any mix of ONNX and OpenVINO IR).

- ``graph``: each model as a normalised graph over its :class:`~rewriter.graph.GraphView` (weights attached
  to the ops that read them, ONNX vocabulary, IR fused ops folded back);
- ``match``: nodes matched by connectivity (not names), removed regions paired with what replaced them;
- ``assemble``: the report (``diff``): op counts, changes, parameters, MACs, tags, fidelity, latency;
- ``values``: content digests of constants (robust to FP16 storage) and their JSON display;
- ``command``: the ``rewrite diff`` handler (``run_diff``).
"""

from __future__ import annotations

from .assemble import diff
from .command import run_diff
from .graph import Const, Graph, Node, build_graph
from .match import match, replacements

__all__ = ["Const", "Graph", "Node", "build_graph", "diff", "match", "replacements", "run_diff"]
