"""Neural architecture search of Meta-Weight-Net (seed 003): TPE picks VNet's shape and input.

The inner program is exactly `mwnet`'s; what changes is the outer search space. Seed 003 argues
that under label noise *and* class imbalance a loss-only 1-100-1 VNet cannot tell a hard
minority example from a mislabelled one, and lets the tree-structured Parzen estimator choose
- the number of hidden layers (`mwnet_layers`, 1-3) and each one's width (`mwnet_hidden_k`,
  searched only when layer k exists: a conditional, define-by-run space), and
- VNet's input: the loss alone, or the loss with a pooled intermediate feature of the
  classifier (`mwnet_feature_layer`, searched only for `mwnet_input=loss+feature`).
The searched knobs are the trial's params; the optimisation knobs keep MW-Net's defaults
(they are not searched here, unlike in `mwnet`).
"""

from __future__ import annotations

from dataclasses import replace

from skillearn.trainables.classifiers import FEATURE_LAYERS
from skillearn.trainables.mwnet import MWNET_KNOBS, build_mwnet
from skillearn.trainables.setup import Built, Setup
from skillearn.trainables.skill import Knob, Skill

WIDTHS = (10, 50, 100, 200)
MAX_LAYERS = 3


def build(setup: Setup) -> Built:
    cfg = setup.config
    hidden = [cfg[f"mwnet_hidden_{k}"] for k in range(1, cfg["mwnet_layers"] + 1)]
    feature_layer = cfg["mwnet_feature_layer"] if cfg["mwnet_input"] == "loss+feature" else None
    return build_mwnet(setup, hidden=hidden, feature_layer=feature_layer)


def _width_knob(k: int) -> Knob:
    deeper = tuple(range(k, MAX_LAYERS + 1))
    return Knob(100, f"width of MW-Net's hidden layer {k}", choices=WIDTHS, tune=True,
                when=None if k == 1 else {"mwnet_layers": deeper})


SEARCHED_KNOBS: dict[str, Knob] = {
    "mwnet_layers": Knob(1, "hidden layers of MW-Net", low=1, high=MAX_LAYERS, tune=True),
    **{f"mwnet_hidden_{k}": _width_knob(k) for k in range(1, MAX_LAYERS + 1)},
    "mwnet_input": Knob("loss", "MW-Net's input: the loss, or the loss and a classifier feature",
                        choices=("loss", "loss+feature"), tune=True),
    "mwnet_feature_layer": Knob("layer3", "classifier stage whose pooled output MW-Net reads",
                                choices=FEATURE_LAYERS, tune=True,
                                when={"mwnet_input": "loss+feature"}),
}

SKILL = Skill(
    name="mwnet_nas",
    summary="MW-Net with a TPE-searched weighting network (depth, widths, feature input)",
    knobs={**{name: replace(knob, tune=False) for name, knob in MWNET_KNOBS.items()},
           **SEARCHED_KNOBS},
    build=build,
    kind="reweighting",
    methods=("finite_difference", "exact"),
)
