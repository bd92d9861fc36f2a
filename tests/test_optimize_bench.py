"""The bench's optimize cells: set names, the plan, and how a cell's choices are summarised and shown."""

from __future__ import annotations

import pytest

from bench.run import OPT_SETS, build_parser, opt_set, optimize_summary
from bench.tables import cell_row, fmt_optimize


def test_opt_set_names_the_search():
    s = opt_set("opt-mtl-0.05")
    assert s.passes == "optimize"
    assert s.opts["optimize"] == {"targets": ["mtl", "kmb", "cpu"], "budget": "rel_l2=0.05"}
    assert "opt-cpu-0.05" in OPT_SETS and "opt-kmb-0.1" in OPT_SETS
    for bad in ("opt-gpu-0.05", "opt-mtl", "opt-mtl-x"):
        with pytest.raises(KeyError, match=bad):
            opt_set(bad)
    assert build_parser().parse_args(["--sets", "opt-cpu-0.05", "--workers", "2"]).workers == 2


def test_optimize_summary_and_row():
    report = {"sites": [{"selected": True, "pass_name": "asym_interp"}, {"selected": True, "pass_name": "dwpw"},
                        {"selected": True, "pass_name": "dwpw"}, {"selected": False, "pass_name": "dwpw"}],
              "int8": {"enabled": True, "float_ops": ["a", "b"], "setting": {"preset": "performance"}},
              "search": {"evaluations": 40, "seconds": 600.0, "log": ["greedy: 3 float choice(s)"]},
              "fidelity": {"validation": {"metrics": {"mean": {"rel_l2": 0.04}}}}}
    o = optimize_summary(report)
    assert o["sites_taken"] == 3 and o["per_pass"] == {"asym_interp": 1, "dwpw": 2}
    assert o["int8"] and o["int8_float_ops"] == 2 and o["evaluations"] == 40
    assert fmt_optimize(o) == "optimize: asym_interp 1, dwpw 2, int8 (2 ops float)"
    cell = {"pass_set": "opt-mtl-0.05", "optimize": o,
            "predicted": {"mtl": {"before_ms": 16.0, "after_ms": 5.0}, "cpu": {"before_ms": 100.0, "after_ms": 40.0}},
            "measured": {"ratio": 0.4}, "fidelity": {"mean": {"rel_l2": 0.045}, "worst": {"rel_l2": 0.07}}}
    row = cell_row(cell, None)
    assert row[0] == "opt-mtl-0.05" and row[1].startswith("optimize: asym_interp 1")
    assert row[6] == "0.045 / 0.07"
    assert fmt_optimize({"per_pass": {}}) == "optimize: nothing taken"
