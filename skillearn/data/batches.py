"""Minibatches straight from tensors on the device: no DataLoader workers, no per-batch copies."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from .augment import Augment
from .bundle import Split
from .errors import DataError

AUGMENT_SEED_OFFSET = 0x5EED


class BatchStream:
    """Infinite, seeded, shuffled minibatches of a split, yielding (x, y, index) on `device`.

    The split is moved to the device once; each pass draws a fresh permutation from a private
    generator, so two streams with the same seed yield the same batches regardless of global RNG
    state. Bilevel methods step train and val streams independently, hence infinite iteration.
    A batch_size larger than the split is clamped to the split size (one batch per pass).
    `augment(x, generator)` (e.g. crop+flip) transforms each batch on the device with its own
    generator seeded from `seed`, so augmented batches are as reproducible as the order.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        seed: int,
        device: torch.device | str = "cpu",
        drop_last: bool = True,
        augment: Augment | None = None,
    ) -> None:
        n = len(split)
        if n == 0:
            raise DataError("cannot stream batches from an empty split")
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = min(int(batch_size), n)
        self.drop_last = drop_last
        self.seed = int(seed)
        self.augment = augment
        self.n = n
        self.steps_per_epoch = n // self.batch_size if drop_last else math.ceil(n / self.batch_size)
        self._x = split.x.to(self.device)
        self._y = split.y.to(self.device)
        self._index = split.index.to(self.device)

    def __len__(self) -> int:
        """Batches per pass (the stream itself never ends)."""
        return self.steps_per_epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        gen = torch.Generator().manual_seed(self.seed)  # each iter() restarts the same sequence
        # a second stream for augmentation, so switching it on never changes the batch order
        aug_gen = torch.Generator().manual_seed(self.seed + AUGMENT_SEED_OFFSET)
        bs = self.batch_size
        while True:
            perm = torch.randperm(self.n, generator=gen).to(self.device)
            for step in range(self.steps_per_epoch):
                sel = perm[step * bs : (step + 1) * bs]
                x = self._x[sel]
                if self.augment is not None:
                    x = self.augment(x, aug_gen)
                yield x, self._y[sel], self._index[sel]


def iterate_once(
    split: Split, batch_size: int, device: torch.device | str = "cpu", clean: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One in-order pass of (x, y) batches, for evaluation; `clean=True` yields true labels.

    val/test/meta labels are always clean; `clean` matters only for measuring fit on train.
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}")
    labels = split.clean_y if clean else split.y
    for start in range(0, len(split), batch_size):
        end = start + batch_size
        yield split.x[start:end].to(device), labels[start:end].to(device)
