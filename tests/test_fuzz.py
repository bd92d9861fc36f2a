"""Fuzz regression: every graph the fuzzer saved (bench/fuzz_failures) replays, and a fast seeded subset of the
generator runs through every pass (the bench runs hundreds: ``python -m bench.fuzz --count 500``).

A saved case caused by a pass bug is listed in ``KNOWN`` and expected to fail (strict: a fix shows as XPASS);
passes/ belongs to another helper, so the bug is reported, not patched here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import onnx
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is a repo folder, not an installed package
    sys.path.insert(0, str(ROOT))

from bench import fuzz  # noqa: E402

CI_SEED = 0  # the bench's stream: the first CI_COUNT graphs of `python -m bench.fuzz --seed 0`
CI_COUNT = 50
CI_PASSES = ("asym_interp", "interp_deconv", "dwpw")  # exact/cheap ones on every graph
CI_SLOW_EVERY = 50  # dwpw with refit and int8 (NNCF: ~10 s to import) on graph 0 only
# "<case>-<pass>" (or "<case>" for the CI subset) → the pass bug behind it
KNOWN: dict[str, str] = {}


def _saved() -> list:
    cases = []
    for meta_path in sorted(fuzz.FAILURES.glob("*.json")):
        key = meta_path.stem
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        cases.append(pytest.param(meta_path, marks=marks, id=key))
    return cases


@pytest.mark.parametrize("meta_path", _saved())
def test_saved_fuzz_case_replays_clean(meta_path: Path):
    meta = json.loads(meta_path.read_text())
    model = onnx.load(str(meta_path.with_suffix(".onnx")))
    findings = fuzz.check_pass(fuzz.handle_of(model, meta["format"]), fuzz.PASSES[meta["pass"]], meta["seed"])
    assert findings == [], findings


def _ci_cases() -> list:
    out = []
    for i in range(CI_COUNT):
        key = f"s{CI_SEED}-{i}"
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN[key])] if key in KNOWN else []
        out.append(pytest.param(i, marks=marks, id=key))
    return out


@pytest.mark.parametrize("index", _ci_cases())
def test_fuzz_subset(index: int):
    case = fuzz.generate(CI_SEED, index)
    problem = fuzz.input_problem(case)
    if problem is not None:
        pytest.skip(f"generated graph unusable as input: {problem}")
    handle = fuzz.handle_of(case.model, case.fmt)
    keys = list(CI_PASSES) + (list(fuzz.SLOW) if index % CI_SLOW_EVERY == 0 else [])
    refs: dict = {}
    findings = {k: f for k in keys if (f := fuzz.check_pass(handle, fuzz.PASSES[k], CI_SEED, refs))}
    assert findings == {}, f"{case.blocks}: {findings}"


def test_generator_is_deterministic_and_valid():
    a, b = fuzz.generate(7, 3), fuzz.generate(7, 3)
    assert a.model.SerializeToString() == b.model.SerializeToString() and a.fmt == b.fmt
    ops = set()
    for i in range(60):
        c = fuzz.generate(7, i)
        onnx.checker.check_model(c.model, full_check=True)
        assert 11 <= c.opset <= 20
        ops |= {n.op_type for n in c.model.graph.node}
    assert {"Conv", "Resize", "Add", "Concat", "Pad", "Shape"} <= ops
