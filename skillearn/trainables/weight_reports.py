"""The declared artifacts of skills that learn example weights: the loss -> weight curve
(`weight_function.png`), the clean / mislabelled weight histogram (`weight_histogram.png`) and
the per-epoch summary drawn as `learned_weights.png` (see `skillearn.reweighting.trends`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from skillearn.artifacts import Artifact, Curve, WeightHistogram, WeightTrends
from skillearn.reweighting.metrics import weight_sample
from skillearn.reweighting.trends import has_trends, trend_values

HISTOGRAM_CAP = 3000  # examples in the histogram's sample


def weight_function(points: Sequence[Sequence[float]]) -> Curve:
    """The learned loss -> weight relation ([[loss, weight], ...]), every epoch in one plot."""
    return Curve(name="weight_function", x=[float(p[0]) for p in points],
                 y=[float(p[1]) for p in points], x_label="training loss",
                 y_label="example weight", y_range=[0.0, 1.0], overlay_epochs=True)


def weight_histogram(weights: torch.Tensor, is_noisy: torch.Tensor,
                     cap: int = HISTOGRAM_CAP) -> WeightHistogram:
    """A capped, deterministic sample of the train split's weights, clean vs mislabelled."""
    sample, noisy = weight_sample(weights, is_noisy, cap)
    return WeightHistogram(weights=sample, is_noisy=noisy)


def weight_trends(metrics: Mapping[str, object]) -> list[Artifact]:
    """`learned_weights`: this epoch's r / a / b summary, when the metrics have one."""
    values = trend_values(metrics)
    return [WeightTrends(values=values)] if has_trends(values) else []
