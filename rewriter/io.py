"""Atomic file writes shared by every writer of reports and pictures (JSON, Markdown, HTML, SVG)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import RewriteError


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write ``data`` via a temp file in the same folder and ``os.replace``, so readers never see half a file.

    Raises ``RewriteError`` (one line naming the path) when the folder is missing or the write fails.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise RewriteError(f"{path}: output folder {parent} does not exist")
    tmp = parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise RewriteError(f"{path}: cannot write the report: {e.strerror}") from e
    return path
