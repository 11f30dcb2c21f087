"""Configuration of the DARTS cell search space (which ops, how many nodes/cells/channels)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .ops import OPS, PRIMITIVES

# 8x8 inputs (the embedded digits) get a reduced space so a whole sweep fits in minutes on two
# CPU cores; anything larger gets the full DARTS search setting (8 ops, 4 nodes, 8 cells, 16 C).
REDUCED_OPS = ("max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3")
PRESETS: dict[str, dict[str, Any]] = {
    "reduced": {"ops": REDUCED_OPS, "nodes": 2, "cells": 3, "channels": 8,
                "retrain_channels": 16, "retrain_cells": 4},
    "full": {"ops": PRIMITIVES, "nodes": 4, "cells": 8, "channels": 16,
             "retrain_channels": 36, "retrain_cells": 20},
}


def reduction_indices(cells: int) -> tuple[int, ...]:
    """Indices of the reduction cells: DARTS puts them at 1/3 and 2/3 of the depth.

    Index 0 is never a reduction cell (so 1 cell -> none, 2 cells -> (1,)): reducing right after
    the stem would throw away resolution before any cell has looked at it.
    """
    return tuple(sorted({i for i in (cells // 3, 2 * cells // 3) if 0 < i < cells}))


@dataclass(frozen=True)
class SpaceConfig:
    """Everything that fixes the shape of the supernet (and of its alphas)."""

    ops: tuple[str, ...] = PRIMITIVES
    nodes: int = 4
    cells: int = 8
    channels: int = 16
    in_channels: int = 3
    num_classes: int = 10
    stem_multiplier: int = 3

    def __post_init__(self) -> None:
        # Configs often arrive from JSON/YAML/Ray Tune as lists; keep the dataclass hashable.
        object.__setattr__(self, "ops", tuple(self.ops))

    @property
    def num_edges(self) -> int:
        """Mixed edges per cell: intermediate node i has 2 + i inputs."""
        return sum(2 + i for i in range(self.nodes))

    def reduction_cells(self) -> tuple[int, ...]:
        """Indices of reduction cells (see :func:`reduction_indices`)."""
        return reduction_indices(self.cells)

    def validate(self) -> SpaceConfig:
        """Raise ``ValueError`` naming the bad field; returns self so it can be chained."""
        unknown = [op for op in self.ops if op not in OPS]
        if unknown:
            raise ValueError(f"unknown op name(s) {unknown}; valid ops are {list(PRIMITIVES)}")
        if len(set(self.ops)) != len(self.ops):
            raise ValueError(f"ops must not repeat, got {list(self.ops)}")
        if not any(op != "none" for op in self.ops):
            raise ValueError(
                f"ops must contain at least one op other than 'none', got {list(self.ops)}"
            )
        for name in ("nodes", "cells", "channels", "in_channels", "num_classes", "stem_multiplier"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return self
