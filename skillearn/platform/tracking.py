"""MLflow logging of a sweep, done from the Ray driver through a `ray.tune.Callback`.

The driver is the single writer: on a cluster only the head needs to reach the tracking server,
trials never import MLflow, and there are no concurrent writers to a SQLite store. Layout:

- one parent run per sweep (tags skill/dataset/seed/sweep, params = the fixed settings,
  metric `best_<metric>` per finished trial),
- one child run per trial (tag `mlflow.parentRunId`, params = the trial's config, numeric metrics
  per epoch at `step=epoch`, artifacts `genotype.json`, `cell_normal.png`, `cell_reduce.png`
  (latest epoch), `alphas/epoch_XXXX.json`, and at the end `alpha_evolution*.png`).

Runs are found again by tags (`skillearn.sweep_path`, `trial_id`), so a resumed sweep continues
its runs instead of duplicating them. Drawing failures are logged as warnings and never stop a
sweep; tracking-store failures propagate (the sweep can then be resumed).
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from skillearn.platform.tags import PARENT_RUN_TAG, ROLE_TAG, SWEEP_PATH_TAG

logger = logging.getLogger(__name__)

# Ray bookkeeping that is not worth a metric curve.
SKIPPED_METRICS = frozenset(
    {"pid", "timestamp", "done", "time_since_restore", "iterations_since_restore",
     "should_checkpoint", "checkpoint_dir_name"}
)
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
BATCH = 100


def _numeric(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def numeric_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The numeric scalars of a Tune result, minus Ray bookkeeping (strings/dicts dropped)."""
    return {
        key: float(value)
        for key, value in result.items()
        if _numeric(value) and key not in SKIPPED_METRICS
    }


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v)[:MAX_PARAM_CHARS] for k, v in config.items()}


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


def _ops_for(result: Mapping[str, Any], config: Mapping[str, Any], n_ops: int) -> list[str]:
    """Op names for the alpha plot: from the result, the trial config, a preset, or op0.."""
    for source in (result.get("ops"), config.get("ops")):
        if isinstance(source, list | tuple):
            names = [str(s) for s in source]
        elif isinstance(source, str) and source.strip():
            text = source.strip()
            names = json.loads(text) if text.startswith("[") else text.split(",")
            names = [str(s).strip() for s in names]
        else:
            continue
        if len(names) == n_ops:
            return names
    from skillearn.trainables.setup import PRESETS

    for preset in PRESETS.values():  # the op set of a preset is identified by its size
        if len(preset["ops"]) == n_ops:
            return list(preset["ops"])
    return [f"op{k}" for k in range(n_ops)]


def _as_logits(alpha: list[list[float]]) -> list[list[float]]:
    """draw_alpha_evolution softmaxes its input; pass probabilities as their logs."""
    rows_are_probs = all(
        all(0.0 <= v <= 1.0 for v in row) and abs(sum(row) - 1.0) < 1e-3 for row in alpha
    )
    if not rows_are_probs:
        return alpha
    return [[math.log(max(v, 1e-12)) for v in row] for row in alpha]


class MlflowTracker(Callback):
    """Logs a sweep to MLflow from the driver (see the module docstring for the run layout)."""

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
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_path = sweep_path
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.params = dict(params or {})
        self.metric = metric
        self.mode = mode
        self._reset()

    def _reset(self) -> None:
        self._client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}  # trial_id -> run_id
        self._alphas: dict[str, dict[int, dict[str, Any]]] = {}  # trial_id -> epoch -> alphas
        self._genotype: dict[str, str] = {}
        self._ops: dict[str, list[str]] = {}
        self._best: float | None = None
        self._finished: set[str] = set()
        # trial_id -> last step logged before a resume: a trial restored from an older checkpoint
        # repeats those epochs, which must not appear twice in its metric history.
        self._logged_step: dict[str, int] = {}

    # Ray pickles the RunConfig (and so this callback) into the sweep's tuner.pkl; a live client
    # and run caches must not travel with it.
    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment", "sweep_name", "sweep_path", "tags", "params",
                "metric", "mode")
        return {k: self.__dict__[k] for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset()

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    # --- runs -------------------------------------------------------------------------------

    def _ensure_experiment(self) -> str:
        if self.experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is not None:
                self.experiment_id = found.experiment_id
            else:
                self.experiment_id = self.client.create_experiment(
                    self.experiment,
                    artifact_location=sqlite_artifact_root(self.tracking_uri, self.experiment),
                )
        return self.experiment_id

    def _find_run(self, filter_string: str) -> str | None:
        runs = self.client.search_runs(
            [self._ensure_experiment()], filter_string=filter_string, max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0].info.run_id if runs else None

    def _reopen(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in _params(params).items()]
        for chunk in _chunks(items):
            self.client.log_batch(run_id, params=chunk)

    def ensure_parent(self) -> str:
        """The sweep's parent run, created once and found again (by sweep path) on resume."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        exp = self._ensure_experiment()
        found = self._find_run(
            f"tags.`{SWEEP_PATH_TAG}` = '{self.sweep_path}' and tags.`{ROLE_TAG}` = 'sweep'"
        )
        if found is not None:
            self._reopen(found)
            self.parent_run_id = found
            return found
        tags = {**self.tags, "sweep": self.sweep_name, SWEEP_PATH_TAG: self.sweep_path,
                ROLE_TAG: "sweep"}
        run = self.client.create_run(exp, tags=tags, run_name=self.sweep_name)
        self.parent_run_id = run.info.run_id
        self._log_params(self.parent_run_id, self.params)
        return self.parent_run_id

    def ensure_child(self, trial: Any) -> str:
        """The trial's child run, created on first sight and found again by trial_id on resume."""
        trial_id = str(trial.trial_id)
        if trial_id in self.child_runs:
            return self.child_runs[trial_id]
        parent = self.ensure_parent()
        found = self._find_run(
            f"tags.`{PARENT_RUN_TAG}` = '{parent}' and tags.trial_id = '{trial_id}'"
        )
        if found is not None:
            self.child_runs[trial_id] = found
            history = self.client.get_metric_history(found, "training_iteration")
            self._logged_step[trial_id] = max((int(m.step) for m in history), default=-1)
            self._load_alphas(trial_id, found)
            return found
        config = dict(getattr(trial, "config", {}) or {})
        tags = {
            **self.tags,
            PARENT_RUN_TAG: parent,
            ROLE_TAG: "trial",
            "sweep": self.sweep_name,
            "trial_id": trial_id,
        }
        for key in ("dataset", "seed"):
            if key in config:
                tags[key] = str(config[key])
        if "_skill" in config:
            tags["skill"] = str(config["_skill"])
        run = self.client.create_run(self._ensure_experiment(), tags=tags,
                                     run_name=f"{self.sweep_name}-{trial_id}")
        run_id = run.info.run_id
        self.child_runs[trial_id] = run_id
        self._log_params(run_id, {k: v for k, v in config.items() if not k.startswith("_")})
        return run_id

    # --- artifacts --------------------------------------------------------------------------

    def _log_genotype(self, run_id: str, genotype_json: str) -> None:
        from skillearn.search_spaces.darts import Genotype, draw_cell

        genotype = Genotype.from_json(genotype_json)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1))
            draw_cell(genotype, "normal", Path(tmp, "cell_normal.png"))
            draw_cell(genotype, "reduce", Path(tmp, "cell_reduce.png"))
            self.client.log_artifacts(run_id, tmp)

    def _log_alphas(self, trial_id: str, run_id: str, epoch: int, alphas: dict[str, Any]) -> None:
        self._alphas.setdefault(trial_id, {})[epoch] = alphas
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, f"epoch_{epoch:04d}.json")
            path.write_text(json.dumps({"epoch": epoch, **alphas}))
            self.client.log_artifact(run_id, str(path), artifact_path="alphas")

    def _load_alphas(self, trial_id: str, run_id: str) -> None:
        """On resume: the alpha history logged before the restart (to draw the whole curve)."""
        history = self._alphas.setdefault(trial_id, {})
        try:
            files = self.client.list_artifacts(run_id, "alphas")
            with tempfile.TemporaryDirectory() as tmp:
                for info in files:
                    local = self.client.download_artifacts(run_id, info.path, tmp)
                    data = json.loads(Path(local).read_text())
                    history.setdefault(int(data.pop("epoch")), data)
        except Exception as err:  # a missing folder is normal for a fresh trial
            logger.debug("no alpha history for %s: %s", run_id, err)

    def _log_alpha_evolution(self, trial: Any, run_id: str) -> None:
        history = self._alphas.get(str(trial.trial_id))
        if not history:
            return
        from skillearn.search_spaces.darts import draw_alpha_evolution

        epochs = sorted(history)
        config = dict(getattr(trial, "config", {}) or {})
        with tempfile.TemporaryDirectory() as tmp:
            for which, name in (("alpha_normal", "alpha_evolution.png"),
                                ("alpha_reduce", "alpha_evolution_reduce.png")):
                series = [history[e][which] for e in epochs if which in history[e]]
                if not series:
                    continue
                ops = self._ops.get(str(trial.trial_id)) or _ops_for({}, config, len(series[0][0]))
                draw_alpha_evolution([_as_logits(a) for a in series], ops, Path(tmp, name))
            self.client.log_artifacts(run_id, tmp)

    def _safely(self, what: str, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as err:
            logger.warning("skillearn: could not log %s to MLflow: %s", what, err)

    # --- Tune hooks -------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        """Create (or find again) the sweep's parent run before the first trial starts."""
        self.ensure_parent()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._reopen(self.ensure_child(trial))  # a resumed errored trial runs again

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._reopen(self.ensure_child(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Per-epoch metrics in one batch; genotype artifacts and alphas when present."""
        from mlflow.entities import Metric

        run_id = self.ensure_child(trial)
        trial_id = str(trial.trial_id)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        if step > self._logged_step.get(trial_id, -1):
            metrics = [Metric(k, v, now, step) for k, v in numeric_metrics(result).items()]
            for chunk in _chunks(metrics, 1000):
                self.client.log_batch(run_id, metrics=chunk)
        genotype = result.get("genotype")
        if isinstance(genotype, str) and genotype:
            self._genotype[trial_id] = genotype
            self._safely("the genotype", self._log_genotype, run_id, genotype)
        alphas = {}
        for key in ("alpha_normal", "alpha_reduce"):
            value = result.get(key)
            if isinstance(value, str) and value:
                value = json.loads(value)
            if isinstance(value, list) and value:
                alphas[key] = value
        if alphas:
            if trial_id not in self._ops:
                n_ops = len(next(iter(alphas.values()))[0])
                self._ops[trial_id] = _ops_for(result, dict(trial.config or {}), n_ops)
            self._safely("the alphas", self._log_alphas, trial_id, run_id, step, alphas)

    def _end(self, trial: Any, trials: list, status: str, error: str | None = None) -> None:
        run_id = self.ensure_child(trial)
        trial_id = str(trial.trial_id)
        self._safely("the alpha evolution", self._log_alpha_evolution, trial, run_id)
        genotype = self._genotype.get(trial_id)
        if genotype is None:
            last = getattr(trial, "last_result", None) or {}
            genotype = last.get("genotype") if isinstance(last, Mapping) else None
        if isinstance(genotype, str) and genotype:
            self.client.set_tag(run_id, "genotype", genotype[:MAX_TAG_CHARS])
        if error is not None:
            self.client.set_tag(run_id, "error", error[:MAX_TAG_CHARS])
        self.client.set_terminated(run_id, status)
        self._log_best(trial, trials)

    def _log_best(self, trial: Any, trials: list) -> None:
        """Sweep-level curve on the parent: the best metric after each finished trial."""
        last = getattr(trial, "last_result", None) or {}
        value = last.get(self.metric) if isinstance(last, Mapping) else None
        self._finished.add(str(trial.trial_id))
        if _numeric(value):
            better = self._best is None or (
                value > self._best if self.mode == "max" else value < self._best
            )
            if better:
                self._best = float(value)
        if self._best is not None:
            self.client.log_metric(self.ensure_parent(), f"best_{self.metric}", self._best,
                                   step=len(self._finished))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trials, "FINISHED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A failed trial that Tune retries from its checkpoint: note why, keep the run open."""
        self.client.set_tag(self.ensure_child(trial), "last_error", _error_message(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, trials, "FAILED", error=_error_message(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.parent_run_id is not None:
            self.client.set_terminated(self.parent_run_id, "FINISHED")


def _error_message(trial: Any) -> str:
    """The last line of the trial's error trace (the exception and its message)."""
    path = getattr(trial, "error_file", None)
    text = ""
    try:
        if path and Path(path).is_file():
            text = Path(path).read_text()
        else:
            getter = getattr(trial, "get_error", None)
            text = str(getter() or "") if callable(getter) else ""
    except Exception as err:
        text = f"(could not read the error: {err})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "trial failed (no error message recorded)"
