"""Reweighted classification losses, as pure functions of logits and labels.

All return the batch mean, so that weights of 1 give plain cross-entropy: `weighted_cross_entropy`
divides the weighted sum by the batch size (the current MW-Net.py). The `mwnet` skill does not
use it by default: its `weight_normalization` knob defaults to `sum` (divide by the batch's sum
of weights, MW-Net's class-imbalance code and first release, so only relative weights matter);
`weight_normalization=none` is this function's batch-size normalisation. `lfm_dr` divides by the
batch size, as the LFM code does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def weighted_cross_entropy(
    logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """mean_i w_i * CE_i."""
    return (weights * F.cross_entropy(logits, labels, reduction="none")).mean()


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Lin et al. (2017): mean_i -(1 - p_i)^gamma log p_i, with p_i the true-class probability.

    gamma = 0 is cross-entropy; larger gamma discounts examples the model already gets right.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    return (-(1 - log_p.exp()).pow(gamma) * log_p).mean()


def class_balanced_weights(class_counts: Sequence[int] | torch.Tensor, beta: float) -> torch.Tensor:
    """Cui et al. (2019): w_c proportional to (1 - beta) / (1 - beta^n_c), summing to C.

    (1 - beta^n) / (1 - beta) is the "effective number" of n examples: beta = 0 gives equal
    weights, beta -> 1 inverse-frequency weights. Classes with no examples get weight 0.
    """
    counts = torch.as_tensor(class_counts, dtype=torch.float64)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"class-balanced beta must be in [0, 1), got {beta}")
    effective = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), counts)) / (1.0 - beta)
    weights = torch.where(counts > 0, 1.0 / effective.clamp_min(1e-12), torch.zeros_like(counts))
    weights = weights * (len(counts) / weights.sum())
    return weights.float()


def class_balanced_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    class_weights: torch.Tensor,
    gamma: float = 0.0,
) -> torch.Tensor:
    """Class-balanced softmax CE (gamma = 0) or focal loss (gamma > 0): mean_i w_{y_i} * l_i.

    `class_weights` comes from `class_balanced_weights`, computed once from the train counts.
    """
    log_p = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)
    per_example = -(1 - log_p.exp()).pow(gamma) * log_p if gamma else -log_p
    return (class_weights.to(logits.dtype)[labels] * per_example).mean()
