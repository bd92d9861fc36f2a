"""A synthetic search space with known per-site errors and savings, for the search and executor tests.

Deterministic and graph-free: each site's choice adds a fixed relative-L2 error (combined linearly, in
quadrature, or amplified per extra site, to exercise the refill and the backoff) and saves fixed µs per
target; INT8 adds a fixed error per quantized op and a saving per op. It is picklable and importable by
worker processes and Ray actors, so it runs through every executor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .search import Candidate, Evaluation, Point


@dataclass(frozen=True)
class SiteSpec:
    """One choice at one site: its error (relative L2, linear sum) and µs saved per target."""

    site: str
    choice: str
    error: float
    saved_us: tuple[tuple[str, float], ...]
    pass_name: str = "dwpw"
    prior: bool = False  # expose saved_us as the a-priori prediction


@dataclass
class SyntheticSpace:
    """Additive space: latency = base - Σ savings, rel_l2 = Σ errors (+ INT8 terms)."""

    choices: list[SiteSpec]
    targets: tuple[str, ...] = ("mtl", "cpu")
    base_ms: dict[str, float] = field(default_factory=lambda: {"kmb": 30.0, "mtl": 10.0, "cpu": 50.0})
    quant_ops: dict[str, float] = field(default_factory=dict)  # int8 site → error when quantized
    quant_saved_us: dict[str, float] = field(default_factory=dict)  # per quantized op, per target
    quant_setting_error: dict[str, float] = field(default_factory=dict)  # "option=value" → error factor
    combine: str = "linear"  # how site errors combine: "linear" (as estimated), "quadrature" (better than
    # the estimate) or "interacting" (worse: each extra site amplifies the sum by 25%)
    calls: int = 0

    def candidates(self) -> list[Candidate]:
        return [Candidate(c.site, ((c.pass_name, c.choice),), "conv", c.saved_us if c.prior else ())
                for c in self.choices]

    def quant_options(self) -> dict[str, list[Any]]:
        if not self.quant_ops:
            return {}
        return {"overflow_fix": ["disable", "enable"], "fast_bias_correction": [True, False]}

    def quant_sites(self) -> list[str]:
        return list(self.quant_ops)

    def _spec_of(self, key: str) -> SiteSpec:
        return next(c for c in self.choices if f"{c.site}:{c.choice}" == key)

    def evaluate(self, point: Point, split: str = "validation") -> Evaluation:
        self.calls += 1
        lat = {t: self.base_ms.get(t, 10.0) for t in self.targets}
        errs = []
        for key in point.choices:
            c = self._spec_of(key)
            errs.append(c.error)
            for t, us in c.saved_us:
                if t in lat:
                    lat[t] -= us / 1000.0
        if self.combine == "quadrature":
            err = math.sqrt(sum(e * e for e in errs))
        elif self.combine == "interacting":
            err = sum(errs) * (1.0 + 0.25 * max(0, len(errs) - 1))
        else:
            err = sum(errs)
        if point.quant is not None:
            factor = 1.0
            for k, v in point.quant:
                factor *= self.quant_setting_error.get(f"{k}={v}", 1.0)
            for op, e in self.quant_ops.items():
                if op in point.float_ops:
                    continue
                err += e * factor
                for t in lat:
                    lat[t] -= self.quant_saved_us.get(t, 0.0) / 1000.0
        if split == "test":
            err *= 1.1  # held-out images are a little worse, as they usually are
        psnr = 200.0 if err == 0 else -20.0 * math.log10(err)
        m = {"rel_l2": err, "absrel": err / 2, "delta1": max(0.0, 1.0 - err / 4), "psnr": psnr}
        return Evaluation(metrics={"mean": dict(m), "worst": {k: v for k, v in m.items()}}, latency_ms=lat)

    def spec(self) -> SyntheticSpace:
        return self

    def build(self) -> SyntheticSpace:
        return self
