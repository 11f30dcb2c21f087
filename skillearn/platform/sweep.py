"""Build and run a Ray Tune sweep of one skill: Optuna TPE + ASHA + MLflow, resumable.

Declarative on purpose: `build_tuner` only assembles Ray Tune objects from a checked
`SweepSpec`; the trial itself is `skillearn_trial`, a plain function of its config that hands the
work to the common runner and forwards its per-epoch reports to Tune.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from skillearn.knobs import Skill
from skillearn.platform.redact import redact
from skillearn.platform.validate import SweepSpec, write_sweep_record
from skillearn.trainables.registry import get_skill

SKILL_KEY = "_skill"
STATE_SNAPSHOT_S = 1.0


def skillearn_trial(config: dict[str, Any]) -> None:
    """One Ray Tune trial: run the skill, report each epoch (with its checkpoint) to Tune.

    Restarts (a failed trial retried, or a resumed sweep) continue from Tune's latest checkpoint.
    Every report also says where the trial runs (`node_id`, `node_ip`, `pid`, `hardware`): the
    tracker tags the trial's MLflow run with them, and a test can find the worker process.
    """
    import logging

    from ray import tune

    from skillearn.trainables.runner import run_skill

    # Ray logs every saved checkpoint at INFO from inside the trial; one line per epoch and
    # trial drowns the sweep's own progress lines.
    for name in ("ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)

    skill = config[SKILL_KEY]
    settings = {k: v for k, v in config.items() if k != SKILL_KEY}
    where = trial_location()

    def report(metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report({**metrics, **where}, checkpoint=checkpoint)

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        run_skill(skill, settings, report)
        return
    with checkpoint.as_directory() as resume_from:
        run_skill(skill, settings, report, resume_from=resume_from)


def trial_location() -> dict[str, Any]:
    """The Ray node (id and IP), the process this trial runs in and its hardware in words."""
    import ray

    from skillearn.platform.hardware import HARDWARE_TAG, describe_hardware

    context = ray.get_runtime_context()
    return {"node_id": context.get_node_id(), "node_ip": ray.util.get_node_ip_address(),
            "pid": os.getpid(), HARDWARE_TAG: describe_hardware()}


def trial_dirname(trial: Any) -> str:
    """Short trial folders (Ray's default packs every config value into the name)."""
    return f"trial_{trial.trial_id}"


def fixed_settings(spec: SweepSpec, skill: Skill) -> dict[str, Any]:
    """Every resolved setting except the tuned knobs the user left open (those are searched)."""
    searched = {k for k in skill.tuned_knobs() if k not in spec.overrides}
    fixed = {k: v for k, v in spec.config.items() if k not in searched}
    fixed[SKILL_KEY] = spec.skill
    return fixed


def trial_resources(spec: SweepSpec) -> dict[str, float]:
    """What one trial asks Ray for: CPUs, GPUs and the --trial-resource custom resources."""
    return {"cpu": spec.cpus_per_trial, "gpu": spec.gpus_per_trial, **spec.trial_resources}


def trials_that_fit(spec: SweepSpec, available: Mapping[str, float]) -> int:
    """How many trials the cluster's resources (Ray's names: CPU, GPU, custom) hold right now."""
    asked = {"CPU": spec.cpus_per_trial, "GPU": spec.gpus_per_trial, **spec.trial_resources}
    return int(min(available.get(name, 0.0) // amount for name, amount in asked.items()
                   if amount > 0))


def default_concurrency(spec: SweepSpec, available: Mapping[str, float]) -> int:
    """Trials at once: --concurrency, else as many as the cluster holds now (at least 1, at
    most N). An autoscaling cluster that starts without workers holds none: say how to let it
    grow (it only adds nodes for trials that are waiting)."""
    if spec.concurrency is not None:
        return spec.concurrency
    fits = trials_that_fit(spec, available)
    if fits == 0 and spec.address:
        print("skillearn: the cluster has no room for a trial yet (an autoscaler adds nodes "
              "for waiting trials): running one trial at a time; pass --concurrency N to have N "
              "trials ask for nodes at once", file=sys.stderr)
    return max(1, min(spec.samples, fits))


def build_tuner(spec: SweepSpec, concurrency: int) -> Any:
    """The `tune.Tuner` of a sweep (or the restored one with --resume)."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from skillearn.platform.progress import ProgressPrinter
    from skillearn.platform.retry import RetryPolicy
    from skillearn.platform.search_space import define_by_run
    from skillearn.platform.study_storage import study_storage
    from skillearn.platform.tracking import MlflowTracker

    skill = get_skill(spec.skill)
    trainable = tune.with_resources(skillearn_trial, trial_resources(spec))
    if spec.resume:
        # Searcher, scheduler and callbacks come back from the sweep's tuner.pkl; finished trials
        # are kept, unfinished and errored ones continue from their last checkpoint.
        return tune.Tuner.restore(
            spec.path, trainable=trainable, resume_unfinished=True,
            resume_errored=True, restart_errored=False,
        )

    fixed = fixed_settings(spec, skill)
    param_space: dict[str, Any] = {}
    searcher = None
    if spec.seeds:
        # no search: the given settings (tuned knobs at their defaults unless set), once per seed
        fixed = {**spec.config, SKILL_KEY: spec.skill}
        param_space = {**fixed, "seed": tune.grid_search(list(spec.seeds))}
    else:
        sampler = optuna.samplers.TPESampler(
            seed=int(spec.config["seed"]), n_startup_trials=min(4, spec.samples),
            constant_liar=True,
        )
        # With a database storage the TPE history (every told trial) outlives the driver, and a
        # study on the tracking server's database sits beside the sweep's MLflow runs.
        storage = study_storage(spec.optuna_storage)
        searcher = OptunaSearch(
            space=define_by_run(skill, fixed), metric=skill.metric, mode=skill.mode,
            sampler=sampler, storage=storage,
            study_name=spec.name if storage is not None else None,
        )
    scheduler = None
    early_stopping = spec.asha and not spec.seeds and skill.early_stopping
    if early_stopping:
        max_t = int(spec.config["epochs"])
        scheduler = ASHAScheduler(
            time_attr="training_iteration", max_t=max_t, grace_period=1 if max_t < 4 else 2,
            reduction_factor=2,
        )
    searched = [k for k in skill.tuned_knobs() if k not in fixed]  # in the skill's order
    tracker = MlflowTracker(
        spec.tracking_uri, spec.experiment, spec.name, spec.path,
        tags={"skill": spec.skill, "dataset": spec.config["dataset"],
              "seed": spec.config["seed"]},
        params={
            **{k: v for k, v in fixed.items() if k != SKILL_KEY},
            "samples": spec.samples, "concurrency": concurrency,
            "asha": early_stopping, "seeds": list(spec.seeds or []),
            "cpus_per_trial": spec.cpus_per_trial, "gpus_per_trial": spec.gpus_per_trial,
            "trial_resources": ",".join(f"{k}={v:g}" for k, v in
                                        sorted(spec.trial_resources.items())) or "-",
            "searched": ",".join(sorted(searched)) or "-",
            "optuna_storage": redact(spec.optuna_storage) or "memory",
        },
        metric=skill.metric, mode=skill.mode,
        name_knobs=["seed"] if spec.seeds else searched,  # what differs between its trials
    )
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=skill.metric, mode=skill.mode, search_alg=searcher, scheduler=scheduler,
            num_samples=1 if spec.seeds else spec.samples, max_concurrent_trials=concurrency,
            trial_dirname_creator=trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=spec.storage,
            callbacks=[RetryPolicy(), tracker,
                       ProgressPrinter(skill.metric, skill.mode, spec.samples,
                                       int(spec.config["epochs"]))],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            failure_config=tune.FailureConfig(max_failures=2),
            verbose=0,  # ProgressPrinter gives one line per event instead
        ),
    )


def summarize_best(results: Any, metric: str, mode: str, searched: list[str]) -> dict[str, Any]:
    """The best trial of a finished sweep as a flat dict (for the table and the caller)."""
    from skillearn.artifacts import GenotypeArtifact, find_artifact
    from skillearn.platform.report import short_genotype

    best = results.get_best_result(metric=metric, mode=mode)
    last = best.metrics or {}
    config = best.config or {}
    row: dict[str, Any] = {"trial_id": last.get("trial_id"), metric: last.get(metric)}
    for key in ("test_acc", "worst_class_acc", "epoch"):
        if key in last:
            row[key] = last[key]
    for key in searched:
        if key in config:
            row[key] = config[key]
    genotype = find_artifact(last, GenotypeArtifact)
    row["genotype"] = short_genotype(json.dumps(genotype.genotype)) if genotype else None
    row["path"] = best.path
    return row


def _init_ray(spec: SweepSpec) -> None:
    import ray

    if spec.address:
        ray.init(address=spec.address, log_to_driver=True)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True)


def fit_sweep(spec: SweepSpec) -> Any:
    """Run (or resume) the sweep; its Ray Tune `ResultGrid`. Starts a local Ray for the sweep
    and shuts it down after, unless one is already running (the caller's is left alone)."""
    import ray

    # Tune snapshots the sweep state at most every 10 s by default; a sweep killed in that window
    # would re-run trials that had already finished. Small sweeps snapshot cheaply, so do it often
    # (a user's own setting wins).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_SNAPSHOT_S))
    if not spec.resume:
        write_sweep_record(spec.path, spec.skill, spec.name, str(spec.config["dataset"]),
                           spec.optuna_storage)
    started = not ray.is_initialized()
    if started:
        _init_ray(spec)
    try:
        available = ray.cluster_resources()
        return build_tuner(spec, default_concurrency(spec, available)).fit()
    finally:
        if started:
            ray.shutdown()


def run_sweep(spec: SweepSpec) -> dict[str, Any] | None:
    """Run (or resume) the sweep; print and return the best trial (None when all failed)."""
    import pandas as pd

    skill = get_skill(spec.skill)
    results = fit_sweep(spec)
    searched = sorted(k for k in skill.tuned_knobs() if k not in spec.overrides)
    if results.num_errors:  # each failure was printed as it happened (one line each)
        print(
            f"skillearn: {results.num_errors} of {len(results)} trials failed; their errors "
            f"are in {spec.path} and tagged `error` in MLflow",
            file=sys.stderr,
        )
    if results.num_errors == len(results):
        return None
    best = summarize_best(results, skill.metric, skill.mode, searched)
    print(f"\nbest trial of sweep {spec.name} ({skill.metric}, {skill.mode}):")
    with pd.option_context("display.max_colwidth", 500):
        print(pd.Series(best, dtype=object).to_string())
    print(f"\nsee all trials: skillearn report --tracking-uri {redact(spec.tracking_uri)} "
          f"--experiment {spec.experiment}")
    return best


def sweep_overrides(values: Mapping[str, Any]) -> dict[str, Any]:
    """Drop unset CLI flags (None) so the skill's own defaults apply."""
    return {k: v for k, v in values.items() if v is not None}
