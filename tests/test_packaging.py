"""Packaging: every engine subpackage is installed, and passes/ installs as rewriter.passes only."""

from __future__ import annotations

import tomllib
from conftest import ROOT


def test_every_subpackage_is_listed():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "rewriter").rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages"
    assert cfg["package-dir"] == {"rewriter.passes": "passes"}
    assert "passes" not in listed  # no generic top-level module in site-packages


def test_console_script():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert cfg["project"]["scripts"]["rewrite"] == "rewriter.cli:main"
    test_extra = " ".join(cfg["project"]["optional-dependencies"]["test"])
    assert "torch==2.13.0" in test_extra  # a looser spec pulls a multi-GB CUDA build
