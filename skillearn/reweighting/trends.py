"""How learned example weights evolve over a run: one panel per learned quantity (LFM's r and
a, LFM-DR's b), its mean with a ±std band per epoch, and the clean / mislabelled means when the
labels are noisy. Drawn by the driver as `learned_weights.png` from the `WeightTrends` artifact
(`trend_values` of the epoch's metrics) a skill declares each epoch.

A quantity `q` is drawn when a run reports `q_mean` (with `q_std` for the band); its clean and
noisy means are `q_weight_clean_mean` / `q_weight_noisy_mean` (for b, whose metrics predate the
prefix, `weight_clean_mean` / `weight_noisy_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

QUANTITIES = {
    "r": ("coefficients r", None),
    "a": ("mistake weights a", "a_weight_"),
    "b": ("example weights b", "weight_"),
}
TREND_KEYS = tuple(
    key for q, (_, group) in QUANTITIES.items()
    for key in (f"{q}_mean", f"{q}_std",
                *((f"{group}clean_mean", f"{group}noisy_mean") if group else ()))
)

History = Mapping[int, Mapping[str, float]]


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def trend_values(result: Mapping[str, object]) -> dict[str, float]:
    """The metrics of one epoch's result that `draw_weight_trends` uses (finite numbers only)."""
    return {k: float(result[k]) for k in TREND_KEYS if _finite(result.get(k))}  # type: ignore[arg-type]


def has_trends(values: Mapping[str, float]) -> bool:
    """True when an epoch reports at least one learned quantity's mean."""
    return any(f"{q}_mean" in values for q in QUANTITIES)


def draw_weight_trends(history: History, path: str | Path) -> Path:
    """One panel per quantity present in `history` (epoch -> trend values), epochs on x."""
    epochs = sorted(history)
    present = [q for q in QUANTITIES if any(f"{q}_mean" in history[e] for e in epochs)]
    fig = Figure(figsize=(4.5 * max(len(present), 1), 3.5))
    FigureCanvasAgg(fig)
    for panel, q in enumerate(present, 1):
        title, group = QUANTITIES[q]
        ax = fig.add_subplot(1, len(present), panel)
        xs = [e for e in epochs if f"{q}_mean" in history[e]]
        mean = [history[e][f"{q}_mean"] for e in xs]
        std = [history[e].get(f"{q}_std", 0.0) for e in xs]
        ax.plot(xs, mean, marker="o", color="tab:blue", label="mean")
        ax.fill_between(xs, [m - s for m, s in zip(mean, std, strict=True)],
                        [m + s for m, s in zip(mean, std, strict=True)],
                        color="tab:blue", alpha=0.2, label="± std")
        if group:
            for which, color in (("clean", "tab:green"), ("noisy", "tab:red")):
                key = f"{group}{which}_mean"
                points = [(e, history[e][key]) for e in xs if key in history[e]]
                if points:
                    ax.plot(*zip(*points, strict=True), marker=".", color=color,
                            label=f"{which} mean")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
