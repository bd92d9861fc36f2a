"""Progress: step messages advance the bar, outcomes print above it; NNCF's log goes through ours; quiet is quiet."""

from __future__ import annotations

import io

from nncf.common.logging.logger import nncf_logger

from rewriter.progress import RunProgress, nncf_into, steps_for


def test_lines_mode_prints_steps_and_routes_nncf_warnings():
    buf = io.StringIO()
    before = list(nncf_logger.handlers)
    with RunProgress(3, "lines", buf) as say, nncf_into(say, quiet=False):
        say("[dwpw] matching and rewriting ...")
        nncf_logger.warning("statistics collection: 3 samples")
        nncf_logger.info("an info line NNCF would print to stdout")
    assert buf.getvalue() == "[dwpw] matching and rewriting ...\nnncf: statistics collection: 3 samples\n"
    assert nncf_logger.handlers == before  # NNCF's own handler is back afterwards


def test_quiet_prints_nothing(capsys):
    buf = io.StringIO()
    with RunProgress(3, "quiet", buf) as say, nncf_into(say, quiet=True):
        say("[dwpw] matching and rewriting ...")
        nncf_logger.warning("a warning")
    assert buf.getvalue() == "" and capsys.readouterr().out == ""


def test_bar_counts_steps_and_grows_on_reruns():
    bar = RunProgress(steps_for(2, verify=True, measure=False), "bar", io.StringIO())
    assert bar.total == 5
    with bar:
        for m in ("[a] matching and rewriting ...", "[a] 2 site(s) changed; verifying ...",
                  "[b] matching and rewriting ...", "[b] 1 site(s) changed; verifying ...",
                  "[b] gate FAILED, rolled back: over budget", "cumulative gate: ...", "re-running b ..."):
            bar(m)
        task = bar._progress.tasks[0]
        assert (task.completed, task.total) == (6, 6)  # the outcome line did not advance it; the re-run grew it
