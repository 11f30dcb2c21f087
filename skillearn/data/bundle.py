"""Split and DataBundle: the in-memory result of loading, ready for GPU training loops."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(eq=False)
class Split:
    """One split held entirely as tensors, so a training loop never touches a DataLoader.

    `y` is what the learner sees (possibly noisy); `clean_y` is the truth, kept so that
    experiments can measure how well a method detects or down-weights corrupted labels.
    `index` holds stable example ids in the original dataset, usable as keys for
    per-example weights.
    """

    x: torch.Tensor
    y: torch.Tensor
    clean_y: torch.Tensor
    index: torch.Tensor

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for name in ("y", "clean_y", "index"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"Split.{name} has shape {tuple(t.shape)}, expected ({n},)")

    @property
    def is_noisy(self) -> torch.Tensor:
        """Bool mask of examples whose observed label differs from the true one."""
        return self.y != self.clean_y

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def to(self, device: torch.device | str) -> Split:
        """Copy of this split on `device` (tensors moved once, not per batch)."""
        return Split(
            x=self.x.to(device),
            y=self.y.to(device),
            clean_y=self.clean_y.to(device),
            index=self.index.to(device),
        )


@dataclass(eq=False)
class DataBundle:
    """All splits of one dataset plus a JSON-serialisable `record` of what was done to them."""

    name: str
    train: Split
    val: Split
    test: Split
    meta: Split | None
    num_classes: int
    input_shape: tuple[int, int, int]
    classes: list[str]
    record: dict[str, Any] = field(default_factory=dict)
