"""Typed rewrite results: :class:`RewriteReport` of :class:`PassEntry` s, each with its :class:`SiteDecision` s and
its :class:`Gate`; the manager builds them, the renderers (``rewriter.report``) read them.

``to_json()`` gives the JSON that users and ``conformance.py`` read (its keys are the contract: a key is
present exactly when it was before the types existed); ``from_json()`` reads it back. No model handle is
kept. For callers written against the former dicts, every type also answers ``r["key"]``, ``r.get(key)``
and ``key in r`` with the names of its JSON keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from .jsonable import jsonable


class _Keyed:
    """Read (and set) the dataclass by its JSON key names: ``r["status"]`` is ``r.status``."""

    def _keys(self) -> list[str]:
        return list(self.to_json())  # type: ignore[attr-defined]

    def __contains__(self, key: object) -> bool:
        return key in self._keys()

    def __getitem__(self, key: str) -> Any:
        if key not in self._keys():
            raise KeyError(key)
        return self._get(key)

    def _get(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value under JSON key ``key`` (``default`` when the key is absent)."""
        return self._get(key) if key in self else default

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in {f.name for f in fields(self)}:  # type: ignore[arg-type]
            raise KeyError(f"{type(self).__name__} has no field {key!r}")
        setattr(self, key, value)


@dataclass
class SiteDecision(_Keyed):
    """One candidate site of a pass: what the pass decided there and why (``passbase.Decision``'s JSON)."""

    node: str
    op: str
    decision: str
    details: dict[str, Any] = field(default_factory=dict)
    will_change: bool = False
    site: str = ""
    choice: str = ""
    choices: list[str] = field(default_factory=list)
    reason: str = ""

    @classmethod
    def from_decision(cls, d: Any) -> SiteDecision:
        """From a ``rewriter.passbase.Decision``."""
        return cls.from_json(d.to_json())

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "decision": self.decision, "details": jsonable(self.details),
                "will_change": self.will_change, "site": self.site, "choice": self.choice,
                "choices": list(self.choices), "reason": self.reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SiteDecision:
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


_GATE_FIELDS = ("passed", "gate", "split", "message", "skipped", "budget", "needed", "metrics", "inputs", "images",
                "notes", "passes", "dropped", "pictures")


@dataclass
class Gate(_Keyed):
    """A numerical check of a model against a reference (``verify.check_pass``'s result): a pass's gate on the
    validation split, or the cumulative one (final vs original) on the test split. ``Gate()`` is "not run".

    Absent keys are None; anything else the check reported (runtime, seconds, tol, units, …) is in ``other``.
    """

    passed: bool | None = None
    gate: str | None = None  # "budget", "tolerance", "none"
    split: str | None = None  # "validation" or "test"
    message: str | None = None
    skipped: str | None = None  # why the check did not run
    budget: dict[str, float] | None = None
    needed: dict[str, Any] | None = None  # the budget / tolerance that would have passed
    metrics: dict[str, Any] | None = None  # {"mean", "worst", "worst_image", "per_image"} or flat
    inputs: int | str | None = None  # how many inputs, or what they were ("4 random (seeds …)")
    images: list[str] | None = None
    notes: list[str] | None = None
    passes: list[str] | None = None  # cumulative: the passes in the final model
    dropped: list[dict[str, Any]] | None = None  # cumulative: passes dropped to meet the budget
    pictures: Any = None  # depth pictures (rewriter.pictures dicts), HTML only
    other: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in _GATE_FIELDS if getattr(self, k) is not None}
        return jsonable({**out, **self.other})

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> Gate:
        d = dict(d or {})
        return cls(**{k: d.pop(k) for k in _GATE_FIELDS if d.get(k) is not None}, other=d)

    def _get(self, key: str) -> Any:
        return getattr(self, key) if key in _GATE_FIELDS else self.other[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key in _GATE_FIELDS:
            setattr(self, key, value)
        else:
            self.other[key] = value

    def __bool__(self) -> bool:  # like the former dict: an unrun gate is falsy
        return bool(self.to_json())


_ENTRY_OPTIONAL = ("verify_seconds", "error", "traceback", "sites_changed_before_rollback")


@dataclass
class PassEntry(_Keyed):
    """One pass of a rewrite: status (applied, kept_failed, rolled_back, rolled_back_cumulative, failed,
    no_change), its sites, its gate, predicted latency per target before → after it, and timings."""

    name: str
    exact: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    sites_changed: int = 0
    sites: list[SiteDecision] = field(default_factory=list)
    status: str = "no_change"
    fidelity: Gate = field(default_factory=Gate)
    first_divergence: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # pass-specific report data
    seconds: float | None = None
    latency: dict[str, dict[str, Any]] | None = None  # {target: {"before_ms", "after_ms"}}
    verify_seconds: float | None = None
    error: str | None = None  # one sentence; the traceback apart
    traceback: str | None = None
    sites_changed_before_rollback: int | None = None

    @property
    def kept(self) -> bool:
        """Whether the pass's change is in the final model."""
        return self.status in ("applied", "kept_failed")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "exact": self.exact, "options": jsonable(self.options),
                               "sites_changed": self.sites_changed, "sites": [s.to_json() for s in self.sites],
                               "status": self.status, "fidelity": self.fidelity.to_json(),
                               "first_divergence": jsonable(self.first_divergence), "notes": list(self.notes),
                               "extra": jsonable(self.extra)}
        if self.seconds is not None:
            out["seconds"] = self.seconds
        for k in _ENTRY_OPTIONAL[:1]:
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        if self.latency is not None:
            out["latency"] = jsonable(self.latency)
        for k in _ENTRY_OPTIONAL[1:]:
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        return out

    def _keys(self) -> list[str]:  # cheaper than to_json(): no conversion of the sites
        fixed = ["name", "exact", "options", "sites_changed", "sites", "status", "fidelity", "first_divergence",
                 "notes", "extra"]
        return fixed + [k for k in ("seconds", "latency", *_ENTRY_OPTIONAL) if getattr(self, k) is not None]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PassEntry:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["sites"] = [SiteDecision.from_json(s) for s in d.get("sites") or []]
        kw["fidelity"] = Gate.from_json(d.get("fidelity"))
        return cls(**kw)


@dataclass
class RewriteReport(_Keyed):
    """Everything a ``rewrite`` did: the passes in order, the cumulative gate (final vs original on the test
    split), predicted latency per target (``rewriter.cost.compare``), op counts and a CPU measurement.

    ``cumulative``/``latency``/``op_counts``/``exit_code`` are None until the run gets that far (a run stopped
    by ``--on-fail stop`` reports what it has); ``pictures`` (depth before | after | |error|) is for the HTML
    only and not in the JSON.
    """

    input: str
    output: str | None = None
    format: str = "onnx"
    output_format: str = "onnx"
    passes: list[PassEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)  # split → image names, overlap, source
    default_gates: dict[str, str] = field(default_factory=dict)
    cumulative: Gate | None = None
    latency: dict[str, dict[str, Any]] | None = None
    op_counts: dict[str, list[int]] | None = None
    measured: dict[str, Any] | None = None
    exit_code: int | None = None
    pictures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"input": self.input, "output": self.output, "format": self.format,
                               "output_format": self.output_format, "passes": [p.to_json() for p in self.passes],
                               "notes": list(self.notes), "targets": list(self.targets),
                               "inputs": jsonable(self.inputs), "default_gates": dict(self.default_gates)}
        if self.cumulative is not None:
            out["cumulative"] = self.cumulative.to_json()
        if self.latency is not None:  # measured is reported (None or figures) once the costs are
            out["latency"] = jsonable(self.latency)
        if self.op_counts is not None:
            out["op_counts"] = jsonable(self.op_counts)
        if self.latency is not None:
            out["measured"] = jsonable(self.measured)
        if self.exit_code is not None:
            out["exit_code"] = self.exit_code
        return out

    def _keys(self) -> list[str]:
        fixed = ["input", "output", "format", "output_format", "passes", "notes", "targets", "inputs", "default_gates"]
        later = [k for k in ("cumulative", "latency", "op_counts", "exit_code") if getattr(self, k) is not None]
        return fixed + later + (["measured"] if self.latency is not None else [])

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RewriteReport:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        kw["passes"] = [PassEntry.from_json(p) for p in d.get("passes") or []]
        if d.get("cumulative") is not None:
            kw["cumulative"] = Gate.from_json(d["cumulative"])
        return cls(**kw)

    def __contains__(self, key: object) -> bool:
        return key == "pictures" and bool(self.pictures) or super().__contains__(key)
