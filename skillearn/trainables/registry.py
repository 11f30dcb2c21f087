"""Name -> skill lookup. Skill modules are imported on first use to keep start-up fast."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from skillearn.knobs import ConfigError, Knob, Skill
from skillearn.mlo.order import ORDERS, update_order
from skillearn.trainables.common import COMMON_KNOBS, KIND_KNOBS

_SKILL_MODULES: dict[str, str] = {
    "darts": "skillearn.trainables.darts",
    "lfm": "skillearn.trainables.lfm",
    "mwnet": "skillearn.trainables.mwnet",
    "mwnet_nas": "skillearn.trainables.mwnet_nas",
    "lfm_dr": "skillearn.trainables.lfm_dr",
    "ce": "skillearn.trainables.baselines:CE",
    "focal": "skillearn.trainables.baselines:FOCAL",
    "class_balanced": "skillearn.trainables.baselines:CLASS_BALANCED",
}


def available_skills() -> list[str]:
    """Names accepted by `get_skill` and `skillearn sweep`."""
    return sorted(_SKILL_MODULES)


def get_skill(name: str) -> Skill:
    """The skill called `name`; an unknown name raises ConfigError listing the known ones."""
    if name not in _SKILL_MODULES:
        raise ConfigError(
            f"unknown skill {name!r}; available: {', '.join(available_skills())}"
        )
    module, _, attribute = _SKILL_MODULES[name].partition(":")  # "module" or "module:ATTR"
    return getattr(importlib.import_module(module), attribute or "SKILL")


def all_knobs(skill: Skill) -> dict[str, Knob]:
    """Common knobs, then its kind's defaults, then the skill's own (each may override)."""
    return {**COMMON_KNOBS, **KIND_KNOBS.get(skill.kind, {}), **skill.knobs}


def resolve_config(skill: Skill, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults plus overrides, each value checked and given its knob's type; unknown keys
    (underscore-prefixed ones included) are an error, not ignored."""
    knobs = all_knobs(skill)
    config: dict[str, Any] = {name: knob.default for name, knob in knobs.items()}
    for key, value in (overrides or {}).items():
        if key not in knobs:
            raise ConfigError(
                f"unknown setting {str(key)[:80]!r} for skill {skill.name!r}; "
                f"known: {', '.join(sorted(knobs))}"
            )
        config[key] = knobs[key].coerce(key, value)
    check_order(skill, config["order"])
    if config["method"] not in skill.methods:
        raise ConfigError(
            f"skill {skill.name!r} does not support method {config['method']!r}; "
            f"use one of {', '.join(skill.methods)}"
        )
    return config


def check_order(skill: Skill, order: str) -> None:
    """`order` is top_down, bottom_up, or a permutation of the skill's level names."""
    if order in ORDERS:
        return
    if not skill.levels:
        raise ConfigError(
            f"order={order!r}: skill {skill.name!r} takes only {' or '.join(ORDERS)}"
        )
    try:
        update_order(order, skill.levels)
    except ValueError as err:
        raise ConfigError(str(err)) from None
