"""Terminal progress for `rewrite`: a rich bar over the run's steps, on a TTY only, and NNCF's logging routed
into it (not printed beside it). Quiet under ``-q``; without a TTY, ``-v`` prints the step messages as lines.

The manager reports steps through its ``progress(message)`` callback; :class:`RunProgress` is that callback.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

# messages that start a step (the bar advances); any other message is an outcome, printed above the bar
_STEP_MARKS = ("matching and rewriting", "verifying", "cumulative gate", "measuring", "re-running")


class _ToProgress(logging.Handler):
    """Logging handler that prints records through the progress console (above the bar)."""

    def __init__(self, say: Any) -> None:
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.say(f"nncf: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - logging must never break the run
            self.handleError(record)


class RunProgress:
    """``progress(message)`` callback: advances a rich bar on step messages, prints outcomes above it.

    ``mode``: "bar" (a TTY), "lines" (plain lines on stderr, e.g. -v without a TTY) or "quiet"."""

    def __init__(self, total_steps: int, mode: str = "bar", stream: TextIO | None = None) -> None:
        self.mode, self.total, self.stream = mode, max(1, total_steps), stream or sys.stderr
        self._progress = self._task = None

    def __enter__(self) -> RunProgress:
        if self.mode == "bar":
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(),
                                      console=Console(file=self.stream), transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("starting", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)
            self._progress = None

    def __call__(self, message: str) -> None:
        if self.mode == "quiet":
            return
        if self._progress is None:
            print(message, file=self.stream, flush=True)
            return
        if any(m in message for m in _STEP_MARKS):
            done = self._progress.tasks[0].completed
            if done >= self.total:  # re-runs after a rollback: the bar grows instead of overflowing
                self.total += 1
                self._progress.update(self._task, total=self.total)
            self._progress.update(self._task, description=message.rstrip(" ."), advance=1)
        else:
            self._progress.console.print(message, markup=False, highlight=False)


def steps_for(n_passes: int, verify: bool, measure: bool) -> int:
    """Steps a rewrite reports: per pass rewriting (+ verifying), the cumulative gate, a measurement."""
    return n_passes * (2 if verify else 1) + (1 if verify else 0) + (1 if measure else 0)


@contextmanager
def nncf_into(say: Any, quiet: bool) -> Iterator[None]:
    """Route NNCF's logger into ``say`` (our progress/terminal) for the duration; under ``quiet`` only its
    errors are kept. Restores NNCF's own handlers afterwards. A no-op when NNCF is not installed."""
    try:
        from nncf.common.logging.logger import nncf_logger
    except ImportError:
        yield
        return
    handlers, level = list(nncf_logger.handlers), nncf_logger.level
    for h in handlers:
        nncf_logger.removeHandler(h)
    ours = _ToProgress((lambda m: print(m, file=sys.stderr, flush=True)) if quiet else say)
    nncf_logger.addHandler(ours)
    nncf_logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    try:
        yield
    finally:
        nncf_logger.removeHandler(ours)
        for h in handlers:
            nncf_logger.addHandler(h)
        nncf_logger.setLevel(level)
