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
    `sensitive` is the protected-attribute group of each example (None when the dataset has
    none). It is for fairness evaluation only: batches never carry it, so no skill can train on
    it (see BatchStream).
    """

    x: torch.Tensor
    y: torch.Tensor
    clean_y: torch.Tensor
    index: torch.Tensor
    sensitive: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.x.shape[0]
        for name in ("y", "clean_y", "index"):
            t = getattr(self, name)
            if t.shape != (n,):
                raise ValueError(f"Split.{name} has shape {tuple(t.shape)}, expected ({n},)")
        if self.sensitive is not None and self.sensitive.shape != (n,):
            raise ValueError(f"Split.sensitive has shape {tuple(self.sensitive.shape)}, "
                             f"expected ({n},)")

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
            sensitive=None if self.sensitive is None else self.sensitive.to(device),
        )

    def without_sensitive(self) -> Split:
        """The same split with the protected attribute removed (the tensors are shared)."""
        return Split(x=self.x, y=self.y, clean_y=self.clean_y, index=self.index)


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
    sensitive_name: str = ""  # the protected attribute, "" when the dataset has none
    sensitive_groups: tuple[str, ...] = ()  # group id -> name

    @property
    def has_sensitive(self) -> bool:
        return self.test.sensitive is not None

    def without_sensitive(self) -> DataBundle:
        """This bundle with the protected-attribute column removed from every split."""
        return DataBundle(
            name=self.name, train=self.train.without_sensitive(),
            val=self.val.without_sensitive(), test=self.test.without_sensitive(),
            meta=None if self.meta is None else self.meta.without_sensitive(),
            num_classes=self.num_classes, input_shape=self.input_shape,
            classes=list(self.classes), record=dict(self.record),
        )
