"""Exceptions with messages a user can act on. The CLI maps them to exit codes."""

from __future__ import annotations


class RewriteError(Exception):
    """Bad usage or bad input: the message names the file/node/option. CLI exit code 2."""

    exit_code = 2


class InvalidGraph(RewriteError):
    """A model (often one a pass just produced) fails the format's checker, type inference or compilation."""


class GateFailed(Exception):
    """A verification gate failed under ``--on-fail stop``. CLI exit code 1; nothing is written."""

    exit_code = 1

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report
