"""One conversion of report data (numpy, tuples, paths, bytes, NaN) into what ``json.dumps`` accepts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def jsonable(x: Any, special: Callable[[Any], Any] | None = None) -> Any:
    """Recursively convert ``x``; ``special(x)`` may return a replacement (or None to fall through)."""
    if special is not None:
        r = special(x)
        if r is not None:
            return r
    if isinstance(x, dict):
        return {str(k): jsonable(v, special) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v, special) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, bytes):
        return x.decode(errors="replace")
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "to_json"):
        return jsonable(x.to_json(), special)
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None  # JSON has no NaN/inf
    return x
