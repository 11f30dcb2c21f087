"""Figures of a reweighting run, drawn on a bare Figure (no pyplot global state, Agg canvas).

The driver reads the per-epoch JSON metrics `weight_curve` and `train_weights` /
`train_is_noisy`, and the `{a,b,r}_{mean,std}` of LFM's learned weights, and calls these to
write the images it logs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

Curve = tuple[Sequence[float], Sequence[float]]


def draw_weight_function(curves: Sequence[Curve], path: str | Path) -> Path:
    """MW-Net's learned loss -> weight mapping, one line per epoch (later epochs darker)."""
    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shades = np.linspace(0.25, 1.0, max(len(curves), 1))
    for epoch, ((losses, weights), shade) in enumerate(zip(curves, shades, strict=False), 1):
        ax.plot(losses, weights, color=(0.1, 0.3, 0.7, float(shade)),
                label=f"epoch {epoch}" if epoch in (1, len(curves)) else None)
    ax.set_xlabel("training loss")
    ax.set_ylabel("example weight")
    ax.set_ylim(0, 1)
    if curves:
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


def draw_weight_histogram(
    weights: Sequence[float], is_noisy: Sequence[bool | int], path: str | Path, bins: int = 40
) -> Path:
    """Overlaid histograms of the weights of clean and of mislabelled training examples."""
    weights_arr = np.asarray(weights, dtype=float)
    noisy = np.asarray(is_noisy, dtype=bool)
    fig = Figure(figsize=(5, 3.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    low, high = (float(weights_arr.min()), float(weights_arr.max())) if weights_arr.size else (0, 1)
    edges = np.linspace(low, high if high > low else low + 1e-6, bins + 1)
    ax.hist(weights_arr[~noisy], bins=edges, alpha=0.6, label=f"clean ({int((~noisy).sum())})")
    ax.hist(weights_arr[noisy], bins=edges, alpha=0.6, label=f"noisy ({int(noisy.sum())})")
    ax.set_xlabel("example weight")
    ax.set_ylabel("examples")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)


LEARNED_WEIGHTS = ("a", "b", "r")  # LFM: mistake weights a, per-example b, coefficients r
# where a skill reports the clean / mislabelled means of a learned weight (b is the skill's
# reported weight, so its means carry no prefix)
GROUP_MEANS = {"a": "a_weight_", "b": "weight_"}


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def learned_weight_stats(result: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """{name: {"mean", "std"[, "clean", "noisy"]}} of the LEARNED_WEIGHTS an epoch's result
    reports (`a_mean`, `a_std`, `a_weight_clean_mean`, …); empty for skills without them."""
    stats = {}
    for name in LEARNED_WEIGHTS:
        mean, std = _number(result.get(f"{name}_mean")), _number(result.get(f"{name}_std"))
        if mean is None or std is None:
            continue
        stats[name] = {"mean": mean, "std": std}
        prefix = GROUP_MEANS.get(name)
        for group in ("clean", "noisy") if prefix else ():
            value = _number(result.get(f"{prefix}{group}_mean"))
            if value is not None and np.isfinite(value):
                stats[name][group] = value
    return stats


def draw_learned_weights(
    history: Mapping[int, Mapping[str, Mapping[str, float]]], path: str | Path
) -> Path:
    """Mean ± std of each learned weight (a, b, r) over the epochs, one panel each, with the
    means over clean and over mislabelled examples where reported."""
    names = [n for n in LEARNED_WEIGHTS if any(n in stats for stats in history.values())]
    fig = Figure(figsize=(4 * max(len(names), 1), 3.2))
    FigureCanvasAgg(fig)
    for column, name in enumerate(names, 1):
        ax = fig.add_subplot(1, len(names), column)
        epochs = [e for e in sorted(history) if name in history[e]]
        mean = np.array([history[e][name]["mean"] for e in epochs])
        std = np.array([history[e][name]["std"] for e in epochs])
        ax.plot(epochs, mean, color="tab:blue", label="mean")
        ax.fill_between(epochs, mean - std, mean + std, color="tab:blue", alpha=0.2,
                        label="± std")
        for group, color in (("clean", "tab:green"), ("noisy", "tab:red")):
            points = [(e, history[e][name][group]) for e in epochs if group in history[e][name]]
            if points:
                ax.plot(*zip(*points, strict=True), color=color, linestyle="--",
                        label=f"{group} mean")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    return Path(path)
