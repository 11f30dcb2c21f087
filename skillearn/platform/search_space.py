"""The outer (hyperparameter) search space of a skill, as an Optuna define-by-run function.

Define-by-run rather than a static dict of distributions so a knob can depend on another
(conditional spaces: e.g. a knob only searched for one hypergradient method). Ray's OptunaSearch
calls the function once per trial with an `optuna.Trial`; whatever it returns is added to the
trial's config, which is how the fixed settings reach the trainable.

It lives with the driver (the searcher runs there, never in a trial) and reads only the knob
declarations of `skillearn.knobs`; it may import optuna (lazily) but never Ray or MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skillearn.knobs import ConfigError, Knob, Skill

if TYPE_CHECKING:  # pragma: no cover - typing only
    import optuna


def _is_active(knob: Knob, values: Mapping[str, Any]) -> bool:
    """Whether a knob is searched given the values chosen so far.

    A knob may carry an optional `when` mapping {other_knob: value or tuple of values}; it is then
    only suggested when every named knob already has one of the listed values. Knobs without
    `when` are always active.
    """
    when = getattr(knob, "when", None)
    if not when:
        return True
    for name, allowed in when.items():
        allowed = allowed if isinstance(allowed, tuple | list | set | frozenset) else (allowed,)
        if values.get(name) not in allowed:
            return False
    return True


def _check_searchable(name: str, knob: Knob) -> None:
    """Raise ConfigError now (not inside a Ray trial) when a tuned knob has no range."""
    if knob.choices is not None or isinstance(knob.default, bool):
        return
    if not isinstance(knob.default, int | float):
        raise ConfigError(f"knob {name!r} is marked tune=True but has no choices; give it choices")
    low, high = knob.search_range()
    if low is None or high is None:
        raise ConfigError(
            f"knob {name!r} is marked tune=True but has no low/high range; set both bounds"
        )
    if knob.log and low <= 0:
        raise ConfigError(f"knob {name!r} is log-scaled, so its low bound must be > 0")


@dataclass(frozen=True)
class DefineByRun:
    """Picklable define-by-run space (Ray pickles the searcher, closures would not survive).

    Calling it suggests every active searched knob on `trial` and returns the fixed settings.
    """

    knobs: Mapping[str, Knob]
    fixed: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        values: dict[str, Any] = dict(self.fixed)
        for name, knob in self.knobs.items():
            if not _is_active(knob, values):
                continue
            values[name] = suggest(trial, name, knob)
        return dict(self.fixed)


def suggest(trial: optuna.Trial, name: str, knob: Knob) -> Any:
    """One Optuna suggestion for `knob`: categorical for choices/bools, else int or float."""
    if knob.choices is not None:
        return trial.suggest_categorical(name, list(knob.choices))
    if isinstance(knob.default, bool):
        return trial.suggest_categorical(name, [False, True])
    low, high = knob.search_range()
    if isinstance(knob.default, int):
        return trial.suggest_int(name, int(low), int(high), log=knob.log)
    return trial.suggest_float(name, float(low), float(high), log=knob.log)


def define_by_run(
    skill: Skill, fixed: Mapping[str, Any]
) -> Callable[[optuna.Trial], dict[str, Any] | None]:
    """The skill's tuned knobs not pinned in `fixed`, as an Optuna define-by-run function.

    The function does no computation (Ray warns when it is slow); it returns `fixed` so Ray adds
    the constants to each trial's config next to the suggested values.
    """
    searched = {name: knob for name, knob in skill.tuned_knobs().items() if name not in fixed}
    for name, knob in searched.items():
        _check_searchable(name, knob)
    return DefineByRun(knobs=searched, fixed=dict(fixed))
