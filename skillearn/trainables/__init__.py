"""Skills: each module declares a skill's levels, losses and knobs; the runner does the rest."""

from skillearn.knobs import ConfigError, Knob, Skill
from skillearn.trainables.registry import all_knobs, available_skills, get_skill, resolve_config

__all__ = [
    "ConfigError",
    "Knob",
    "Skill",
    "all_knobs",
    "available_skills",
    "get_skill",
    "resolve_config",
]
