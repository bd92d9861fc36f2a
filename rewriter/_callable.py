"""Let ``rewriter.verify(a, b)`` / ``rewriter.diff(a, b)`` stay callable once their submodules are imported.

Importing ``rewriter.verify`` sets the package attribute ``verify`` to the module, replacing the library
function of the same name; giving the module a ``__call__`` keeps both spellings working.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from typing import Any


def make_module_callable(module_name: str, func: Callable[..., Any]) -> None:
    """Make ``sys.modules[module_name](...)`` call ``func(...)``."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

    sys.modules[module_name].__class__ = _CallableModule
