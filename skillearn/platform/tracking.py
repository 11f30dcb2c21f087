"""MLflow logging of a sweep, done from the Ray driver through a `ray.tune.Callback`.

The driver is the single writer: on a cluster only the head needs to reach the tracking server,
trials never import MLflow, and there are no concurrent writers to a SQLite store. Layout:

- one parent run per sweep (tags skill/dataset/seed/sweep, params = the fixed settings,
  metric `best_<metric>` per finished trial),
- one child run per trial (tag `mlflow.parentRunId`, params = the trial's config, numeric metrics
  per epoch at `step=epoch`, tags `node_id` / `node_ip` of where it ran, and the files of the
  artifacts its results declare, see `skillearn.platform.renderers`).

This module only maps Tune's hooks onto three parts, each in its own module:
`mlflow_runs.SweepRuns` (find or create the runs; one write to a run), `mlflow_queue.WriteQueue`
(ordered writes that survive an outage in the sweep's backlog file) and
`renderers.ArtifactStager` (declared artifacts -> staged files, by kind). Rendering failures are
warnings and never stop a sweep; an unreachable store does not stop it either (the sweep exits
non-zero and `skillearn sync` sends the backlog later). A store that refuses the sweep's runs is
caught before Ray starts by `store_probe.probe_tracking_store`.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune import Callback

from skillearn.platform.mlflow_queue import (  # noqa: F401  (re-exported: the tracking API)
    BACKLOG_FILE,
    STAGING_DIR,
    StoreRefused,
    WriteQueue,
    sync_backlog,
    unsent_writes,
)
from skillearn.platform.mlflow_runs import (  # noqa: F401
    SWEEP_KEY,
    SweepRuns,
    params_of,
    sqlite_artifact_root,
    sweep_key,
    trial_run_name,
)
from skillearn.platform.renderers import ArtifactStager
from skillearn.platform.trial_errors import (  # noqa: F401
    error_summary,
    one_line_error,
    trial_error_message,
)

# Ray bookkeeping that is not worth a metric curve.
SKIPPED_METRICS = frozenset(
    {"pid", "timestamp", "done", "time_since_restore", "iterations_since_restore",
     "should_checkpoint", "checkpoint_dir_name"}
)


def _numeric(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric scalars of a Tune result, minus Ray bookkeeping (artifacts are not metrics)."""
    return {
        key: float(value)
        for key, value in result.items()
        if _numeric(value) and key not in SKIPPED_METRICS
    }


class MlflowTracker(Callback):
    """Logs a sweep to MLflow from the driver (see the module docstring for the run layout)."""

    _SETTINGS = ("tracking_uri", "experiment", "sweep_name", "sweep_path", "tags", "params",
                 "metric", "mode", "flush_timeout_s", "name_knobs")

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        sweep_name: str,
        sweep_path: str,
        *,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        metric: str = "val_acc",
        mode: str = "max",
        flush_timeout_s: float | None = None,
        name_knobs: Sequence[str] = (),
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_path = sweep_path
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.params = dict(params or {})
        self.metric = metric
        self.mode = mode
        self.flush_timeout_s = flush_timeout_s
        self.name_knobs = list(name_knobs)  # the knobs a trial's run name shows
        self._reset()

    def _reset(self) -> None:
        where = (self.tracking_uri, self.experiment, self.sweep_name, self.sweep_path)
        self.runs = SweepRuns(*where, tags=self.tags, name_knobs=self.name_knobs,
                              on_child_found=self._restore_histories)
        self.queue = WriteQueue(*where, self.runs, flush_timeout_s=self.flush_timeout_s)
        self.artifacts = ArtifactStager(self.queue.stage, self.queue.put)
        self._where: dict[str, tuple[str, str]] = {}  # trial_id -> (node_id, node_ip) tagged
        self._best: float | None = None
        self._finished: set[str] = set()

    # Ray pickles the RunConfig (and so this callback) into the sweep's tuner.pkl; a live client
    # and run caches must not travel with it (unsent writes live in the backlog file).
    def __getstate__(self) -> dict[str, Any]:
        return {k: self.__dict__.get(k) for k in self._SETTINGS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.name_knobs = list(state.get("name_knobs") or [])  # pickled before they existed
        self._reset()

    # --- what callers and tests read through the callback -------------------------------------

    @property
    def client(self) -> Any:
        return self.runs.client

    @property
    def refused(self) -> str | None:
        return self.queue.refused

    def pending_count(self) -> int:
        return self.queue.pending_count()

    def _restore_histories(self, trial_id: str, run_id: str) -> None:
        self.artifacts.restore(trial_id, lambda folder: self.runs.read_logged(run_id, folder))

    # --- Tune hooks -------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        """Create (or find again) the sweep's parent run before the first trial starts; send
        what a previous driver could not."""
        self.queue.put(SWEEP_KEY, {"op": "reopen"})
        self.queue.put(SWEEP_KEY, {"op": "params", "params": params_of(self.params)})
        self.queue.flush(force=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.queue.put(self.runs.register(trial), {"op": "reopen"})  # an errored one runs again
        self.queue.flush()

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.queue.put(self.runs.register(trial), {"op": "reopen"})
        self.queue.flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Per-epoch metrics in one batch, where the trial runs, and its declared artifacts."""
        trial_id = self.runs.register(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        values = numeric_metrics(result)
        if self.metric in values:
            # MLflow lists a run's metrics in the order they were first logged, and its compare
            # view plots the first one in the parallel-coordinates chart: the sweep's metric.
            values = {self.metric: values.pop(self.metric), **values}
        self.queue.put(trial_id, {"op": "metrics", "step": step,
                                  "ts": int(time.time() * 1000), "values": values})
        where = (result.get("node_id"), result.get("node_ip"))
        if all(isinstance(v, str) and v for v in where) and self._where.get(trial_id) != where:
            self._where[trial_id] = where
            self.queue.put(trial_id, {"op": "tags", "tags": {
                "node_id": where[0], "node_ip": where[1],
                "hardware": str(result.get("hardware") or "unknown")}})
        self.artifacts.on_result(trial_id, step, result)
        self.queue.flush()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A failed trial that Tune retries from its checkpoint: note why, keep the run open."""
        self.queue.put(self.runs.register(trial),
                       {"op": "tags", "tags": {"last_error": trial_error_message(trial)}})
        self.queue.flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = trial_error_message(trial)
        print(f"skillearn: trial {trial.trial_id} failed: {message}", file=sys.stderr)
        self._end(trial, "FAILED", error=message)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.queue.put(SWEEP_KEY, {"op": "terminate", "status": "FINISHED"})
        self.queue.drain()

    def _end(self, trial: Any, status: str, error: str | None = None) -> None:
        trial_id = self.runs.register(trial)
        self.artifacts.on_trial_end(trial_id)
        if error is not None:
            self.queue.put(trial_id, {"op": "tags", "tags": {"error": error}})
        self.queue.put(trial_id, {"op": "terminate", "status": status})
        self._log_best(trial)
        self.queue.flush()

    def _log_best(self, trial: Any) -> None:
        """Sweep-level curve on the parent: the best metric after each finished trial."""
        last = getattr(trial, "last_result", None) or {}
        value = last.get(self.metric) if isinstance(last, Mapping) else None
        self._finished.add(str(trial.trial_id))
        if _numeric(value) and math.isfinite(value):
            better = self._best is None or (
                value > self._best if self.mode == "max" else value < self._best
            )
            if better:
                self._best = float(value)
        if self._best is not None:
            self.queue.put(SWEEP_KEY, {"op": "metrics", "step": len(self._finished),
                                       "ts": int(time.time() * 1000),
                                       "values": {f"best_{self.metric}": self._best}})
