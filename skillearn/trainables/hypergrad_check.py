"""The per-epoch hypergradient check: how far each upper level's hypergradient, by the run's
chosen method(s), is from `exact` on one batch.

Finite differences can be far off on ReLU supernets, a truncated Neumann series or CG solve
off an unconverged lower level; logging the agreement every few epochs shows it on the run
itself rather than in a separate benchmark. For an implicit method the reference `exact` is
the one-step-unrolled hypergradient, so the figures then also measure how far the implicit
direction (lower level at a stationary point) is from the unrolled one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from skillearn.mlo import Batches, MultilevelProgram


def check_every(config: Mapping[str, Any]) -> int:
    """The check's cadence in epochs (0: off): `hypergrad_check_every`, unless the old knob
    `fd_gap_every` was set (it defaults to -1, "follow hypergrad_check_every")."""
    legacy = config.get("fd_gap_every", -1)
    return legacy if legacy >= 0 else config["hypergrad_check_every"]


def hypergrad_check(
    program: MultilevelProgram,
    config: Mapping[str, Any],
    epoch: int,
    next_batches: Callable[[], Batches],
) -> dict[str, float]:
    """`hypergrad_cos/<level>` and `hypergrad_relerr/<level>` for every upper level when
    epoch `epoch` (0-based) is due, else nothing. Draws one batch only when due."""
    every = check_every(config)
    upper = program.upper_levels()
    if not every or (epoch + 1) % every or not upper:
        return {}
    batches = next_batches()
    metrics: dict[str, float] = {}
    for name in upper:
        cosine, relative_error = program.hypergradient_agreement(name, batches)
        metrics[f"hypergrad_cos/{name}"] = float(cosine)
        metrics[f"hypergrad_relerr/{name}"] = float(relative_error)
    return metrics
