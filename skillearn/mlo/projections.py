"""Projections a constrained level declares (`Level(projection=...)`).

A projection maps a level's parameters to the nearest feasible point. The engine applies it
after the real step and to the unrolled step, and differentiates through it by autograd, so it
must be written in torch operations (a clamp's derivative is 1 inside the set, 0 where it cuts).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from skillearn.mlo.level import Projection


def linf_ball(radius: float) -> Projection:
    """Projection onto ||x||_inf <= radius for every parameter (a perturbation's epsilon-ball)."""
    if not radius >= 0:
        raise ValueError(f"linf_ball needs radius >= 0, got {radius}")

    def project(params: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {key: value.clamp(-radius, radius) for key, value in params.items()}

    return project
