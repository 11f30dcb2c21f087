"""The `backbone` knob of every NAS skill, its settings, paper defaults and up-front checks.

A NAS skill builds "a supernet" and never learns which backbone it is; the runner's
`backbones.BackboneRun` turns these knobs into the supernet's variant, per-epoch schedules,
stages and diagnostics. This module imports no torch: the CLI and `validate_sweep` read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from skillearn.knobs import ConfigError, Knob

BACKBONES = ("darts", "pc_darts", "p_darts", "darts_minus", "darts_plus")

BACKBONE_KNOBS: dict[str, Knob] = {
    "backbone": Knob("darts", "search backbone: darts, pc_darts (partial channels + edge "
                     "normalisation), p_darts (progressive depth, op pruning), darts_minus "
                     "(decaying auxiliary skip), darts_plus (early stop on skips / stable alpha "
                     "ranking)", choices=BACKBONES),
    "partial_channels": Knob(0, "pc_darts: K, 1/K of each edge's channels go through the mixed "
                             "op (0: auto = 4 when that leaves >= 2 channels, else the largest "
                             "of 2, 1 that does)", choices=(0, 1, 2, 4, 8)),
    "arch_warmup": Knob(0.0, "share of the (stage's) epochs trained before the architecture "
                        "starts to move (PC-DARTS 15/50, P-DARTS 10/25)", low=0.0, high=0.9),
    "darts_minus_beta": Knob(1.0, "darts_minus: initial coefficient of the auxiliary skip, "
                             "decayed linearly to 0 over the search", low=0.0, high=10.0),
    "darts_plus_max_skips": Knob(2, "darts_plus: stop once the derived normal cell has this "
                                 "many skip connections", low=1, high=16),
    "darts_plus_stable_epochs": Knob(10, "darts_plus: stop once the alpha ranking of every edge "
                                     "stayed the same for this many epochs", low=1, high=10000),
    "p_darts_cells": Knob("auto", "p_darts: supernet cells per stage, comma-separated (auto: "
                          "5,11,17; 3,4,5 on the reduced digits space)"),
    "p_darts_keep": Knob("auto", "p_darts: ops kept per edge after each stage but the last, "
                         "comma-separated (auto: 5,3 of 8 ops; 3,2 of 4)"),
    "p_darts_skip_dropout": Knob("0.0,0.4,0.7", "p_darts: initial dropout rate on skip "
                                 "connections per stage, decayed to 0 over the stage"),
    "p_darts_max_skips": Knob(2, "p_darts: at most this many skips in the final normal cell",
                              low=1, high=16),
    # diagnostics of every NAS trial
    "hessian_every": Knob(1, "log the dominant eigenvalue of the validation loss's Hessian in "
                          "the architecture every N epochs (0: never)", low=0, high=10000),
    "hessian_iters": Knob(8, "power iterations per Hessian eigenvalue", low=1, high=200),
}

# Paper search settings a backbone brings along unless the run sets them (knobs the skill has).
BACKBONE_PRESETS: dict[str, dict[str, Any]] = {
    "pc_darts": {"batch_size": 256, "w_lr": 0.1, "w_lr_min": 0.0, "arch_lr": 6e-4,
                 "arch_warmup": 0.3},
    "p_darts": {"batch_size": 96, "arch_lr": 6e-4, "arch_warmup": 0.4},
}

CELL_DEFAULTS = {"full": (5, 11, 17), "reduced": (3, 4, 5)}
KEEP_DEFAULTS = {8: (5, 3), 4: (3, 2)}  # ops kept after stages 1 and 2, by the space's op count


def int_list(name: str, text: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers, or ConfigError naming the knob."""
    try:
        values = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text[:60]!r}") from None
    if not values or any(v < 1 for v in values):
        raise ConfigError(f"{name} must be integers >= 1, got {text[:60]!r}")
    return values


def float_list(name: str, text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated numbers, got {text[:60]!r}") from None
    if not values or any(not 0.0 <= v < 1.0 for v in values):
        raise ConfigError(f"{name} must be rates in [0, 1), got {text[:60]!r}")
    return values


def p_darts_plan(config: Mapping[str, Any], n_ops: int, reduced: bool
                 ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[float, ...]]:
    """(cells per stage, ops kept after each stage but the last, skip dropout per stage)."""
    cells = (CELL_DEFAULTS["reduced" if reduced else "full"] if config["p_darts_cells"] == "auto"
             else int_list("p_darts_cells", config["p_darts_cells"]))
    if config["p_darts_keep"] == "auto":
        if n_ops in KEEP_DEFAULTS and len(cells) == 3:
            keep = KEEP_DEFAULTS[n_ops]
        else:  # evenly spaced from the op count down to 2
            step = max(1, (n_ops - 2) // max(1, len(cells) - 1))
            keep = tuple(n_ops - (s + 1) * step for s in range(len(cells) - 1))
    else:
        keep = int_list("p_darts_keep", config["p_darts_keep"])
    dropout = float_list("p_darts_skip_dropout", config["p_darts_skip_dropout"])
    if len(keep) != len(cells) - 1:
        raise ConfigError(f"p_darts_keep needs {len(cells) - 1} counts (one per stage "
                          f"transition of p_darts_cells={','.join(map(str, cells))}), got "
                          f"{len(keep)}")
    bounds = (n_ops,) + keep
    if any(later >= earlier for earlier, later in zip(bounds, keep, strict=False)) or \
            any(k < 2 for k in keep):
        raise ConfigError(f"p_darts_keep={','.join(map(str, keep))} must decrease from the "
                          f"{n_ops} ops of the space and keep at least 2 per edge")
    if len(dropout) not in (1, len(cells)):
        raise ConfigError(f"p_darts_skip_dropout needs 1 or {len(cells)} rates, got "
                          f"{len(dropout)}")
    if len(dropout) == 1:
        dropout = dropout * len(cells)
    if config["epochs"] < len(cells):
        raise ConfigError(f"p_darts runs {len(cells)} stages; epochs={config['epochs']} must "
                          "be at least that")
    return cells, keep, dropout


def apply_backbone(skill_knobs: Mapping[str, Knob], config: dict[str, Any],
                   overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Fill the backbone's paper defaults into `config` (what `overrides` does not set) and
    check the backbone settings against each other; ConfigError names the first problem."""
    if "backbone" not in config:
        return config
    backbone = config["backbone"]
    for key, value in BACKBONE_PRESETS.get(backbone, {}).items():
        if key in skill_knobs and key not in overrides:
            config[key] = skill_knobs[key].coerce(key, value)
    own = {"pc_darts": ("partial_channels",), "darts_minus": ("darts_minus_beta",),
           "darts_plus": ("darts_plus_max_skips", "darts_plus_stable_epochs"),
           "p_darts": ("p_darts_cells", "p_darts_keep", "p_darts_skip_dropout",
                       "p_darts_max_skips")}
    for name, keys in own.items():
        # set to something else than its default (a trial's config repeats every default)
        given = [k for k in keys if k in overrides and config[k] != skill_knobs[k].default]
        if given and backbone != name:
            raise ConfigError(f"{given[0]} is a {name} setting; it needs backbone={name} "
                              f"(got backbone={backbone})")
    k = config["partial_channels"]
    if k and config["channels"] and config["channels"] % k:
        raise ConfigError(f"partial_channels={k} must divide channels={config['channels']}")
    ops = [o.strip() for o in config["ops"].split(",") if o.strip()]
    if backbone == "darts_minus" and ops and "skip_connect" not in ops:
        raise ConfigError("backbone=darts_minus adds an auxiliary skip connection: the ops "
                          "must include skip_connect")
    if backbone == "p_darts":
        if config["fused_cells"] == "on":
            raise ConfigError("backbone=p_darts prunes each edge to its own op set, which the "
                              "fused cells cannot run; use fused_cells=auto or off")
        n_ops = len(ops) if ops else 8 if config["space"] == "full" else None
        if n_ops is None:  # the preset's op count follows the data; the trial checks again
            p_darts_plan(config, 8, reduced=False)
        else:
            p_darts_plan(config, n_ops, config["space"] == "reduced")
    return config
