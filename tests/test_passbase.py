"""Registry, option parsing and pass ordering rules."""

from __future__ import annotations

import pytest

from rewriter import RewriteError
from rewriter.passbase import REGISTRY, Option, Pass, build_passes, load_passes, parse_opts, register


@register
class _Quant(Pass):
    name = "_test_quant"
    description = "test-only quantizing pass"
    quantizes = True
    options = {"bits": Option(8, int, "bit width", choices=(4, 8))}


@register
class _Plain(Pass):
    name = "_test_plain"
    description = "test-only pass"
    options = {"rank": Option(None, (int, type(None)), "rank"), "flag": Option(True, bool, "a flag"),
               "energy": Option(0.9, float, "energy")}


def test_every_issue_pass_is_registered():
    names = set(load_passes())
    assert {"asym_interp", "interp_deconv", "dwpw", "int8"} <= names
    for cls in REGISTRY.values():
        d = cls().describe()
        assert d["description"] and d["formats"] and isinstance(d["exact"], bool)


def test_parse_opts_and_types():
    opts = parse_opts(["_test_plain.rank=2", "_test_plain.flag=off", "_test_plain.energy=0.5"])
    (p,) = build_passes(["_test_plain"], opts)
    assert p.opts == {"rank": 2, "flag": False, "energy": 0.5}


@pytest.mark.parametrize("raw, message", [
    (["rank=2"], "expected PASS.OPTION=VALUE"),
    (["_test_plain.nope=1"], "has no option 'nope'"),
    (["_test_plain.flag=maybe"], "expected bool"),
    (["_test_plain.energy=abc"], "expected float"),
    (["_test_quant.bits=3"], "must be one of 4, 8"),
    (["nosuch.x=1"], "unknown pass 'nosuch'"),
])
def test_bad_options_are_named(raw, message):
    with pytest.raises(RewriteError, match=message):
        build_passes(["_test_plain", "_test_quant"], parse_opts(raw))


def test_opt_for_pass_not_in_list():
    with pytest.raises(RewriteError, match="not in --passes"):
        build_passes(["_test_plain"], parse_opts(["_test_quant.bits=4"]))


def test_unknown_pass_lists_known_ones():
    with pytest.raises(RewriteError, match="unknown pass 'bogus'.*asym_interp"):
        build_passes(["bogus"])


def test_quantizing_pass_must_be_last():
    with pytest.raises(RewriteError, match="must be last; move _test_plain before it"):
        build_passes(["_test_quant", "_test_plain"])
    assert [p.name for p in build_passes(["_test_plain", "_test_quant"])] == ["_test_plain", "_test_quant"]


def test_int8_must_be_last():
    with pytest.raises(RewriteError, match="int8.*must be last"):
        build_passes(["int8", "asym_interp"])
