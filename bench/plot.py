"""Fidelity-vs-latency scatter per model (Pareto view): which pass sets are worth their error."""

from __future__ import annotations

from pathlib import Path

from .tables import measured_speedup, pareto_front, speedup

ERROR_FLOOR = 1e-7  # exact passes give relL2 ~1e-7; plotted at the floor so the log axis can show them


def _panels(cells: list[dict]) -> list[tuple[str, list[float | None]]]:
    def pred(t):
        return [speedup(((c.get("predicted") or {}).get(t) or {}).get("before_ms"),
                        ((c.get("predicted") or {}).get(t) or {}).get("after_ms")) for c in cells]

    return [("kmb predicted", pred("kmb")), ("mtl predicted", pred("mtl")),
            ("cpu measured (A/B)", [measured_speedup(c.get("measured")) for c in cells])]


def scatter(model_key: str, cells: list[dict], path: Path, title: str = "") -> Path | None:
    """Write a 3-panel PNG (kmb, mtl predicted; cpu measured): speedup vs mean relL2, Pareto front joined.

    Returns the path, or None when no cell has both a speedup and a fidelity figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err = [((c.get("fidelity") or {}).get("mean") or {}).get("rel_l2") for c in cells]
    err = [None if e is None else max(e, ERROR_FLOOR) for e in err]
    labels = [c.get("pass_set", "?") for c in cells]
    if not any(e is not None for e in err):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8), sharey=True)
    for ax, (name, xs) in zip(axes, _panels(cells)):
        pts = list(zip(xs, err))
        for k, ((x, y), lab) in enumerate(zip(pts, labels)):
            if x is None or y is None:
                continue
            ax.scatter([x], [y], s=30, color=f"C{k % 10}")  # same colour per pass set in every panel
            # staggered labels: pass sets with near-identical figures (asym vs asym+deconv) stay readable
            ax.annotate(lab, (x, y), fontsize=7, xytext=(4, 4 - 9 * (k % 3)), textcoords="offset points")
        front = pareto_front(pts)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "k--", lw=0.8, label="Pareto front")
            ax.legend(loc="best", fontsize=7)
        ax.axvline(1.0, color="grey", lw=0.6)
        ax.set_xlabel(f"speedup ({name}), before/after")
        ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("relL2 vs original, mean over images (lower is better)")
    fig.suptitle(title or f"{model_key}: fidelity vs latency (right and down is better)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
