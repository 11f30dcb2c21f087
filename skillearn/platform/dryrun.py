"""A sweep's dry run: every trial's set-up done once in the driver, before Ray starts.

`validate_sweep` checks the request; this goes further and does what each trial will do before
its first step — resolve its config exactly as `run_skill` will (types included), build the data
spec and (for the embedded datasets) load the data, resolve the search space and the device, and
build the skill — so a mistake that would fail every trial fails once, here, in one line. A TPE
sweep's trials differ only in the searched knobs, so the dry run tries the corners of the search
space (every knob at the low end, then at the high end); a `--seeds` sweep tries every seed.

It also creates the sweep's storage folder, so an unwritable or impossible path is found now.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from skillearn.errors import SkillearnError
from skillearn.knobs import Knob, Skill
from skillearn.platform.validate import SweepSpec, UsageError
from skillearn.trainables.registry import get_skill, resolve_config

# Datasets small enough to load in the driver (milliseconds); file-backed ones (CIFAR,
# ImageFolder) get the data layer's root checks only, their trials load them.
LOADED_IN_DRY_RUN = frozenset({"digits", "synthetic"})


def dry_run(spec: SweepSpec) -> None:
    """Raise UsageError (one line) for anything that would fail every trial of `spec`."""
    if spec.resume:
        return  # a resumed sweep runs the settings it was started with (checked then)
    skill = get_skill(spec.skill)
    seen_data: dict[Any, Any] = {}
    for label, config in trial_configs(spec, skill):
        try:
            _set_up_trial(skill, config, seen_data, here=not spec.address)
            _check_placement(spec, config)
        except SkillearnError as err:
            raise UsageError(f"{label}: {err}") from None
    make_storage(spec)


def trial_configs(spec: SweepSpec, skill: Skill) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, config) of representative trials: each seed, or the search space's corners —
    the config as Ray hands it to the trial (fixed settings plus the suggested values)."""
    from skillearn.platform.search_space import define_by_run
    from skillearn.platform.sweep import SKILL_KEY, fixed_settings

    if spec.seeds:
        for seed in spec.seeds:
            yield f"the trial with seed {seed}", {**spec.config, "seed": seed}
        return
    fixed = {k: v for k, v in fixed_settings(spec, skill).items() if k != SKILL_KEY}
    space = define_by_run(skill, fixed)  # also checks every searched knob has a range
    for end in ("low", "high"):
        suggested = _corner(space, end)
        yield f"a trial with the searched knobs at their {end} end", {**suggested, **fixed}


def _corner(space: Any, end: str) -> dict[str, Any]:
    """The values an Optuna trial suggests when every searched knob is at one end of its range
    (conditional knobs included only where their condition holds)."""
    import optuna

    params = {name: _end_value(knob, end) for name, knob in space.knobs.items()}
    trial = optuna.trial.FixedTrial(params)
    space(trial)
    return dict(trial.params)


def _end_value(knob: Knob, end: str) -> Any:
    if knob.choices is not None:
        return knob.choices[0 if end == "low" else -1]
    if isinstance(knob.default, bool):
        return end == "high"
    low, high = knob.search_range()
    value = low if end == "low" else high
    return int(value) if isinstance(knob.default, int) else float(value)


def _check_placement(spec: SweepSpec, config: Mapping[str, Any]) -> None:
    if config.get("device") == "cuda" and not spec.gpus_per_trial:
        raise UsageError("device=cuda but --gpus-per-trial is 0, so Ray gives the trials no GPU; "
                         "pass --gpus-per-trial 1 (or a fraction such as 0.5)")


def _set_up_trial(
    skill: Skill, config: Mapping[str, Any], seen_data: dict[Any, Any], here: bool = True
) -> None:
    """What `run_skill` does before its first step, short of training. `here`: the trials run
    on this machine (local Ray), so its devices are theirs."""
    from skillearn.data import check_data_spec, data_spec
    from skillearn.trainables.backbones import BackboneRun  # the skill on its backbone
    from skillearn.trainables.retraining import plan_retrain
    from skillearn.trainables.setup import Setup, pick_device, resolve_space

    cfg = resolve_config(skill, {k: v for k, v in config.items() if not k.startswith("_")})
    device = pick_device(cfg["device"] if here else "cpu")
    spec = data_spec(cfg)
    check_data_spec(spec)
    if spec.name not in LOADED_IN_DRY_RUN:
        _check_meta_fits(spec)
        return
    if spec not in seen_data:
        seen_data[spec] = _load_small(spec)
    data = seen_data[spec]
    space, _ = resolve_space(cfg, data)
    if cfg["retrain_epochs"]:
        plan_retrain(cfg, data, epochs=cfg["retrain_epochs"])
    try:
        BackboneRun(skill, Setup(config=cfg, data=data, device=device, space=space))
    except SkillearnError:
        raise
    except (ValueError, TypeError, RuntimeError) as err:
        message = " ".join(str(err).split())[:300]
        raise UsageError(f"setting up the trial fails: {type(err).__name__}: {message}") from None


# Training images per class of the datasets with a fixed size (the val split is a fraction).
IMAGES_PER_CLASS = {"cifar10": 5000, "cifar100": 500}


def _check_meta_fits(spec: Any) -> None:
    """The meta set is carved from the train split: without loading a fixed-size dataset, its
    train split per class is known (a borderline case is still caught in the trial)."""
    per_class = IMAGES_PER_CLASS.get(spec.name)
    if not per_class:
        return
    train_per_class = per_class * (1.0 - spec.val_fraction)
    if spec.meta_per_class >= train_per_class:
        raise UsageError(
            f"meta_per_class={spec.meta_per_class} but {spec.name}'s train split has about "
            f"{int(train_per_class)} examples per class; lower meta_per_class or val_fraction"
        )


@functools.lru_cache(maxsize=4)
def _load_small(spec: Any) -> Any:
    """An embedded dataset, loaded once per process (specs are frozen, so they are keys)."""
    from skillearn.data import load_data

    return load_data(spec)


def make_storage(spec: SweepSpec) -> None:
    """Create the sweep's local folder now (remote storage is created by Ray)."""
    if "://" in spec.storage:
        return
    path = Path(spec.path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"cannot create the sweep folder {path} ({os.strerror(err.errno or 0) or err}); "
            "pick a writable --storage or a shorter --name"
        ) from None
