"""Figures of a reweighting run, drawn on a bare Figure (no pyplot global state, Agg canvas).

The driver draws `weight_histogram.png` with `draw_weight_histogram` from the
`WeightHistogram` artifact a reweighting skill declares each epoch
(`skillearn.platform.renderers`); `draw_weight_function` draws loss -> weight curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

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
