"""Metrics of a reweighting run: long-tail (many/medium/few-shot) accuracy and weight quality.

Shot groups. The usual rule (Liu et al., 2019, OLTR) calls a class many-shot with > 100 train
examples, few-shot with < 20 and medium-shot otherwise. On small datasets (8x8 digits has at
most ~70 train examples per class) that would put every class in one group, so when no class
has more than 100 examples the groups are relative instead: many-shot above the 2/3 quantile of
the train class counts, few-shot below the 1/3 quantile, medium in between (terciles). Equal
counts (no imbalance) then make every class medium-shot.

Weight quality. A good reweighting gives clean examples larger weights than mislabelled ones:
we report both means and the ROC-AUC of the weight as a score separating clean (positive) from
noisy examples; it is undefined (NaN) when the split has no noisy or no clean examples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

SHOT_GROUPS = ("many", "medium", "few")
MANY_SHOT_ABOVE = 100
FEW_SHOT_BELOW = 20


def shot_groups(train_counts: Sequence[int]) -> dict[str, list[int]]:
    """Class indices of the many/medium/few-shot groups (see the module docstring)."""
    counts = np.asarray(train_counts, dtype=np.float64)
    if counts.max(initial=0) > MANY_SHOT_ABOVE:
        many, few = counts > MANY_SHOT_ABOVE, counts < FEW_SHOT_BELOW
    else:
        low, high = np.quantile(counts, [1 / 3, 2 / 3])
        many, few = counts > high, counts < low
    medium = ~many & ~few
    return {name: np.flatnonzero(mask).tolist()
            for name, mask in zip(SHOT_GROUPS, (many, medium, few), strict=True)}


def shot_accuracies(
    per_class_acc: Sequence[float] | torch.Tensor, train_counts: Sequence[int]
) -> dict[str, float]:
    """Mean per-class accuracy of each shot group, as {many,medium,few}_shot_acc (NaN if empty)."""
    acc = np.asarray(torch.as_tensor(per_class_acc, dtype=torch.float64))
    result = {}
    for name, classes in shot_groups(train_counts).items():
        values = acc[classes]
        values = values[~np.isnan(values)]
        result[f"{name}_shot_acc"] = float(values.mean()) if values.size else math.nan
    return result


def weight_means(weights: torch.Tensor, is_noisy: torch.Tensor) -> tuple[float, float]:
    """(mean weight of clean examples, mean weight of noisy examples); NaN for an empty group."""
    weights, is_noisy = weights.detach().float().cpu(), is_noisy.bool().cpu()

    def mean(values: torch.Tensor) -> float:
        return float(values.mean()) if values.numel() else math.nan

    return mean(weights[~is_noisy]), mean(weights[is_noisy])


def weight_auc(weights: torch.Tensor, is_noisy: torch.Tensor) -> float:
    """ROC-AUC of `weights` as a score for "clean" (clean = positive); NaN when one class."""
    from sklearn.metrics import roc_auc_score  # lazy: sklearn import is slow

    clean = (~is_noisy.bool()).cpu().numpy()
    if clean.all() or not clean.any():
        return math.nan
    return float(roc_auc_score(clean, weights.detach().double().cpu().numpy()))


def capped_indices(n: int, cap: int) -> torch.Tensor:
    """At most `cap` evenly spaced positions of 0..n-1 (a deterministic sample for plots)."""
    if n <= cap:
        return torch.arange(n)
    return torch.linspace(0, n - 1, cap).round().long().unique()


def weight_report(
    weights: torch.Tensor,
    is_noisy: torch.Tensor,
    prefix: str = "",
) -> dict[str, float]:
    """Weight quality over a whole split: {prefix}weight_clean_mean, weight_noisy_mean and
    weight_auc."""
    clean_mean, noisy_mean = weight_means(weights, is_noisy)
    return {
        f"{prefix}weight_clean_mean": clean_mean,
        f"{prefix}weight_noisy_mean": noisy_mean,
        f"{prefix}weight_auc": weight_auc(weights, is_noisy),
    }


def weight_sample(
    weights: torch.Tensor, is_noisy: torch.Tensor, cap: int = 3000
) -> tuple[list[float], list[int]]:
    """A deterministic sample of at most `cap` (weight, is_noisy) pairs, for the histogram."""
    keep = capped_indices(len(weights), cap)
    sample = weights.detach().float().cpu()[keep]
    return [round(float(w), 4) for w in sample], [int(b) for b in is_noisy.cpu()[keep]]


def reweighting_metrics(
    per_class_test_acc: Sequence[float] | torch.Tensor,
    train_counts: Sequence[int],
    weights: torch.Tensor | None = None,
    is_noisy: torch.Tensor | None = None,
) -> dict[str, float]:
    """What every reweighting skill reports per epoch: shot-group test accuracy and, for skills
    that learn weights, the weight quality over the train split (`weight_report`)."""
    metrics: dict[str, float] = dict(shot_accuracies(per_class_test_acc, train_counts))
    if weights is not None and is_noisy is not None:
        metrics.update(weight_report(weights, is_noisy))
    return metrics
