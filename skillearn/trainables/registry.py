"""Name -> skill lookup. Skill modules are imported on first use to keep start-up fast.

Besides the built-in skills, any installed distribution can add skills through the
`skillearn.skills` entry-point group (`name = "module"` or `"module:ATTRIBUTE"`, a `Skill`;
a module means its `SKILL`), with no edit of skillearn. A built-in name cannot be taken over.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from skillearn.knobs import ConfigError, Knob, Skill, parse_level_methods
from skillearn.mlo.order import ORDERS, update_order
from skillearn.trainables.backbone_knobs import apply_backbone
from skillearn.trainables.common import COMMON_KNOBS, KIND_KNOBS

_SKILL_MODULES: dict[str, str] = {
    "darts": "skillearn.trainables.darts",
    "lfm": "skillearn.trainables.lfm",
    "mwnet": "skillearn.trainables.mwnet",
    "mwnet_nas": "skillearn.trainables.mwnet_nas",
    "lfm_dr": "skillearn.trainables.lfm_dr",
    "lpt": "skillearn.trainables.lpt",
    "il": "skillearn.trainables.il",
    "fair": "skillearn.trainables.fair",
    "robust": "skillearn.trainables.robust",
    "ce": "skillearn.trainables.baselines:CE",
    "focal": "skillearn.trainables.baselines:FOCAL",
    "class_balanced": "skillearn.trainables.baselines:CLASS_BALANCED",
}


ENTRY_POINT_GROUP = "skillearn.skills"


def plugin_skills() -> dict[str, EntryPoint]:
    """Skills of installed distributions (entry-point group `skillearn.skills`), by name.

    Read on every call (a scan of sys.path's metadata, milliseconds), so a distribution
    installed or put on sys.path after start-up is seen.
    """
    found: dict[str, EntryPoint] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _SKILL_MODULES:
            warnings.warn(f"skill plugin {entry.value!r} is ignored: {entry.name!r} is a "
                          "built-in skill; register it under another name", stacklevel=2)
            continue
        found.setdefault(entry.name, entry)  # the first on sys.path wins, as for imports
    return found


def available_skills() -> list[str]:
    """Names accepted by `get_skill` and `skillearn sweep`: built-in and installed plugins."""
    return sorted({*_SKILL_MODULES, *plugin_skills()})


def get_skill(name: str) -> Skill:
    """The skill called `name`; an unknown name raises ConfigError listing the known ones."""
    if name in _SKILL_MODULES:
        module, _, attribute = _SKILL_MODULES[name].partition(":")  # "module" or "module:ATTR"
        return getattr(importlib.import_module(module), attribute or "SKILL")
    plugin = plugin_skills().get(name)
    if plugin is None:
        raise ConfigError(
            f"unknown skill {name!r}; available: {', '.join(available_skills())}"
        )
    return _load_plugin(plugin)


def _load_plugin(entry: EntryPoint) -> Skill:
    """The Skill an entry point names, checked: trials look it up again by its name."""
    where = f"skill plugin {entry.name!r} ({entry.value})"
    try:
        loaded = entry.load()
    except Exception as err:  # a broken plugin: say which, not a traceback from importlib
        raise ConfigError(f"{where} cannot be loaded: {type(err).__name__}: {err}") from None
    skill = getattr(loaded, "SKILL", None) if not entry.attr else loaded
    if not isinstance(skill, Skill):
        raise ConfigError(f"{where} is not a skillearn Skill (a module must define SKILL)")
    if skill.name != entry.name:
        raise ConfigError(f"{where} holds the skill {skill.name!r}; the entry point's name "
                          "must be the skill's name")
    return skill


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
    check_level_methods(skill, config["level_methods"])
    apply_backbone(knobs, config, overrides or {})
    if config["method"] not in skill.methods:
        raise ConfigError(
            f"skill {skill.name!r} does not support method {config['method']!r}; "
            f"use one of {', '.join(skill.methods)}"
        )
    return config


def check_level_methods(skill: Skill, text: str) -> None:
    """Every `level_methods` entry names one of the skill's lower levels and a method the
    skill takes."""
    chosen = parse_level_methods(text)
    if chosen and not skill.levels:
        raise ConfigError(f"level_methods: skill {skill.name!r} declares no level names; set "
                          "method for all levels instead")
    for level, method in chosen.items():
        if level not in skill.levels[:-1]:
            raise ConfigError(f"level_methods: {level!r} is not a lower level of skill "
                              f"{skill.name!r} (lower levels: {', '.join(skill.levels[:-1])})")
        if method not in skill.methods:
            raise ConfigError(f"level_methods: skill {skill.name!r} does not support method "
                              f"{method!r} for {level!r}; use one of {', '.join(skill.methods)}")


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
