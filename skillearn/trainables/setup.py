"""What a skill's `build` receives (Setup) and returns (Built), and how a run picks its space.

The split keeps skills short: a skill turns a Setup into levels and a predictor; data, device,
seeding, checkpoints and reporting stay with the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from skillearn.artifacts import EpochReport
from skillearn.data import DataBundle
from skillearn.data.input_size import is_small_input
from skillearn.knobs import ConfigError, parse_level_methods
from skillearn.mlo import Level, MultilevelProgram
from skillearn.search_spaces.darts import PRESETS, SpaceConfig, SuperNet
from skillearn.search_spaces.darts.variants import make_supernet
from skillearn.trainables.architecture import ArchitectureState


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
    - `architecture`: the searched architecture of a NAS skill (reported each epoch, retrained
      at the end when asked);
    - `epoch_report()`: skill-specific metrics and artifacts, computed once per epoch.
    """

    program: MultilevelProgram
    predict: Callable[[torch.Tensor], torch.Tensor]
    modules: list[torch.nn.Module] = field(default_factory=list)
    state: dict[str, torch.Tensor] = field(default_factory=dict)
    architecture: ArchitectureState | None = None
    param_count: int = 0
    epoch_report: Callable[[], EpochReport] | None = None


def use_fused_cells(setting: str, input_shape: tuple[int, ...]) -> bool:
    """`fused_cells` knob: on, off, or auto = on for inputs up to 16 px (measured in
    benchmarks/RESULTS.md: 0.55x the edge-by-edge step at 8 px, 1.48x at 32 px on CPU)."""
    if setting == "auto":
        return is_small_input(input_shape)
    return setting == "on"


def build_supernet(setup: Setup) -> SuperNet:
    """The search space's supernet on the run's device: fused cells and NHWC where they pay."""
    net = make_supernet(setup.space, fused=use_fused_cells(setup.config["fused_cells"],
                                                           setup.data.input_shape))
    net = net.to(setup.device)
    if setup.config["channels_last"] in ("on", "auto"):
        net.use_channels_last()
    return net


# method name -> {keyword of its product: the knob that sets it} (see mlo.implicit)
METHOD_OPTION_KNOBS: dict[str, dict[str, str]] = {
    "neumann": {"iterations": "neumann_iterations", "alpha": "neumann_alpha",
                "damping": "implicit_damping"},
    "conjugate_gradient": {"iterations": "cg_iterations", "tolerance": "cg_tolerance",
                           "damping": "implicit_damping"},
}


def program_for(levels: list[Level], config: Mapping[str, Any]) -> MultilevelProgram:
    """The engine for a skill's levels, with the run's method(s), their settings, order and
    reuse settings."""
    for name, method in parse_level_methods(config["level_methods"]).items():
        for level in levels:
            if level.name == name:
                level.method = method
    options = {method: {keyword: config[knob] for keyword, knob in knobs.items()}
               for method, knobs in METHOD_OPTION_KNOBS.items()}
    return MultilevelProgram(levels, method=config["method"], order=config["order"],
                             reuse_unroll_grad=config["reuse_grad"], method_options=options)


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
