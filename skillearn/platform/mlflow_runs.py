"""A sweep's MLflow runs: the experiment, the parent run, one child run per trial, found again
on resume by tags, and the writes one queued op makes to a run.

Runs are found again by tags (`skillearn.sweep_key`, a hash of the sweep's storage path, and
`trial_id`), so a resumed sweep continues its runs instead of duplicating them. Filter strings
never hold user text: a quote in a name or path cannot break them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from skillearn.platform.secrets import expand_secrets
from skillearn.platform.tags import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    PARENT_RUN_TAG,
    ROLE_TAG,
    SWEEP_KEY_TAG,
    SWEEP_PATH_TAG,
)

logger = logging.getLogger(__name__)

MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
MAX_RUN_NAME_CHARS = 200
BATCH = 100
SWEEP_KEY = "__sweep__"  # the parent run's key in the write queue (children: their trial_id)


def params_of(config: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in config.items()}


def _short_value(value: Any) -> str:
    """A knob value as a run name shows it: floats to two significant digits."""
    if isinstance(value, float):
        return f"{value:.2g}"
    return str(value)[:24]


def trial_run_name(skill: str, trial: Any, config: Mapping[str, Any],
                   knobs: Sequence[str]) -> str:
    """`lfm #3 w_lr=0.012 lambda=0.7`: what a row of the MLflow runs table is, at a glance.

    The number is Ray's trial counter (the leading number of its `experiment_tag`, kept across
    --resume); `knobs` are the settings that differ between trials (the searched ones)."""
    tag = str(getattr(trial, "experiment_tag", "") or "")
    number = tag.split("_", 1)[0]
    label = f"#{number}" if number.isdigit() else str(trial.trial_id)
    values = " ".join(f"{k}={_short_value(config[k])}" for k in knobs if k in config)
    name = " ".join(part for part in (skill, label, values) if part)
    return name if len(name) <= MAX_RUN_NAME_CHARS else name[: MAX_RUN_NAME_CHARS - 3] + "..."


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sqlite_artifact_root(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a sqlite store live beside the database (not wherever the cwd happens to be)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    db = Path(tracking_uri[len("sqlite:///") :])
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)
    return (db.parent / "mlartifacts" / safe).as_uri()


def sweep_key(sweep_path: str) -> str:
    """The `skillearn.sweep_key` tag of a sweep's runs: a filter-safe stand-in for its path."""
    return hashlib.sha256(sweep_path.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_FILTER_SAFE = re.compile(r"[A-Za-z0-9_.:-]+")


def _literal(value: str) -> str:
    """`value` quoted for an MLflow filter string; only ids and hashes are ever put there."""
    if not _FILTER_SAFE.fullmatch(value):
        raise ValueError(f"refusing to put {value!r} in an MLflow filter string")
    return f"'{value}'"


def http_defaults() -> None:
    """Fail fast when the server does not answer: MLflow's own default retries an unreachable
    server for minutes inside one call, stalling the Tune loop. The tracker retries instead,
    with backoff, and buffers meanwhile. A user's own setting wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


class SweepRuns:
    """The sweep's runs, created on first need and found again on resume.

    `info` holds what creating a trial's run needs (tags, params, name), registered when the
    trial is first seen; it travels with unsent writes in the backlog. `on_child_found(trial_id,
    run_id)` is called when a trial's run already existed (a resumed sweep)."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, sweep_path: str,
                 *, tags: Mapping[str, str] | None = None, name_knobs: Sequence[str] = (),
                 on_child_found: Callable[[str, str], None] | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_path = sweep_path
        self.tags = dict(tags or {})
        self.name_knobs = list(name_knobs)
        self.on_child_found = on_child_found
        self._client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}  # trial_id -> run_id
        self.info: dict[str, dict[str, Any]] = {}
        # trial_id -> last step logged: a trial restored from an older checkpoint repeats those
        # epochs, which must not appear twice in its metric history.
        self.logged_step: dict[str, int] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            http_defaults()
            self._client = MlflowClient(tracking_uri=expand_secrets(self.tracking_uri))
        return self._client

    # --- lookup ------------------------------------------------------------------------------

    def ensure_experiment(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
                if EXPERIMENT_KIND_TAG not in found.tags:  # a kind the user chose stays
                    self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG,
                                                   MODEL_TRAINING_KIND)
            else:
                self.experiment_id = self.client.create_experiment(
                    self.experiment,
                    artifact_location=sqlite_artifact_root(self.tracking_uri, self.experiment),
                    tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
                )
        return self.experiment_id

    def find_run(self, filter_string: str) -> str | None:
        runs = self.client.search_runs(
            [self.ensure_experiment()], filter_string=filter_string, max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0].info.run_id if runs else None

    def reopen(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def resolve(self, key: str) -> str:
        """The run of a write-queue key (SWEEP_KEY: the parent, else a trial_id)."""
        return self.ensure_parent() if key == SWEEP_KEY else self.ensure_child_run(key)

    def ensure_parent(self) -> str:
        """The sweep's parent run, created once and found again (by sweep path) on resume."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        exp = self.ensure_experiment()
        key = sweep_key(self.sweep_path)
        found = self.find_run(
            f"tags.`{SWEEP_KEY_TAG}` = {_literal(key)} and tags.`{ROLE_TAG}` = 'sweep'"
        )
        if found is None and _FILTER_SAFE.fullmatch(self.sweep_path.replace("/", "")):
            # a sweep started before sweep_key tags existed (its path needs no quoting)
            found = self.find_run(f"tags.`{SWEEP_PATH_TAG}` = '{self.sweep_path}' and "
                                  f"tags.`{ROLE_TAG}` = 'sweep'")
        if found is not None:
            self.reopen(found)
            self.parent_run_id = found
            return found
        tags = {**self.tags, "sweep": self.sweep_name, SWEEP_PATH_TAG: self.sweep_path,
                SWEEP_KEY_TAG: key, ROLE_TAG: "sweep"}
        run = self.client.create_run(exp, tags=tags, run_name=self.sweep_name)
        self.parent_run_id = run.info.run_id  # its params are queued by the callback's setup
        return self.parent_run_id

    def register(self, trial: Any) -> str:
        """Remember what creating the trial's run needs (its run is made when it can be)."""
        trial_id = str(trial.trial_id)
        if trial_id not in self.info:
            config = dict(getattr(trial, "config", {}) or {})
            tags = {**self.tags, ROLE_TAG: "trial", "sweep": self.sweep_name,
                    "trial_id": trial_id}
            for key in ("dataset", "seed"):
                if key in config:
                    tags[key] = str(config[key])
            if "_skill" in config:
                tags["skill"] = str(config["_skill"])
            params = params_of({k: v for k, v in config.items() if not k.startswith("_")})
            name = trial_run_name(tags.get("skill", ""), trial, config, self.name_knobs)
            self.info[trial_id] = {"tags": tags, "params": params, "name": name}
        return trial_id

    def ensure_child(self, trial: Any) -> str:
        """The trial's child run, created on first sight and found again by trial_id on resume."""
        return self.ensure_child_run(self.register(trial))

    def ensure_child_run(self, trial_id: str) -> str:
        if trial_id in self.child_runs:
            return self.child_runs[trial_id]
        parent = self.ensure_parent()
        found = self.find_run(
            f"tags.`{PARENT_RUN_TAG}` = {_literal(parent)} and tags.trial_id = {_literal(trial_id)}"
        )
        if found is not None:
            self.child_runs[trial_id] = found
            history = self.client.get_metric_history(found, "training_iteration")
            self.logged_step[trial_id] = max((int(m.step) for m in history), default=-1)
            if self.on_child_found is not None:
                self.on_child_found(trial_id, found)
            return found
        info = self.info.get(trial_id) or {"tags": {ROLE_TAG: "trial", "trial_id": trial_id},
                                           "params": {}}
        name = info.get("name") or f"{self.sweep_name}-{trial_id}"
        run = self.client.create_run(self.ensure_experiment(),
                                     tags={**info["tags"], PARENT_RUN_TAG: parent},
                                     run_name=name)
        run_id = run.info.run_id
        self.child_runs[trial_id] = run_id
        self.apply(trial_id, run_id, {"op": "params", "params": info["params"]})
        return run_id

    def read_logged(self, run_id: str, folder: str) -> list[dict[str, Any]]:
        """The JSON files an earlier driver logged in `folder` of a run (histories to continue)."""
        records = []
        with tempfile.TemporaryDirectory() as tmp:
            for entry in self.client.list_artifacts(run_id, folder):
                local = self.client.download_artifacts(run_id, entry.path, tmp)
                records.append(json.loads(Path(local).read_text()))
        return records

    # --- writes ------------------------------------------------------------------------------

    def apply(self, key: str, run_id: str, op: dict[str, Any]) -> None:
        """Make one queued write to its run (repeating one is harmless: at-least-once)."""
        from mlflow.entities import Metric, Param, RunTag

        kind = op["op"]
        if kind == "reopen":
            self.reopen(run_id)
        elif kind == "params":
            items = [Param(k, v) for k, v in params_of(op["params"]).items()]
            for chunk in _chunks(items):
                self.client.log_batch(run_id, params=chunk)
        elif kind == "metrics":
            step = int(op["step"])
            if key != SWEEP_KEY and step <= self.logged_step.get(key, -1):
                return  # a restored trial repeating an epoch already logged
            metrics = [Metric(k, float(v), int(op["ts"]), step) for k, v in op["values"].items()]
            for chunk in _chunks(metrics, 1000):
                self.client.log_batch(run_id, metrics=chunk)
            if key != SWEEP_KEY:
                self.logged_step[key] = step
        elif kind == "tags":
            tags = [RunTag(k, str(v)[:MAX_TAG_CHARS]) for k, v in op["tags"].items()]
            self.client.log_batch(run_id, tags=tags)
        elif kind == "artifacts":
            if Path(op["dir"]).is_dir():
                self.client.log_artifacts(run_id, op["dir"], artifact_path=op.get("path"))
            else:
                logger.warning("skillearn: staged artifacts %s are gone; not logged", op["dir"])
        elif kind == "terminate":
            self.client.set_terminated(run_id, op["status"])
        else:
            raise ValueError(f"unknown MLflow backlog op {kind!r}")
