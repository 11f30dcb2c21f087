"""What a skill's `build` receives (Setup) and returns (Built), and how a run picks its space.

The split keeps skills short: a skill turns a Setup into levels and a predictor; data, device,
seeding, checkpoints and reporting stay with the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from skillearn.data import DataBundle
from skillearn.knobs import ConfigError
from skillearn.mlo import Level, MultilevelProgram
from skillearn.search_spaces.darts import PRESETS, Genotype, SpaceConfig, SuperNet
from skillearn.search_spaces.darts.variants import make_supernet


@dataclass
class Setup:
    """Everything a skill needs to declare its levels."""

    config: Mapping[str, Any]
    data: DataBundle
    device: torch.device
    space: SpaceConfig


@dataclass
class Built:
    """A skill's program plus what the runner needs to evaluate, describe and save it.

    - `predict(x)`: logits of the model whose accuracy is reported;
    - `modules`: switched between train/eval mode by the runner;
    - `state`: every tensor that is not a level parameter but must survive a restart
      (BatchNorm statistics of weight sets that live outside a module);
    - `genotype()` / `alphas()`: the current architecture (NAS skills);
    - `gap_level`: the level whose finite-difference vs exact gap is logged;
    - `epoch_metrics()`: skill-specific metrics, computed once per epoch.
    """

    program: MultilevelProgram
    predict: Callable[[torch.Tensor], torch.Tensor]
    modules: list[torch.nn.Module] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    genotype: Callable[[], Genotype] | None = None
    alphas: Callable[[], dict[str, torch.Tensor]] | None = None
    gap_level: str | None = None
    param_count: int = 0
    ops: tuple[str, ...] = ()
    epoch_metrics: Callable[[], dict[str, Any]] | None = None


FUSED_CELLS_MAX_PX = 16


def use_fused_cells(setting: str, input_shape: tuple[int, ...]) -> bool:
    """`fused_cells` knob: on, off, or auto = on for inputs up to 16 px (measured in
    benchmarks/RESULTS.md: 0.55x the edge-by-edge step at 8 px, 1.48x at 32 px on CPU)."""
    if setting == "auto":
        return input_shape[-1] <= FUSED_CELLS_MAX_PX
    return setting == "on"


def build_supernet(setup: Setup) -> SuperNet:
    """The search space's supernet on the run's device: fused cells and NHWC where they pay."""
    net = make_supernet(setup.space, fused=use_fused_cells(setup.config["fused_cells"],
                                                           setup.data.input_shape))
    net = net.to(setup.device)
    if setup.config["channels_last"] in ("on", "auto"):
        net.use_channels_last()
    return net


def program_for(levels: list[Level], config: Mapping[str, Any]) -> MultilevelProgram:
    """The engine for a skill's levels, with the run's method, order and reuse settings."""
    return MultilevelProgram(levels, method=config["method"], order=config["order"],
                             reuse_unroll_grad=config["reuse_grad"])


def resolve_space(config: Mapping[str, Any], data: DataBundle) -> tuple[SpaceConfig, dict]:
    """The search space for this run: the preset, then any explicit overrides."""
    preset_name = config["space"]
    if preset_name == "auto":
        preset_name = "reduced" if data.input_shape[-1] <= 8 else "full"
    preset = dict(PRESETS[preset_name])
    ops = tuple(o.strip() for o in config["ops"].split(",") if o.strip()) or preset["ops"]
    try:
        space = SpaceConfig(
            ops=ops,
            nodes=config["nodes"] or preset["nodes"],
            cells=config["cells"] or preset["cells"],
            channels=config["channels"] or preset["channels"],
            in_channels=data.input_shape[0],
            num_classes=data.num_classes,
        ).validate()
    except ValueError as err:  # an unknown or repeated op name: the same in every trial
        raise ConfigError(f"search space: {err}") from None
    retrain = {
        "channels": config["retrain_channels"] or preset["retrain_channels"],
        "cells": config["retrain_cells"] or preset["retrain_cells"],
    }
    return space, retrain


def pick_device(name: str) -> torch.device:
    """`auto` uses CUDA when present; asking for CUDA without it is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA device is available here; use "
                          "device=auto or cpu, or --address of a Ray cluster with GPUs")
    return torch.device(name)
