"""A skill is data: its knobs (with the seed paper's defaults and tuning ranges) and a builder.

The builder turns a resolved config into levels for the multilevel engine; the common runner
(`skillearn.trainables.runner`) owns everything else — data, devices, seeds, checkpoints,
reporting — so a new skill is a short module.

This module sits below both the skills (`skillearn.trainables`) and the driver
(`skillearn.platform`) and imports neither, nor Ray, MLflow or torch: the driver validates
knobs and builds search spaces from these declarations without touching trial code.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillearn.errors import SkillearnError
from skillearn.mlo.methods import METHODS

KnobValue = float | int | str | bool


class ConfigError(SkillearnError):
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
        self.coerce(name, value)

    def coerce(self, name: str, value: Any) -> KnobValue:
        """`value` as this knob's type (an int for an int knob, a float for a float knob), or
        ConfigError saying why it is not allowed.

        Strict on purpose: a trial uses exactly what this returns, so `epochs: 1.0` or
        `ops: [a, b]` is refused here, up front, rather than failing in every trial.
        """
        value = self._typed(name, value)
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{name}={_shown(value, typed=False)} is not one of "
                              f"{list(self.choices)}")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.low is not None and value < self.low:
                raise ConfigError(f"{name}={value} is below its minimum {self.low}")
            if self.high is not None and value > self.high:
                raise ConfigError(f"{name}={value} is above its maximum {self.high}")
        return value

    def _typed(self, name: str, value: Any) -> KnobValue:
        default = self.default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, got {_shown(value)}")
            return value
        if isinstance(default, str):
            if isinstance(value, bool) and self.choices is not None:
                # YAML 1.1 reads on/off/yes/no as booleans
                raise ConfigError(
                    f"{name}={value!r} is not one of {list(self.choices)}; YAML reads on/off/"
                    f"yes/no as true/false, so quote the word (e.g. {name}: \"on\")"
                )
            if not isinstance(value, str):
                raise ConfigError(f"{name} must be text, got {_shown(value)}")
            if len(value) > MAX_TEXT_LEN:
                raise ConfigError(f"{name} is {len(value)} characters long; at most "
                                  f"{MAX_TEXT_LEN} are allowed")
            if any(ord(c) < 32 or c == "\x7f" for c in value):
                raise ConfigError(f"{name} must not contain control characters, got "
                                  f"{_shown(value, typed=False)}")
            if not _is_utf8(value):
                raise ConfigError(f"{name} is not valid UTF-8 text, got "
                                  f"{_shown(value, typed=False)}")
            return value
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"{name} must be a number, got {_shown(value)}")
        try:
            finite = math.isfinite(float(value))
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise ConfigError(f"{name} must be finite and in range, got {_shown(value)}")
        if isinstance(default, int):
            if not isinstance(value, numbers.Integral):
                raise ConfigError(f"{name} must be an integer, got {value!r}")
            return int(value)
        return float(value)


MAX_TEXT_LEN = 1024


def _is_utf8(text: str) -> bool:
    """False for strings holding undecodable bytes (Python keeps non-UTF-8 command-line bytes
    as lone surrogates), which no log, JSON file or MLflow store can take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _shown(value: Any, typed: bool = True) -> str:
    """A value in an error message: its repr, cut short, and its type when that is the point."""
    if isinstance(value, list | tuple | dict | set):  # nested YAML aliases: never repr in full
        return f"a {type(value).__name__} of {len(value)} item(s)"
    if isinstance(value, int) and value.bit_length() > 64:  # repr of a huge int can fail
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({type(value).__name__})" if typed else text


@dataclass(frozen=True)
class Skill:
    """A learning skill: its name, knobs, and the function that declares its levels."""

    name: str
    summary: str
    knobs: Mapping[str, Knob]
    build: Callable[..., Any]
    kind: str = "nas"
    methods: Sequence[str] = METHODS  # hypergradient methods it takes (mlo.methods' names)
    metric: str = "val_acc"
    mode: str = "max"
    # False: a sweep never stops this skill's trials early (ASHA off), so the searcher is told
    # full-budget results — for skills whose schedule changes the ranking late (mwnet_nas).
    early_stopping: bool = True
    # level names, lowest first: lets `order` name them and be checked before a trial starts
    levels: tuple[str, ...] = ()

    def tuned_knobs(self) -> dict[str, Knob]:
        """The knobs a sweep searches over unless told otherwise."""
        return {name: knob for name, knob in self.knobs.items() if knob.tune}


def parse_level_methods(text: str) -> dict[str, str]:
    """The `level_methods` knob as {level: method}; ConfigError for a malformed entry (the
    names themselves are checked against the skill in `registry.check_level_methods`)."""
    methods: dict[str, str] = {}
    for entry in (e.strip() for e in text.split(",") if e.strip()):
        level, sep, method = (part.strip() for part in entry.partition("="))
        if not sep or not level or not method:
            raise ConfigError(f"level_methods entry {entry!r} is not level=method")
        if level in methods:
            raise ConfigError(f"level_methods names level {level!r} twice")
        methods[level] = method
    return methods
