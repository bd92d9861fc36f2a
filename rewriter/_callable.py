"""Retired: modules are no longer made callable.

``rewriter.verify`` and ``rewriter.diff`` are modules only; the library functions are
``rewriter.verify_models`` and ``rewriter.diff_models`` (no name is both a module and a function).
``make_module_callable`` stays as a no-op until ``verify.py`` and ``diff.py`` stop calling it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, func: Callable[..., Any]) -> None:
    """No-op (kept for callers not yet updated): a module is not a function."""
