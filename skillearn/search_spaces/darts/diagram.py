"""PNG pictures of a cell and of how the alphas moved, with matplotlib only (no graphviz).

Figures are drawn on an Agg canvas directly (no ``pyplot``), so this works headless and never
changes the process-wide matplotlib backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch

from .genotype import Genotype

_OP_COLOURS = {
    "none": "#9e9e9e",
    "max_pool_3x3": "#1f77b4",
    "avg_pool_3x3": "#17becf",
    "skip_connect": "#2ca02c",
    "sep_conv_3x3": "#d62728",
    "sep_conv_5x5": "#ff7f0e",
    "dil_conv_3x3": "#9467bd",
    "dil_conv_5x5": "#8c564b",
}


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, format="png", dpi=120)
    return path


def _arc_point(
    a: tuple[float, float], b: tuple[float, float], rad: float, t: float
) -> tuple[float, float]:
    """Point at parameter t on matplotlib's ``arc3`` curve (a quadratic Bezier) from a to b."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    cx, cy = (a[0] + b[0]) / 2 + rad * dy, (a[1] + b[1]) / 2 - rad * dx
    u = 1.0 - t
    return (
        u * u * a[0] + 2 * u * t * cx + t * t * b[0],
        u * u * a[1] + 2 * u * t * cy + t * t * b[1],
    )


def _clear_rad(
    a: tuple[float, float],
    b: tuple[float, float],
    rad: float,
    others: list[tuple[float, float]],
    labels: list[tuple[float, float]],
    clearance: float = 0.6,
) -> float:
    """The first curvature (preferring ``rad``'s sign, then gentle) whose curve avoids the other
    nodes and whose label (at the midpoint) avoids labels already placed."""
    candidates = [rad, -rad, 2 * rad, -2 * rad, 3 * rad, -3 * rad]
    for r in candidates:
        pts = [_arc_point(a, b, r, t / 20) for t in range(1, 20)]
        mx, my = _arc_point(a, b, r, 0.5)
        if all(
            (px - ox) ** 2 + (py - oy) ** 2 > clearance**2 for px, py in pts for ox, oy in others
        ) and all(abs(mx - lx) > 1.6 or abs(my - ly) > 0.35 for lx, ly in labels):
            return r
    return rad


def draw_cell(genotype: Genotype, which: str, path: str | Path) -> Path:
    """Draw the ``"normal"`` or ``"reduce"`` cell left to right and save it as a PNG.

    Inputs c_{k-2}, c_{k-1} on the left, intermediate nodes 0..n-1 in the middle (alternating up
    and down so arrows do not overlap), the concatenated output c_{k} on the right.
    """
    if which not in ("normal", "reduce"):
        raise ValueError(f"which must be 'normal' or 'reduce', got {which!r}")
    edges = genotype.normal if which == "normal" else genotype.reduce
    concat = genotype.normal_concat if which == "normal" else genotype.reduce_concat
    n = len(edges) // 2

    pos: dict[int, tuple[float, float]] = {0: (0.0, 2.0), 1: (0.0, -2.0)}
    for i in range(n):
        pos[2 + i] = (2.8 + 2.8 * i, 1.2 if i % 2 == 0 else -1.2)
    out_xy = (2.8 * (n + 1) + 0.4, 0.0)
    labels = {0: "$c_{k-2}$", 1: "$c_{k-1}$", **{2 + i: str(i) for i in range(n)}}

    x_lo, x_hi, y_lo, y_hi = -1.0, out_xy[0] + 1.0, -2.8, 2.8
    fig = Figure(figsize=(0.85 * (x_hi - x_lo), 0.85 * (y_hi - y_lo) + 0.5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_xlim(x_lo, x_hi)
    ax.set_ylim(y_lo, y_hi)

    def node(xy: tuple[float, float], text: str, colour: str) -> None:
        ax.text(
            *xy,
            text,
            ha="center",
            va="center",
            fontsize=11,
            zorder=3,
            bbox={"boxstyle": "round,pad=0.4", "fc": colour, "ec": "black"},
        )

    def arrow(a: tuple[float, float], b: tuple[float, float], rad: float, colour: str) -> None:
        ax.add_patch(
            FancyArrowPatch(
                a,
                b,
                arrowstyle="-|>",
                mutation_scale=14,
                color=colour,
                lw=1.6,
                zorder=1,
                connectionstyle=f"arc3,rad={rad}",
                shrinkA=18,
                shrinkB=18,
            )
        )

    placed: list[tuple[float, float]] = []
    for e, (op, j) in enumerate(edges):
        a, b = pos[j], pos[2 + e // 2]
        # Bend the two arrows into the same node opposite ways, more if the curve would run
        # through another node; label at the curve's midpoint.
        others = [xy for k, xy in pos.items() if k not in (j, 2 + e // 2)]
        rad = _clear_rad(a, b, 0.15 if e % 2 == 0 else -0.15, others, placed)
        colour = _OP_COLOURS.get(op, "black")
        arrow(a, b, rad, colour)
        mx, my = _arc_point(a, b, rad, 0.5)
        placed.append((mx, my))
        ax.text(
            mx,
            my,
            op,
            ha="center",
            va="center",
            fontsize=8,
            color=colour,
            zorder=2,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
    for s in concat:
        if s in pos:
            arrow(pos[s], out_xy, 0.0, "#777777")

    for k, xy in pos.items():
        node(xy, labels[k], "#a6d8f0" if k < 2 else "#d9d9d9")
    node(out_xy, "$c_{k}$", "#f6e08a")
    ax.set_title(f"{which} cell", fontsize=12)
    fig.tight_layout()
    return _save(fig, path)


def draw_alpha_evolution(
    history: Sequence[np.ndarray | list], ops: Sequence[str], path: str | Path
) -> Path:
    """Plot, per op, its softmax weight averaged over edges, one point per epoch.

    ``history[t]`` is the (num_edges, n_ops) alpha of epoch t (raw logits, not softmaxed).
    Shows at a glance whether the search is collapsing onto e.g. skip_connect.
    """
    if len(history) == 0:
        raise ValueError("history is empty")
    ops = list(ops)
    alphas = np.stack([np.asarray(a, dtype=np.float64) for a in history])  # (T, E, K)
    if alphas.ndim != 3 or alphas.shape[2] != len(ops):
        raise ValueError(f"history entries must be (num_edges, {len(ops)}), got {alphas.shape[1:]}")
    z = alphas - alphas.max(axis=2, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=2, keepdims=True)
    mean_p = p.mean(axis=1)  # (T, K)
    epochs = np.arange(len(history))

    fig = Figure(figsize=(7.0, 4.2))
    ax = fig.add_subplot(1, 1, 1)
    for k, op in enumerate(ops):
        ax.plot(epochs, mean_p[:, k], marker="o", ms=3, label=op, color=_OP_COLOURS.get(op))
    ax.set_xlabel("epoch")
    ax.set_ylabel("softmax weight (mean over edges)")
    ax.set_title("normal-cell alpha evolution")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    return _save(fig, path)
