"""Compatibility name: the skill vocabulary lives in `skillearn.knobs` (below every layer that
uses it); new code imports from there."""

from skillearn.knobs import ConfigError, Knob, KnobValue, Skill

__all__ = ["ConfigError", "Knob", "KnobValue", "Skill"]
