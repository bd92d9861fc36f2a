"""Terminal progress for `rewrite`: a rich bar over the run's steps, on a TTY only, and NNCF's logging routed
into it (not printed beside it). Quiet under ``-q``; without a TTY, ``-v`` prints the step messages as lines.

The manager reports steps through its ``progress(message)`` callback; :class:`RunProgress` is that callback.
Deeper loops (verification images, NNCF calibration samples, optimize candidate evaluations, measuring runs)
report counts with :func:`count`, which reaches the active :class:`RunProgress` (a second bar) and costs nothing
when there is none (library use, ``-q``, JSON mode, no TTY).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

_ACTIVE: list[RunProgress] = []  # the RunProgress entered last receives count()


def count(phase: str, done: int, total: int) -> None:
    """Counted progress of ``phase``: ``done`` of ``total`` (e.g. images compared, candidates evaluated)."""
    if _ACTIVE:
        _ACTIVE[-1].count(phase, done, total)


# messages that start a step (the bar advances); any other message is an outcome, printed above the bar
_STEP_MARKS = ("matching and rewriting", "verifying", "cumulative gate", "measuring", "re-running", "searching",
               "depth pictures")


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
        self._progress = self._task = self._sub = None
        self.counts: list[tuple[str, int, int]] = []  # every count() received, in order (not when quiet)

    def count(self, phase: str, done: int, total: int) -> None:
        """Show ``done``/``total`` of ``phase`` on the second bar (a TTY), or a line when a phase ends ("lines")."""
        if self.mode == "quiet" or total <= 0:
            return
        self.counts.append((phase, done, total))
        if self._progress is None:
            if done >= total:
                print(f"{phase}: {done}/{total}", file=self.stream, flush=True)
            return
        if self._sub is None:
            self._sub = self._progress.add_task(phase, total=total)
        self._progress.update(self._sub, description=f"  {phase}", total=total, completed=done,
                              visible=done < total)

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
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
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
    original = _route_nncf_bars()
    try:
        yield
    finally:
        _restore_nncf_bars(original)
        nncf_logger.removeHandler(ours)
        for h in handlers:
            nncf_logger.addHandler(h)
        nncf_logger.setLevel(level)


def silence_nncf() -> None:
    """For worker processes: NNCF logs errors only and its bars become :func:`count` calls, which print nothing
    there (no active progress). Otherwise each worker draws its own bars into the parent's terminal or log."""
    try:
        from nncf.common.logging.logger import nncf_logger
    except ImportError:
        return
    nncf_logger.setLevel(logging.ERROR)
    _route_nncf_bars()


class _Track:
    """Stands in for ``nncf.common.logging.track_progress.track``: NNCF's calibration bars become our counts."""

    def __init__(self, sequence: Any = None, description: str = "Working...", total: float | None = None,
                 **_ignored: Any) -> None:
        self.sequence, self.description = sequence, f"nncf: {description}"
        self.total = int(total if total is not None else (len(sequence) if hasattr(sequence, "__len__") else 0))
        self.done = 0

    def __iter__(self) -> Iterator[Any]:
        for item in self.sequence:
            yield item
            self.update(1)

    def __enter__(self) -> _Track:
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def update(self, advance: float = 1, **_ignored: Any) -> None:
        self.done += int(advance)
        count(self.description, self.done, self.total)


def _route_nncf_bars() -> Any:
    """Replace NNCF's own rich bars by :class:`_Track`: in NNCF's progress module (so modules imported later take
    ours) and in every loaded NNCF module that imported them. Returns NNCF's ``track`` (None without NNCF)."""
    try:
        import nncf.common.logging.track_progress as source
    except ImportError:
        return None
    original = source.track
    _swap_track(original, _Track)
    return original


def _swap_track(old: Any, new: Any) -> None:
    for name, module in list(sys.modules.items()):  # also the modules first imported while ours was in place
        if name.startswith("nncf") and getattr(module, "track", None) is old:
            module.track = new


def _restore_nncf_bars(original: Any) -> None:
    if original is not None:  # also the modules first imported while ours was in place
        _swap_track(_Track, original)
