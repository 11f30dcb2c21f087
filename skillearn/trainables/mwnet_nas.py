"""Neural architecture search of Meta-Weight-Net (seed 003): TPE picks VNet's shape and input.

The inner program is exactly `mwnet`'s; what changes is the outer search space. Seed 003 argues
that under label noise *and* class imbalance a loss-only 1-100-1 VNet cannot tell a hard
minority example from a mislabelled one, and lets the tree-structured Parzen estimator choose
- the number of hidden layers (`mwnet_layers`, 1-3) and each one's width (`mwnet_hidden_k`,
  searched only when layer k exists: a conditional, define-by-run space), and
- VNet's input: the loss alone, the loss with a pooled intermediate feature of the classifier,
  the feature alone, or the feature with the one-hot observed label (`mwnet_feature_layer`,
  searched only for the inputs that read a feature).
The searched knobs are the trial's params; the optimisation knobs keep MW-Net's defaults
(they are not searched here, unlike in `mwnet`).
TPE judges full-budget results: the skill turns ASHA off (`early_stopping=False`), because the
classifier's learning rate drops at 80% and 90% of the epochs and a trial stopped before them
says little about where it ends.
Remaining deviations from seed 003: the feature input is a globally pooled stage of our
classifier (seed 003's exact feature extractor is not specified beyond "intermediate layer"),
and the inner program's deviations are `mwnet`'s.
"""

from __future__ import annotations

from dataclasses import replace

from skillearn.knobs import Knob, Skill
from skillearn.mlo import SECOND_ORDER_METHODS
from skillearn.reweighting.mwnet import MWNET_INPUTS
from skillearn.trainables.classifiers import FEATURE_LAYERS
from skillearn.trainables.mwnet import MWNET_KNOBS, build_mwnet
from skillearn.trainables.setup import Built, Setup

WIDTHS = (10, 50, 100, 200)
MAX_LAYERS = 3


FEATURE_INPUTS = tuple(i for i in MWNET_INPUTS if "feature" in i)


def build(setup: Setup) -> Built:
    cfg = setup.config
    hidden = [cfg[f"mwnet_hidden_{k}"] for k in range(1, cfg["mwnet_layers"] + 1)]
    return build_mwnet(setup, hidden=hidden, feature_layer=cfg["mwnet_feature_layer"],
                       vnet_input=cfg["mwnet_input"])


def _width_knob(k: int) -> Knob:
    deeper = tuple(range(k, MAX_LAYERS + 1))
    return Knob(100, f"width of MW-Net's hidden layer {k}", choices=WIDTHS, tune=True,
                when=None if k == 1 else {"mwnet_layers": deeper})


SEARCHED_KNOBS: dict[str, Knob] = {
    "mwnet_layers": Knob(1, "hidden layers of MW-Net", low=1, high=MAX_LAYERS, tune=True),
    **{f"mwnet_hidden_{k}": _width_knob(k) for k in range(1, MAX_LAYERS + 1)},
    "mwnet_input": Knob("loss", "MW-Net's input: the loss, the loss and a classifier feature, "
                        "the feature alone, or the feature and the one-hot observed label",
                        choices=MWNET_INPUTS, tune=True),
    "mwnet_feature_layer": Knob("layer3", "classifier stage whose pooled output MW-Net reads",
                                choices=FEATURE_LAYERS, tune=True,
                                when={"mwnet_input": FEATURE_INPUTS}),
}

SKILL = Skill(
    name="mwnet_nas",
    summary="MW-Net with a TPE-searched weighting network (depth, widths, feature input)",
    knobs={**{name: replace(knob, tune=False) for name, knob in MWNET_KNOBS.items()},
           **SEARCHED_KNOBS},
    build=build,
    kind="reweighting",
    methods=SECOND_ORDER_METHODS,
    early_stopping=False,
    levels=("w", "theta"),
)
