"""Accuracy metrics computed once per epoch: overall and per class (worst class included)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from skillearn.data import Split, iterate_once


@torch.no_grad()
def class_accuracies(
    predict: Callable[[torch.Tensor], torch.Tensor],
    split: Split,
    num_classes: int,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(overall accuracy, per-class accuracy) of `predict` on `split`'s true labels.

    Classes absent from the split get NaN, so they never count as the worst class.
    """
    correct = torch.zeros(num_classes, device=device)
    total = torch.zeros(num_classes, device=device)
    for x, y in iterate_once(split, batch_size, device, clean=True):
        hit = (predict(x).argmax(dim=1) == y).float()
        correct.index_add_(0, y, hit)
        total.index_add_(0, y, torch.ones_like(hit))
    overall = correct.sum() / total.sum().clamp_min(1)
    per_class = torch.where(total > 0, correct / total.clamp_min(1), torch.nan)
    return overall.cpu(), per_class.cpu()


def worst_class(per_class: torch.Tensor) -> float:
    """Lowest per-class accuracy, ignoring classes with no examples."""
    present = per_class[~torch.isnan(per_class)]
    return float(present.min()) if present.numel() else float("nan")
