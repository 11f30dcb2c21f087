"""Fairness of a classifier across the groups of a protected attribute, with fairlearn.

Per split: demographic-parity difference (`dp_diff`: the largest gap in P(y_hat = c) between
groups), equalized-odds difference (`eo_diff`: the larger of the TPR and FPR gaps, fairlearn's
`worst_case`), equal-opportunity difference (`eopp_diff`: the TPR gap), accuracy per group and
the worst group's accuracy. Binary tasks use class 1 as the positive class, as fairlearn does.
Multi-class tasks (digits, ISIC's 7 diagnoses; the thesis leaves this open) take each class
one-vs-rest and report the mean over classes: a gap of 0 means no class is predicted, or
recovered, more often for one group than another.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from skillearn.data import DataBundle, Split


def _one_vs_rest(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                 num_classes: int, metric: Callable[..., float]) -> float:
    classes = [1] if num_classes == 2 else range(num_classes)
    with warnings.catch_warnings():  # a group with no positives of a class: fairlearn warns
        warnings.simplefilter("ignore")
        gaps = [metric((y_true == c).astype(int), (y_pred == c).astype(int),
                       sensitive_features=groups) for c in classes]
    gaps = [g for g in gaps if np.isfinite(g)]
    return float(np.mean(gaps)) if gaps else float("nan")


def fairness_report(y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray,
                    num_classes: int, group_names: Sequence[str] = (),
                    prefix: str = "") -> dict[str, Any]:
    """The fairness metrics of predictions `y_pred` against `y_true` across `groups`."""
    from fairlearn.metrics import (  # lazy: fairlearn imports pandas and scipy
        MetricFrame,
        demographic_parity_difference,
        equal_opportunity_difference,
        equalized_odds_difference,
    )

    y_true, y_pred, groups = (np.asarray(a).astype(np.int64) for a in (y_true, y_pred, groups))
    frame = MetricFrame(metrics=lambda t, p: float(np.mean(t == p)), y_true=y_true,
                        y_pred=y_pred, sensitive_features=groups)
    by_group = {(group_names[int(g)] if int(g) < len(group_names) else str(int(g))): float(a)
                for g, a in frame.by_group.items()}
    return {
        f"{prefix}dp_diff": _one_vs_rest(y_true, y_pred, groups, num_classes,
                                         demographic_parity_difference),
        f"{prefix}eo_diff": _one_vs_rest(y_true, y_pred, groups, num_classes,
                                         equalized_odds_difference),
        f"{prefix}eopp_diff": _one_vs_rest(y_true, y_pred, groups, num_classes,
                                           equal_opportunity_difference),
        f"{prefix}worst_group_acc": min(by_group.values()),
        f"{prefix}group_acc": json.dumps({k: round(v, 4) for k, v in by_group.items()}),
    }


@torch.no_grad()
def predictions(predict: Callable[[torch.Tensor], torch.Tensor], split: Split,
                device: torch.device, batch_size: int = 512) -> np.ndarray:
    """Predicted classes of `split`, in its order."""
    return torch.cat([predict(split.x[s : s + batch_size].to(device)).argmax(1).cpu()
                      for s in range(0, len(split), batch_size)]).numpy()


def fairness_metrics(predict: Callable[[torch.Tensor], torch.Tensor], data: DataBundle,
                     device: torch.device) -> dict[str, Any]:
    """`val_*` and `test_*` fairness metrics when the dataset has a protected attribute, else
    nothing: every skill's trials report the same numbers on such data."""
    if not data.has_sensitive:
        return {}
    metrics: dict[str, Any] = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if split.sensitive is None:
            continue
        metrics.update(fairness_report(split.clean_y.numpy(), predictions(predict, split, device),
                                       split.sensitive.numpy(), data.num_classes,
                                       data.sensitive_groups, prefix=f"{name}_"))
    return metrics
