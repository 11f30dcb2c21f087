"""Knobs every skill shares: data, corruption, budget, hypergradient method, search space size.

Kept apart from the skills so the command line, the sweep builder and the runner agree on one
list, and so a skill module only declares what is its own.
"""

from __future__ import annotations

from skillearn.knobs import Knob
from skillearn.mlo.methods import METHODS
from skillearn.trainables.backbone_knobs import BACKBONE_KNOBS

HYPERGRADIENT_METHODS = METHODS  # the engine's registry, read when checked

COMMON_KNOBS: dict[str, Knob] = {
    # data
    "dataset": Knob("digits", "dataset name (see `skillearn datasets`)"),
    "data_root": Knob("", "folder holding the dataset files (CIFAR, ImageFolder)"),
    "download": Knob(False, "let torchvision download CIFAR into data_root"),
    "target_attribute": Knob("", "label column of an attribute dataset (celeba: any of its 40 "
                             "attributes, default Attractive; isic2018: dx)"),
    "sensitive_attribute": Knob("", "protected-attribute column, used only for fairness "
                                "metrics (celeba default Male; isic2018: sex or age; "
                                "digits_groups: inverted)"),
    "group_correlation": Knob(0.9, "digits_groups: how often the protected attribute agrees "
                              "with the label's half in train/val (test: independent)",
                              low=0.0, high=1.0),
    "noise_rate": Knob(0.0, "label-noise rate on the training split", low=0.0, high=0.95),
    "noise_type": Knob("uniform", "label-noise model: uniform (any class), flip (one seeded "
                       "target per class), flip2 (two seeded targets, rate/2 each; seed 000), "
                       "pair (c -> c+1)", choices=("uniform", "flip", "flip2", "pair")),
    "imbalance": Knob(1.0, "long-tail imbalance factor of the training split",
                      low=1.0, high=1000.0),
    "val_fraction": Knob(0.5, "clean validation share of the non-test data (the upper level's "
                         "split in NAS; reweighting skills default to 0.1)", low=0.01, high=0.99),
    "augment": Knob("auto", "crop+flip training augmentation of the batches the engine steps "
                    "on (train, val, meta; never evaluation): auto = on for inputs >= 32 px",
                    choices=("auto", "on", "off")),
    "seed": Knob(0, "seed for data splits, initialisation and batches (and a sweep's TPE "
                 "sampler)", low=0, high=2**31 - 1),
    # budget
    "epochs": Knob(4, "search epochs", low=1, high=10000),
    "batch_size": Knob(64, "minibatch size of every level", low=2, high=8192),
    "steps_per_epoch": Knob(0, "cap on steps per epoch (0: one pass over the training split)",
                            low=0, high=10**7),
    # engine
    "method": Knob("finite_difference", "hypergradient method: first_order, finite_difference "
                   "or exact (through one unrolled step), neumann or conjugate_gradient "
                   "(implicit: the lower level taken at a stationary point)",
                   choices=HYPERGRADIENT_METHODS),
    "level_methods": Knob("", "per-level methods overriding `method` for the levels named, "
                          "comma-separated level=method (e.g. w1=conjugate_gradient,w2=exact): "
                          "how upper levels differentiate through that level"),
    "neumann_iterations": Knob(5, "terms of the Neumann series for H^-1 v (neumann; each costs "
                               "one Hessian-vector product)", low=0, high=1000),
    "neumann_alpha": Knob(0.0, "step of the Neumann series, below 2/lambda_max(H) (0: the "
                          "level's learning rate)", low=0.0, high=100.0),
    "cg_iterations": Knob(10, "conjugate-gradient iterations for H^-1 v (conjugate_gradient; "
                          "each costs one Hessian-vector product)", low=1, high=1000),
    "cg_tolerance": Knob(1e-6, "conjugate gradient stops once ||v - Hq|| <= tolerance ||v||",
                         low=0.0, high=1.0),
    "implicit_damping": Knob(0.0, "neumann and conjugate_gradient invert H + damping*I (> 0 "
                             "keeps H^-1 v finite where the lower loss is flat or not convex)",
                             low=0.0, high=1e6),
    "order": Knob("top_down", "level update order: top_down (DARTS code), bottom_up (the "
                  "papers' Algorithm 1), or every level name once, comma-separated (e.g. "
                  "lfm's arch,w1,w2)"),
    "reuse_grad": Knob(False, "lower levels reuse the unroll's gradient for their real step (one "
                       "pass fewer per level; changes DARTS' update order, off by default)"),
    "hypergrad_check_every": Knob(1, "every N epochs, the cosine and relative error of each "
                                  "upper level's hypergradient by the chosen method(s) against "
                                  "exact on one batch: hypergrad_cos/<level>, "
                                  "hypergrad_relerr/<level> (0: never)", low=0, high=10000),
    "fd_gap_every": Knob(-1, "old name of hypergrad_check_every, kept for existing configs "
                         "(-1: follow hypergrad_check_every)", low=-1, high=10000),
    "fused_cells": Knob("auto", "run each cell state's outgoing edges as one batch of ops: auto = "
                        "on for inputs up to 16 px (launch-bound there; at 32 px the batched "
                        "tensors cost more in copies than they save on CPU)",
                        choices=("auto", "on", "off")),
    "channels_last": Knob("auto", "NHWC supernet: auto = on (depthwise convs are several times "
                          "faster in NHWC on CPU at 8 and 32 px, see benchmarks/RESULTS.md)",
                          choices=("auto", "on", "off")),
    "amp": Knob("off", "bf16: bfloat16 autocast for the search steps (GPU; pair with "
                "method=exact, finite differences lose precision in bf16)",
                choices=("off", "bf16")),
    "device": Knob("auto", "cuda when available, else cpu", choices=("auto", "cpu", "cuda")),
    # search space
    "space": Knob("auto", "search space preset: auto = reduced for 8x8 data, full DARTS otherwise",
                  choices=("auto", "reduced", "full")),
    "ops": Knob("", "comma-separated op subset overriding the preset"),
    "nodes": Knob(0, "intermediate nodes per cell (0: preset)", low=0, high=8),
    "cells": Knob(0, "cells in the supernet (0: preset)", low=0, high=30),
    "channels": Knob(0, "initial channels (0: preset)", low=0, high=256),
    # search -> derive -> retrain
    "retrain_epochs": Knob(0, "retrain the derived architecture for this many epochs after the "
                           "search (0: skip)", low=0, high=10000),
    "retrain_channels": Knob(0, "channels of the retrained network (0: the recipe's, else the "
                             "preset's)", low=0, high=256),
    "retrain_cells": Knob(0, "cells of the retrained network (0: the recipe's, else the "
                          "preset's)", low=0, high=30),
    "retrain_recipe": Knob("auto", "retraining recipe: darts (DARTS' evaluation recipe), fast "
                           "(short, for small inputs), auto = darts for inputs >= 32 px",
                           choices=("auto", "darts", "fast")),
}

# Defaults that differ by the kind of skill. Reweighting papers (MW-Net, LFM-DR) train on almost
# all of the data and keep a small clean split for validation; NAS splits the data in half.
KIND_KNOBS: dict[str, dict[str, Knob]] = {
    "nas": BACKBONE_KNOBS,  # every NAS skill runs on any backbone, with its diagnostics
    "reweighting": {
        "val_fraction": Knob(0.1, "clean validation share of the non-test data; the meta set "
                             "comes out of the rest, the remainder is trained on",
                             low=0.01, high=0.99),
    },
}
