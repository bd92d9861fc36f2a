"""The ``rewrite optimize`` report: typed and JSON round-trippable. ``rewriter.report`` renders it (terminal,
Markdown, HTML) with the same renderer as a rewrite report (``rewriter.report.optimize_view``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..jsonable import jsonable


@dataclass
class SiteRow:
    """One site of the chosen model: what it took, what that saves, what it costs in fidelity."""

    site: str
    pass_name: str
    op: str
    choice: str
    saved_us: dict[str, float]  # predicted µs saved per target when taken alone (negative = slower)
    error: dict[str, float]  # budget used per budget key when taken alone (1.0 = the whole budget)
    budget_used: float  # the largest of ``error``
    engine: dict[str, Any] = field(default_factory=dict)  # the engine's default choice, reason, latency_us
    selected: bool = True  # False: a candidate the search did not take (kept for --verbose / HTML)
    reason: str = ""  # why not taken, or why it was dropped


@dataclass
class ParetoPoint:
    """A non-dominated (predicted latency on the objective, fidelity) point the search evaluated."""

    latency_ms: float
    metrics: dict[str, dict[str, float]]
    choices: dict[str, Any]
    budget_used: float = 0.0
    latency_by_target_ms: dict[str, float] = field(default_factory=dict)


@dataclass
class OptimizeReport:
    """Everything ``optimize`` decided and measured."""

    input: str
    format: str
    targets: list[str]
    objective: str
    budget: dict[str, float]
    passes: list[str]
    sites: list[SiteRow]
    pareto: list[ParetoPoint]
    fidelity: dict[str, dict[str, Any]]  # {"validation": {...}, "test": {...}}: metrics, passed, split
    latency: dict[str, dict[str, Any]]  # {target: rewriter.cost.compare(...)}: before_ms, after_ms, ...
    int8: dict[str, Any] | None = None  # chosen setting, ops kept in float, settings tried
    inputs: dict[str, list[str]] = field(default_factory=dict)  # split → image names
    measured: dict[str, Any] | None = None  # interleaved A/B CPU timing (--measure)
    search: dict[str, Any] = field(default_factory=dict)  # evaluations, seconds, executor, log
    output: str | None = None
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0
    objective_kind: str = "latency"  # latency | fit-frame
    frame: dict[str, Any] | None = None  # fit-frame / alongside: frame_ms, others_ms, total_ms, fits, headroom_ms
    # depth before | after | |error| of the worst and a typical test image (rewriter.pictures dicts): HTML only,
    # not in the JSON
    pictures: list[dict[str, Any]] = field(default_factory=list, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("pictures")
        return jsonable(d)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OptimizeReport:
        kw = {f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "pictures"}
        kw["sites"] = [SiteRow(**s) for s in d.get("sites", [])]
        kw["pareto"] = [ParetoPoint(**p) for p in d.get("pareto", [])]
        return cls(**kw)

    def speedup(self, target: str | None = None) -> float | None:
        """Predicted before/after latency ratio on ``target`` (default: the objective)."""
        lat = self.latency.get(target or self.objective) or {}
        b, a = lat.get("before_ms"), lat.get("after_ms")
        return round(b / a, 4) if b and a else None

