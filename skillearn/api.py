"""The Python API: a skill as a Ray Tune trainable, and a whole sweep as one call.

`trainable` is for people with their own Tune code (any searcher, scheduler, callbacks):

    tuner = tune.Tuner(skillearn.trainable("lfm", dataset="digits", epochs=2),
                       param_space={"w_lr": tune.loguniform(1e-3, 1e-1)},
                       tune_config=tune.TuneConfig(metric="val_acc", mode="max", num_samples=4))

`sweep` is `skillearn sweep` from a notebook: the same checks and dry run (a mistake raises a
SkillearnError before Ray starts), the same Optuna TPE + ASHA + MLflow sweep, and the trials come
back as a pandas DataFrame. Both check their settings against the skill's knobs up front, and
import Ray, torch and MLflow only when they run.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from skillearn.artifacts import ARTIFACTS_KEY, GenotypeArtifact, find_artifact
from skillearn.knobs import ConfigError
from skillearn.platform.validate import SweepRequest, absolute_paths, validate_sweep
from skillearn.trainables.registry import get_skill, resolve_config

if TYPE_CHECKING:  # pragma: no cover - typing only
    import pandas as pd

__all__ = ["search_space", "sweep", "trainable"]


def trainable(skill: str, **settings: Any) -> Callable[[dict[str, Any]], None]:
    """A Ray Tune function trainable running `skill` with `settings` (knob=value).

    Tune's `param_space` supplies (and overrides) the rest per trial; every epoch is reported
    to Tune with its metrics (the skill's `metric`, e.g. `val_acc`) and a checkpoint, so
    schedulers may stop or pause trials and failed trials resume. Wrap it in
    `tune.with_resources` for more than one CPU per trial. Unknown skills and bad settings raise
    a ConfigError here, before Ray starts; a bad value from the param space fails its trial.
    """
    from skillearn.data import check_data_spec, data_spec

    chosen = get_skill(skill)
    fixed = absolute_paths(settings)
    check_data_spec(data_spec(resolve_config(chosen, fixed)))  # types, ranges, data: now
    name = chosen.name

    def run(config: dict[str, Any]) -> None:
        from skillearn.platform.sweep import SKILL_KEY, skillearn_trial

        skillearn_trial({**fixed, **config, SKILL_KEY: name})

    run.__name__ = run.__qualname__ = f"skillearn_{name}"  # Tune names experiments after it
    run.__doc__ = f"Ray Tune trainable of the skillearn skill {name!r}: {chosen.summary}"
    return run


def search_space(skill: str, **pinned: Any) -> dict[str, Any]:
    """The skill's tuned knobs (those not in `pinned`) as a Ray Tune `param_space`, with the
    ranges `skillearn sweep` searches: `tune.choice`, `tune.(log)uniform`, `tune.(log)randint`.

    Knobs searched only under a condition (`Knob.when`) are left out, so they keep their
    defaults: a plain param_space cannot say "only when"; `sweep` searches them.
    """
    from ray import tune

    chosen = get_skill(skill)
    resolve_config(chosen, pinned)  # unknown names and bad values fail here
    space: dict[str, Any] = {}
    for name, knob in chosen.tuned_knobs().items():
        if name in pinned or knob.when:
            continue
        if knob.choices is not None or isinstance(knob.default, bool):
            space[name] = tune.choice(list(knob.choices or (False, True)))
            continue
        low, high = knob.search_range()
        if low is None or high is None:  # a skill's declaration error, as in `sweep`
            raise ConfigError(f"knob {name!r} of skill {skill!r} is tuned but has no range")
        if isinstance(knob.default, int):  # randint's upper bound is exclusive
            sample = tune.lograndint if knob.log else tune.randint
            space[name] = sample(int(low), int(high) + 1)
        else:
            space[name] = (tune.loguniform if knob.log else tune.uniform)(low, high)
    return space


def sweep(skill: str, **arguments: Any) -> pd.DataFrame:
    """Run `skillearn sweep` from Python; one row per trial (its last report and `config/*`),
    best first by the skill's metric.

    `arguments` are the command's options, named and defaulted as `SweepRequest`'s fields
    (`samples=8`, `seeds`, `storage`, `name`, `tracking_uri`, `experiment`, `address`,
    `resume`, `concurrency`, `cpus_per_trial`, `gpus_per_trial`, `asha`, `optuna_storage`),
    and knob values (`dataset="digits", epochs=2`); a tuned knob given here is pinned and
    leaves the search. Everything is checked, and every trial's set-up tried once, before Ray
    starts: a mistake raises a SkillearnError naming it. A Ray already initialised by the
    caller is used (and left running); otherwise a local one is started for the sweep and shut
    down after. Raises RuntimeError when every trial failed; warns when MLflow writes were left
    in the sweep's backlog (`frame.attrs["unsent_writes"]`).
    """
    from skillearn.platform.dryrun import dry_run
    from skillearn.platform.sweep import SKILL_KEY, fit_sweep

    options = {f.name for f in fields(SweepRequest)} - {"skill", "overrides"}
    settings = {k: v for k, v in arguments.items() if k not in options}
    spec = validate_sweep(SweepRequest(
        skill, settings, **{k: v for k, v in arguments.items() if k in options}))
    dry_run(spec)
    results = fit_sweep(spec)
    if results.num_errors == len(results):
        raise RuntimeError(f"all {len(results)} trials of sweep {spec.name} failed; their "
                           f"errors are in {spec.path}")
    chosen = get_skill(spec.skill)
    frame = _with_genotypes(
        results.get_dataframe().drop(columns=[f"config/{SKILL_KEY}"], errors="ignore"))
    if chosen.metric in frame:
        frame = frame.sort_values(chosen.metric, ascending=chosen.mode == "min",
                                  na_position="last", ignore_index=True)
    from skillearn.platform.tracking import unsent_writes

    unsent = unsent_writes(spec.path, spec.name)  # the tracker said how to send them
    if unsent:
        warnings.warn(f"{unsent} MLflow writes of sweep {spec.name} wait in its backlog; send "
                      f"them with `skillearn sync {spec.path}`", stacklevel=2)
    frame.attrs.update(skill=spec.skill, name=spec.name, path=spec.path,
                       tracking_uri=spec.tracking_uri, experiment=spec.experiment,
                       metric=chosen.metric, mode=chosen.mode, unsent_writes=unsent)
    return frame


def _with_genotypes(frame: pd.DataFrame) -> pd.DataFrame:
    """A trial's declared artifacts are files in MLflow, not columns; a NAS trial's genotype
    stays a column (JSON, as `skillearn retrain --genotype` reads it)."""
    if ARTIFACTS_KEY not in frame:
        return frame

    def genotype_of(artifacts: Any) -> str | None:
        found = find_artifact({ARTIFACTS_KEY: artifacts}, GenotypeArtifact)
        return json.dumps(found.genotype) if found else None

    genotypes = frame[ARTIFACTS_KEY].map(
        lambda value: genotype_of(value) if isinstance(value, list) else None)
    frame = frame.drop(columns=[ARTIFACTS_KEY])
    if genotypes.notna().any():
        frame["genotype"] = genotypes
    return frame
