"""The reweighting papers' baselines: plain CE, focal loss, class-balanced loss.

Each is a one-level program for the same engine (no separate training loop) with the same
classifier, optimizer and schedule as `mwnet`, so a comparison differs only in the loss.
- `ce`: softmax cross-entropy ("Base" in MW-Net / LFM tables);
- `focal` (Lin et al., 2017): -(1 - p)^gamma log p;
- `class_balanced` (Cui et al., 2019): CE weighted per class by 1 / effective number,
  (1 - beta) / (1 - beta^n_c), with n_c the observed train count of class c.
They learn no weights; the deviations they share with `mwnet` (classifier, schedule, digits
rates) are listed there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from skillearn.artifacts import EpochReport
from skillearn.knobs import Knob, Skill
from skillearn.mlo import Level
from skillearn.reweighting.losses import class_balanced_loss, class_balanced_weights, focal_loss
from skillearn.reweighting.metrics import reweighting_metrics
from skillearn.trainables.classifiers import CLASSIFIER_KNOBS, classifier_optimizer, make_classifier
from skillearn.trainables.evaluation import class_accuracies
from skillearn.trainables.setup import Built, Setup, program_for
from skillearn.trainables.weights import count_parameters, run_with

LossOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def build_one_level(setup: Setup, loss_of: LossOf) -> Built:
    """Classifier weights trained on `loss_of(logits, labels)` over train batches."""
    cfg, data, device = setup.config, setup.data, setup.device
    net = make_classifier(cfg["classifier"], data.input_shape, data.num_classes).to(device)
    w = dict(net.named_parameters())

    def train_loss(p, b):
        x, y, _ = b["train"]
        return loss_of(run_with(net, x, p["w"]), y)

    optimizer, schedule = classifier_optimizer(w, cfg)
    program = program_for([Level("w", w, optimizer, train_loss, scheduler=schedule)], cfg)
    train_counts = torch.bincount(data.train.clean_y, minlength=data.num_classes).tolist()

    def epoch_report() -> EpochReport:
        _, per_class = class_accuracies(net, data.test, data.num_classes, device)
        return EpochReport(metrics=reweighting_metrics(per_class, train_counts))

    return Built(program=program, predict=net, modules=[net], param_count=count_parameters(w),
                 epoch_report=epoch_report)


def build_ce(setup: Setup) -> Built:
    return build_one_level(setup, F.cross_entropy)


def build_focal(setup: Setup) -> Built:
    gamma = float(setup.config["focal_gamma"])
    return build_one_level(setup, lambda logits, y: focal_loss(logits, y, gamma))


def build_class_balanced(setup: Setup) -> Built:
    data = setup.data
    counts = torch.bincount(data.train.y, minlength=data.num_classes)
    weights = class_balanced_weights(counts, float(setup.config["cb_beta"])).to(setup.device)
    return build_one_level(setup, lambda logits, y: class_balanced_loss(logits, y, weights))


BASELINE_KNOBS: dict[str, Knob] = {
    **CLASSIFIER_KNOBS,
    "method": Knob("first_order", "unused: a one-level program has no hypergradient",
                   choices=("first_order",)),
}


def _baseline(name: str, summary: str, build: Callable[[Setup], Built],
              knobs: dict[str, Knob] | None = None) -> Skill:
    return Skill(name=name, summary=summary, knobs={**BASELINE_KNOBS, **(knobs or {})},
                 build=build, kind="reweighting", methods=("first_order",))


CE = _baseline("ce", "Baseline: the classifier trained with plain cross-entropy", build_ce)
FOCAL = _baseline("focal", "Baseline: focal loss (Lin et al., 2017)", build_focal, {
    "focal_gamma": Knob(2.0, "focusing exponent gamma (Lin et al.: 2; 0 = cross-entropy)",
                        low=0.0, high=5.0, tune=True, search=(0.0, 3.0)),
})
CLASS_BALANCED = _baseline(
    "class_balanced", "Baseline: class-balanced loss by effective number (Cui et al., 2019)",
    build_class_balanced, {
        "cb_beta": Knob(0.9999, "effective-number beta (Cui et al.: 0.9999); 0 = plain CE, "
                        "-> 1 = inverse frequency", low=0.0, high=0.99999, tune=True,
                        search=(0.9, 0.9999)),
    })
