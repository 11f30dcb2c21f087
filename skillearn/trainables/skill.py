"""A skill is data: its knobs (with the seed paper's defaults and tuning ranges) and a builder.

The builder turns a resolved config into levels for the multilevel engine; the common runner
(`skillearn.trainables.runner`) owns everything else — data, devices, seeds, checkpoints,
reporting — so a new skill is a short module.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KnobValue = float | int | str | bool


class ConfigError(ValueError):
    """A config value is unknown or out of range; the message says which and what is allowed."""


@dataclass(frozen=True)
class Knob:
    """One setting of a skill.

    `low`/`high` bound both validation and the outer (Optuna) search; `tune=True` puts the knob
    in a sweep's search space by default. `when={"other": value or (values…)}` makes the knob
    conditional: it is only searched when the other knobs took one of those values (a
    define-by-run space, e.g. the width of MW-Net's second layer only when it has two).
    `search=(lo, hi)` narrows the tuned range without narrowing what a user may set.
    """

    default: KnobValue
    help: str = ""
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[KnobValue, ...] | None = None
    tune: bool = False
    when: Mapping[str, Any] | None = None
    search: tuple[float, float] | None = None

    def search_range(self) -> tuple[float | None, float | None]:
        """The range a sweep searches: `search` when given (a narrower, sensible range than
        what validation accepts), else [low, high]."""
        return self.search if self.search is not None else (self.low, self.high)

    def check(self, name: str, value: Any) -> None:
        """Raise ConfigError when `value` is not allowed for this knob."""
        if self.choices is not None:
            if value not in self.choices:
                raise ConfigError(f"{name}={value!r} is not one of {list(self.choices)}")
            return
        if isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {value!r}")
            return
        if isinstance(self.default, int | float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if isinstance(self.default, int) and not float(value).is_integer():
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            if not math.isfinite(float(value)):
                raise ConfigError(f"{name} must be finite, got {value!r}")
            if self.low is not None and value < self.low:
                raise ConfigError(f"{name}={value} is below its minimum {self.low}")
            if self.high is not None and value > self.high:
                raise ConfigError(f"{name}={value} is above its maximum {self.high}")


@dataclass(frozen=True)
class Skill:
    """A learning skill: its name, knobs, and the function that declares its levels."""

    name: str
    summary: str
    knobs: Mapping[str, Knob]
    build: Callable[..., Any]
    kind: str = "nas"
    methods: tuple[str, ...] = ("first_order", "finite_difference", "exact")
    metric: str = "val_acc"
    mode: str = "max"
    # level names, lowest first: lets `order` name them and be checked before a trial starts
    levels: tuple[str, ...] = ()

    def tuned_knobs(self) -> dict[str, Knob]:
        """The knobs a sweep searches over unless told otherwise."""
        return {name: knob for name, knob in self.knobs.items() if knob.tune}
