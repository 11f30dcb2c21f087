"""Sample reweighting building blocks: MW-Net, reweighted losses, weight metrics and plots.

Pure torch / scikit-learn / matplotlib: no Ray or MLflow, so skills and tests use them directly.
"""

from skillearn.reweighting.losses import (
    class_balanced_loss,
    class_balanced_weights,
    focal_loss,
    weighted_cross_entropy,
)
from skillearn.reweighting.metrics import (
    SHOT_GROUPS,
    reweighting_metrics,
    shot_accuracies,
    shot_groups,
    weight_auc,
    weight_means,
)
from skillearn.reweighting.mwnet import MetaWeightNet

__all__ = [
    "SHOT_GROUPS",
    "MetaWeightNet",
    "class_balanced_loss",
    "class_balanced_weights",
    "focal_loss",
    "shot_accuracies",
    "reweighting_metrics",
    "shot_groups",
    "weight_auc",
    "weight_means",
    "weighted_cross_entropy",
]
