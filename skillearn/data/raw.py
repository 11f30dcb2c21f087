"""RawData: what a dataset source returns before any splitting or corruption."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class RawData:
    """Images of one dataset as numpy arrays, in the dataset's own order.

    Sources keep pixels in their native dtype (uint8 for CIFAR) and give `scale`, so large
    datasets are converted to float only per split at the end, not all at once.
    `test_x`/`test_y` are set only for datasets with an official test split.
    `sensitive` / `test_sensitive` (int64 group ids, names in `sensitive_groups`) are set by
    datasets with a protected attribute: it is kept for fairness evaluation only and never
    reaches a skill's batches.
    """

    x: np.ndarray  # (N, C, H, W), any numeric dtype
    y: np.ndarray  # (N,) int64
    classes: list[str]
    scale: float = 1.0  # divide pixels by this to get values in [0, 1]
    test_x: np.ndarray | None = None
    test_y: np.ndarray | None = None
    sensitive: np.ndarray | None = None  # (N,) int64 group id of each example
    test_sensitive: np.ndarray | None = None
    sensitive_name: str = ""
    sensitive_groups: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=np.int64)
        if self.test_y is not None:
            self.test_y = np.asarray(self.test_y, dtype=np.int64)
        if self.x.ndim != 4 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"RawData x {self.x.shape} / y {self.y.shape} do not match (N,C,H,W)")
        for name, labels in (("sensitive", self.y), ("test_sensitive", self.test_y)):
            groups = getattr(self, name)
            if groups is None:
                continue
            groups = np.asarray(groups, dtype=np.int64)
            setattr(self, name, groups)
            if labels is None or groups.shape != labels.shape:
                raise ValueError(f"RawData.{name} has shape {groups.shape}, expected one group "
                                 "per example")

    @property
    def has_official_test(self) -> bool:
        return self.test_x is not None
