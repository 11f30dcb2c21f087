"""`skillearn retrain`: the derive -> retrain half of the NAS protocol, for several seeds.

The genotype comes from a trial's MLflow run (its `genotype.json` artifact / tag, and the data
settings from its params) or from a JSON file. Retraining runs in this process (no Ray: one
network, one seed at a time) and its result is logged to MLflow as a run of its own, tagged
with the source run so the UI links them. Each seed's trained weights are artifacts of that
run (`network/seed_<n>.pt`, a state dict without the auxiliary head, beside `network.json`,
which describes the network they fit): `skillearn export` turns them into a standalone module.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from skillearn.platform.redact import redact
from skillearn.platform.secrets import expand_secrets
from skillearn.platform.validate import UsageError

DATA_KEYS = ("dataset", "data_root", "val_fraction", "noise_rate", "noise_type", "imbalance",
             "seed", "space", "retrain_channels", "retrain_cells", "retrain_recipe")
PLAN_KEYS = ("recipe", "epochs", "channels", "cells")  # what the recipe resolved to
NETWORK_ARTIFACTS = "network"  # the retrain run's artifact folder of trained weights
NETWORK_RECORD = "network.json"  # in it: genotype, sizes, input shape, seeds, normalisation
STEM_MULTIPLIER = 3  # DiscreteNetwork's default, which retraining uses


def weights_file(seed: int) -> str:
    """The artifact file (in NETWORK_ARTIFACTS) of one seed's trained weights."""
    return f"seed_{int(seed)}.pt"


def genotype_from_run(tracking_uri: str, run_id: str) -> tuple[str, dict[str, Any]]:
    """(genotype JSON, params) of an MLflow trial run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(expand_secrets(tracking_uri))
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise UsageError(
            f"no MLflow run {run_id!r} in {redact(tracking_uri)}: {err.message}"
        ) from None
    genotype = run.data.tags.get("genotype")
    if not genotype:
        try:
            local = client.download_artifacts(run_id, "genotype.json")
            genotype = Path(local).read_text()
        except Exception:
            raise UsageError(f"run {run_id} has no genotype (not a NAS trial?)") from None
    return genotype, dict(run.data.params)


def _typed(raw: Any, default: Any) -> Any:
    """MLflow params are strings: give them back the type of the knob's default."""
    if isinstance(default, bool) or not isinstance(default, int | float) or raw is None:
        return raw
    return type(default)(float(raw))


def retrain_settings(params: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Data and network settings for retraining: the trial's, then the user's overrides."""
    from skillearn.trainables.common import COMMON_KNOBS

    settings: dict[str, Any] = {k: COMMON_KNOBS[k].default for k in COMMON_KNOBS}
    for key in DATA_KEYS:
        if key in params:
            settings[key] = _typed(params[key], COMMON_KNOBS[key].default)
    settings.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in settings.items():  # a ConfigError says which and what is allowed
        settings[key] = COMMON_KNOBS[key].coerce(key, value)
    return settings


def retrain_seeds(
    genotype_json: str,
    settings: Mapping[str, Any],
    seeds: Sequence[int],
    epochs: int | None = None,
    weights_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Retrain the genotype once per seed (data split fixed by the trial's seed) with the
    recipe `settings["retrain_recipe"]` selects; `epochs` None: the recipe's. With
    `weights_dir`, each seed's weights and the network's description are saved there."""
    import torch

    from skillearn.data import data_spec, load_data
    from skillearn.search_spaces.darts import Genotype
    from skillearn.trainables.retraining import plan_retrain, retrain_network
    from skillearn.trainables.setup import pick_device

    genotype = Genotype.from_json(genotype_json)
    data = load_data(data_spec(settings))
    plan = plan_retrain(settings, data, epochs=epochs or 0)
    device = pick_device(settings["device"])
    print(plan.describe(), flush=True)
    every = max(1, plan.epochs // 10)
    rows = []
    for seed in seeds:
        def progress(record: dict[str, float], seed: int = seed) -> None:
            if record["epoch"] % every == 0:
                print(f"seed {seed} epoch {record['epoch']}/{plan.epochs}: train loss "
                      f"{record['train_loss']:.4f}, lr {record['lr']:.5f}, drop-path "
                      f"{record['drop_path_prob']:.3f}", flush=True)

        started = time.perf_counter()
        net, metrics = retrain_network(genotype, data, device, plan, seed, on_epoch=progress)
        if weights_dir is not None:
            torch.save({k: v.detach().cpu() for k, v in net.state_dict().items()
                        if not k.startswith("auxiliary_head.")}, weights_dir / weights_file(seed))
        metrics.update(seed=seed, seconds=round(time.perf_counter() - started, 1),
                       recipe=plan.recipe.name, epochs=plan.epochs, channels=plan.channels,
                       cells=plan.cells)
        rows.append(metrics)
        print(f"seed {seed}: test accuracy {metrics['retrain_test_acc']:.4f} "
              f"(worst class {metrics['retrain_worst_class_acc']:.4f}, "
              f"{metrics['seconds']} s)", flush=True)
    if weights_dir is not None:
        record = {
            "genotype": genotype.to_dict(), "channels": plan.channels, "cells": plan.cells,
            "num_classes": data.num_classes, "in_channels": data.input_shape[0],
            "stem_multiplier": STEM_MULTIPLIER, "input_shape": list(data.input_shape),
            "seeds": [int(s) for s in seeds], "dataset": data.name,
            "norm_mean": data.record.get("norm_mean"), "norm_std": data.record.get("norm_std"),
        }
        (weights_dir / NETWORK_RECORD).write_text(json.dumps(record, indent=1))
    return rows


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Mean and standard deviation of the retrained test accuracy over seeds."""
    accs = [r["retrain_test_acc"] for r in rows]
    worst = [r["retrain_worst_class_acc"] for r in rows]
    return {
        "retrain_test_acc_mean": statistics.fmean(accs),
        "retrain_test_acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "retrain_worst_class_acc_mean": statistics.fmean(worst),
        "retrain_params": float(rows[0]["retrain_params"]),
    }


def log_retrain(
    tracking_uri: str, experiment: str, source: str, settings: Mapping[str, Any],
    genotype_json: str, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, float],
    weights_dir: Path | None = None,
) -> str:
    """One MLflow run holding every seed's result and the mean/std (and the trained weights
    in `weights_dir`, as artifacts under NETWORK_ARTIFACTS); returns its id."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import sqlite_artifact_root

    client = MlflowClient(expand_secrets(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(
        experiment, artifact_location=sqlite_artifact_root(tracking_uri, experiment))
    run = client.create_run(experiment_id, run_name=f"retrain-{source[:12]}",
                            tags={"skillearn.kind": "retrain", "skillearn.source": source,
                                  "genotype": genotype_json})
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in summary.items()]
    metrics += [Metric("retrain_test_acc_seed", float(r["retrain_test_acc"]), now, int(r["seed"]))
                for r in rows]
    params = [Param(k, str(settings[k])) for k in DATA_KEYS]
    params += [Param(f"retrain_plan_{k}", str(rows[0][k])) for k in PLAN_KEYS if k in rows[0]]
    params.append(Param("seeds", json.dumps([int(r["seed"]) for r in rows])))
    client.log_batch(run.info.run_id, metrics=metrics, params=params,
                     tags=[RunTag("skillearn.seeds", str(len(rows)))])
    if weights_dir is not None:
        client.log_artifacts(run.info.run_id, str(weights_dir), NETWORK_ARTIFACTS)
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id
