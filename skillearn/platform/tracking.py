"""MLflow logging of a sweep, done from the Ray driver through a `ray.tune.Callback`.

The driver is the single writer: on a cluster only the head needs to reach the tracking server,
trials never import MLflow, and there are no concurrent writers to a SQLite store. Layout:

- one parent run per sweep (tags skill/dataset/seed/sweep, params = the fixed settings,
  metric `best_<metric>` per finished trial),
- one child run per trial (tag `mlflow.parentRunId`, params = the trial's config, numeric metrics
  per epoch at `step=epoch`, artifacts `genotype.json`, `cell_normal.png`, `cell_reduce.png`
  (latest epoch), `alphas/epoch_XXXX.json`, and at the end `alpha_evolution*.png`; LFM skills:
  `learned_weights.png`, their learned weights a/b/r over the epochs).

Runs are found again by tags (`skillearn.sweep_key`, a hash of the sweep's storage path, and
`trial_id`), so a resumed sweep continues its runs instead of duplicating them. Filter strings
never hold user text: a quote in a name or path cannot break them. Each child run is also
tagged with where its trial ran (`node_id`, `node_ip`), and reweighting skills get
`weight_function.png` / `weight_histogram.png`;
skills that learn example weights (LFM's r and a) get `learned_weights.png` over the epochs.

Drawing failures are logged as warnings and never stop a sweep. An unreachable tracking store
does not stop it either: writes are queued per run and sent in order, with backoff, once it
answers; unsent writes wait in `mlflow_backlog.json` in the sweep directory (staged files in
`.mlflow_staging/`), which `skillearn sync` or `skillearn sweep --resume` sends later, and the
sweep exits non-zero. A store that refuses the sweep's runs (a client error, not an outage) is
not retried: its writes go to the backlog at once. Such errors are caught before Ray starts by
`store_probe.probe_tracking_store`. Delivery
is at least once: a write repeated after a timeout is idempotent in MLflow (same params, tags,
metric points and artifact paths).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import numbers
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune import Callback

from skillearn.platform.redact import redact, redact_text
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

# Ray bookkeeping that is not worth a metric curve.
SKIPPED_METRICS = frozenset(
    {"pid", "timestamp", "done", "time_since_restore", "iterations_since_restore",
     "should_checkpoint", "checkpoint_dir_name"}
)
MAX_PARAM_CHARS = 6000
MAX_TAG_CHARS = 5000
BATCH = 100
SWEEP_KEY = "__sweep__"  # the parent run's key in the write queue (children: their trial_id)
BACKLOG_FILE = "mlflow_backlog.json"
STAGING_DIR = ".mlflow_staging"
MAX_PENDING_OPS = 2000  # in memory; more go to the backlog file
MAX_BACKOFF_S = 30.0
FLUSH_TIMEOUT_S = 60.0


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


MAX_RUN_NAME_CHARS = 200


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
    from skillearn.search_spaces.darts.space import PRESETS

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


def _json_list(value: Any) -> list | None:
    """A list reported as itself or as a JSON string (None otherwise)."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, list) and value else None


def sweep_key(sweep_path: str) -> str:
    """The `skillearn.sweep_key` tag of a sweep's runs: a filter-safe stand-in for its path."""
    return hashlib.sha256(sweep_path.encode("utf-8", "surrogatepass")).hexdigest()[:32]


_FILTER_SAFE = re.compile(r"[A-Za-z0-9_.:-]+")


def _literal(value: str) -> str:
    """`value` quoted for an MLflow filter string; only ids and hashes are ever put there."""
    if not _FILTER_SAFE.fullmatch(value):
        raise ValueError(f"refusing to put {value!r} in an MLflow filter string")
    return f"'{value}'"


def _transient(err: BaseException) -> bool:
    """Whether a failed MLflow write may succeed later (server down, timeout, 5xx, locked db).

    A 4xx answer (bad value, conflicting param) never will: such a write is reported and dropped.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    return True


def _http_defaults() -> None:
    """Fail fast when the server does not answer: MLflow's own default retries an unreachable
    server for minutes inside one call, stalling the Tune loop. The tracker retries instead,
    with backoff, and buffers meanwhile. A user's own setting wins."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


class StoreRefused(Exception):
    """The tracking store answered with a client error for a run itself (not an outage)."""


class MlflowTracker(Callback):
    """Logs a sweep to MLflow from the driver (see the module docstring for the run layout).

    Writes are queued per run (parent: SWEEP_KEY, children: trial_id) and sent in order on each
    Tune event. When the store is unreachable they stay queued (persisted to BACKLOG_FILE in the
    sweep directory, so neither a long outage nor a killed driver loses them) and are sent again
    with exponential backoff; `on_experiment_end` retries for `flush_timeout_s` and leaves what is
    still unsent in the file for `skillearn sync` or `skillearn sweep --resume`.
    """

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
        self._client: Any = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}  # trial_id -> run_id
        self._alphas: dict[str, dict[int, dict[str, Any]]] = {}  # trial_id -> epoch -> alphas
        self._curves: dict[str, dict[int, list]] = {}  # trial_id -> epoch -> weight curve
        self._trends: dict[str, dict[int, dict[str, float]]] = {}  # trial_id -> epoch -> r/a/b
        self._genotype: dict[str, str] = {}
        self._ops: dict[str, list[str]] = {}
        self._where: dict[str, tuple[str, str]] = {}  # trial_id -> (node_id, node_ip) tagged
        self._best: float | None = None
        self._finished: set[str] = set()
        # trial_id -> last step logged: a trial restored from an older checkpoint repeats those
        # epochs, which must not appear twice in its metric history.
        self._logged_step: dict[str, int] = {}
        # the write queue: run key -> ops in order; run key -> what creating the run needs
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._failures = 0
        self._retry_at = 0.0
        self._outage_since: float | None = None
        self.refused: str | None = None  # why the store refused the sweep's runs (client error)

    # Ray pickles the RunConfig (and so this callback) into the sweep's tuner.pkl; a live client
    # and run caches must not travel with it (unsent writes live in the backlog file).
    def __getstate__(self) -> dict[str, Any]:
        keep = ("tracking_uri", "experiment", "sweep_name", "sweep_path", "tags", "params",
                "metric", "mode", "flush_timeout_s", "name_knobs")
        return {k: self.__dict__.get(k) for k in keep}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.name_knobs = list(state.get("name_knobs") or [])  # pickled before they existed
        self._reset()

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            _http_defaults()
            self._client = MlflowClient(tracking_uri=expand_secrets(self.tracking_uri))
        return self._client

    # --- where unsent writes and staged artifacts live ---------------------------------------

    def local_dir(self) -> Path:
        """The sweep directory when it is local, else a folder of this machine's temp dir."""
        if "://" not in self.sweep_path:
            return Path(self.sweep_path)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.sweep_name)
        return Path(tempfile.gettempdir()) / "skillearn-mlflow" / safe

    @property
    def backlog_path(self) -> Path:
        return self.local_dir() / BACKLOG_FILE

    def _stage(self) -> Path:
        """A fresh folder for files to log (kept until they are sent)."""
        root = self.local_dir() / STAGING_DIR
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=root))

    # --- the write queue ---------------------------------------------------------------------

    def _queue(self, key: str, op: dict[str, Any]) -> None:
        self._pending.setdefault(key, []).append(op)
        if sum(len(ops) for ops in self._pending.values()) > MAX_PENDING_OPS:
            self._persist()  # bounded memory: the overflow waits on disk, nothing is dropped

    def pending_count(self) -> int:
        """Writes not yet sent (in memory and in the backlog file)."""
        count = sum(len(ops) for ops in self._pending.values())
        if self.backlog_path.is_file():
            try:
                saved = json.loads(self.backlog_path.read_text())
                count += sum(len(ops) for ops in saved.get("pending", {}).values())
            except (OSError, ValueError):
                pass
        return count

    def _persist(self) -> None:
        """Move the in-memory queue into the backlog file (merged after what it holds)."""
        if not self._pending:
            return
        path = self.backlog_path
        saved: dict[str, Any] = {"pending": {}, "info": {}}
        if path.is_file():
            saved = json.loads(path.read_text())
        for key, ops in self._pending.items():
            saved["pending"].setdefault(key, []).extend(ops)
        for key, info in self._info.items():
            saved["info"].setdefault(key, info)
        saved.update(
            version=1, tracking_uri=redact(self.tracking_uri), experiment=self.experiment,
            sweep_name=self.sweep_name, sweep_path=self.sweep_path,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, path)  # atomic: a killed driver leaves the old or the new file
        self._pending = {}

    def _load_backlog(self) -> None:
        """Put the backlog file's writes in front of the in-memory ones (they are older)."""
        path = self.backlog_path
        if not path.is_file():
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            logger.warning("skillearn: cannot read the MLflow backlog %s (%s); left in place",
                           path, err)
            return
        for key, info in saved.get("info", {}).items():
            self._info.setdefault(key, info)
        merged: dict[str, list[dict[str, Any]]] = {}
        for key, ops in saved.get("pending", {}).items():
            merged[key] = list(ops)
        for key, ops in self._pending.items():
            merged.setdefault(key, []).extend(ops)
        self._pending = merged
        path.unlink()

    def flush(self, *, force: bool = False) -> bool:
        """Send the queued writes in order; True when nothing is left.

        On a transient failure the rest stays queued (and goes to the backlog file) and no new
        attempt is made before the backoff expires (2, 4, ... up to 30 s), so a dead server does
        not stall Tune on every event.
        """
        if not force and time.monotonic() < self._retry_at:
            if self._pending:
                self._persist()
            return False
        if self.refused is not None:  # a client error never heals by itself: no retries
            self._persist()
            return False
        self._load_backlog()
        try:
            self._send()
        except StoreRefused as err:
            self.refused = _short(err.__cause__ or err)
            print(f"skillearn: error: MLflow at {redact(self.tracking_uri)} refused the sweep's "
                  f"runs ({self.refused}); their writes are kept in {self.backlog_path}",
                  file=sys.stderr)
            self._persist()
            return False
        except Exception as err:
            self._failures += 1
            delay = min(MAX_BACKOFF_S, 2.0 ** self._failures)
            self._retry_at = time.monotonic() + delay
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                logger.warning(
                    "skillearn: MLflow at %s is unreachable (%s); buffering its writes in %s and "
                    "retrying", redact(self.tracking_uri), _short(err), self.backlog_path,
                )
            self._persist()
            return False
        if self._outage_since is not None:
            logger.warning("skillearn: MLflow at %s is back after %.0f s; buffered writes sent",
                           redact(self.tracking_uri), time.monotonic() - self._outage_since)
        self._failures, self._retry_at, self._outage_since = 0, 0.0, None
        return True

    def _send(self) -> None:
        keys = sorted(self._pending, key=lambda k: k != SWEEP_KEY)  # the parent first
        for key in keys:
            ops = self._pending[key]
            try:
                run_id = self._resolve(key)
            except Exception as err:
                if _transient(err):
                    raise
                raise StoreRefused(err) from err
            while ops:
                op = ops[0]
                try:
                    self._apply(key, run_id, op)
                except Exception as err:
                    if _transient(err):
                        raise
                    logger.warning("skillearn: MLflow refused %s for run %s: %s (dropped)",
                                   op.get("op"), run_id, _short(err))
                ops.pop(0)
                if op.get("op") == "artifacts":
                    shutil.rmtree(op["dir"], ignore_errors=True)
            del self._pending[key]

    def _apply(self, key: str, run_id: str, op: dict[str, Any]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        kind = op["op"]
        if kind == "reopen":
            self._reopen(run_id)
        elif kind == "params":
            items = [Param(k, v) for k, v in _params(op["params"]).items()]
            for chunk in _chunks(items):
                self.client.log_batch(run_id, params=chunk)
        elif kind == "metrics":
            step = int(op["step"])
            if key != SWEEP_KEY and step <= self._logged_step.get(key, -1):
                return  # a restored trial repeating an epoch already logged
            metrics = [Metric(k, float(v), int(op["ts"]), step) for k, v in op["values"].items()]
            for chunk in _chunks(metrics, 1000):
                self.client.log_batch(run_id, metrics=chunk)
            if key != SWEEP_KEY:
                self._logged_step[key] = step
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

    # --- runs -------------------------------------------------------------------------------

    def _ensure_experiment(self) -> str:
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

    def _find_run(self, filter_string: str) -> str | None:
        runs = self.client.search_runs(
            [self._ensure_experiment()], filter_string=filter_string, max_results=1,
            order_by=["attributes.start_time ASC"],
        )
        return runs[0].info.run_id if runs else None

    def _reopen(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _resolve(self, key: str) -> str:
        return self.ensure_parent() if key == SWEEP_KEY else self._ensure_child_run(key)

    def ensure_parent(self) -> str:
        """The sweep's parent run, created once and found again (by sweep path) on resume."""
        if self.parent_run_id is not None:
            return self.parent_run_id
        exp = self._ensure_experiment()
        key = sweep_key(self.sweep_path)
        found = self._find_run(
            f"tags.`{SWEEP_KEY_TAG}` = {_literal(key)} and tags.`{ROLE_TAG}` = 'sweep'"
        )
        if found is None and _FILTER_SAFE.fullmatch(self.sweep_path.replace("/", "")):
            # a sweep started before sweep_key tags existed (its path needs no quoting)
            found = self._find_run(f"tags.`{SWEEP_PATH_TAG}` = '{self.sweep_path}' and "
                                   f"tags.`{ROLE_TAG}` = 'sweep'")
        if found is not None:
            self._reopen(found)
            self.parent_run_id = found
            return found
        tags = {**self.tags, "sweep": self.sweep_name, SWEEP_PATH_TAG: self.sweep_path,
                SWEEP_KEY_TAG: key, ROLE_TAG: "sweep"}
        run = self.client.create_run(exp, tags=tags, run_name=self.sweep_name)
        self.parent_run_id = run.info.run_id  # its params are queued by setup()
        return self.parent_run_id

    def _register(self, trial: Any) -> str:
        """Remember what creating the trial's run needs (its run is made when it can be)."""
        trial_id = str(trial.trial_id)
        if trial_id not in self._info:
            config = dict(getattr(trial, "config", {}) or {})
            tags = {**self.tags, ROLE_TAG: "trial", "sweep": self.sweep_name,
                    "trial_id": trial_id}
            for key in ("dataset", "seed"):
                if key in config:
                    tags[key] = str(config[key])
            if "_skill" in config:
                tags["skill"] = str(config["_skill"])
            params = _params({k: v for k, v in config.items() if not k.startswith("_")})
            name = trial_run_name(tags.get("skill", ""), trial, config, self.name_knobs)
            self._info[trial_id] = {"tags": tags, "params": params, "name": name}
        return trial_id

    def ensure_child(self, trial: Any) -> str:
        """The trial's child run, created on first sight and found again by trial_id on resume."""
        return self._ensure_child_run(self._register(trial))

    def _ensure_child_run(self, trial_id: str) -> str:
        if trial_id in self.child_runs:
            return self.child_runs[trial_id]
        parent = self.ensure_parent()
        found = self._find_run(
            f"tags.`{PARENT_RUN_TAG}` = {_literal(parent)} and tags.trial_id = {_literal(trial_id)}"
        )
        if found is not None:
            self.child_runs[trial_id] = found
            history = self.client.get_metric_history(found, "training_iteration")
            self._logged_step[trial_id] = max((int(m.step) for m in history), default=-1)
            self._load_alphas(trial_id, found)
            return found
        info = self._info.get(trial_id) or {"tags": {ROLE_TAG: "trial", "trial_id": trial_id},
                                            "params": {}}
        name = info.get("name") or f"{self.sweep_name}-{trial_id}"
        run = self.client.create_run(self._ensure_experiment(),
                                     tags={**info["tags"], PARENT_RUN_TAG: parent},
                                     run_name=name)
        run_id = run.info.run_id
        self.child_runs[trial_id] = run_id
        self._apply(trial_id, run_id, {"op": "params", "params": info["params"]})
        return run_id

    # --- artifacts (drawn now into a staged folder, sent with the queue) ----------------------

    def _stage_genotype(self, trial_id: str, genotype_json: str) -> None:
        from skillearn.search_spaces.darts import Genotype, draw_cell

        genotype = Genotype.from_json(genotype_json)
        folder = self._stage()
        Path(folder, "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1))
        draw_cell(genotype, "normal", Path(folder, "cell_normal.png"))
        draw_cell(genotype, "reduce", Path(folder, "cell_reduce.png"))
        self._queue(trial_id, {"op": "artifacts", "dir": str(folder)})

    def _stage_alphas(self, trial_id: str, epoch: int, alphas: dict[str, Any]) -> None:
        self._alphas.setdefault(trial_id, {})[epoch] = alphas
        folder = self._stage()
        Path(folder, f"epoch_{epoch:04d}.json").write_text(json.dumps({"epoch": epoch, **alphas}))
        self._queue(trial_id, {"op": "artifacts", "dir": str(folder), "path": "alphas"})

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

    def _stage_alpha_evolution(self, trial: Any) -> None:
        trial_id = str(trial.trial_id)
        history = self._alphas.get(trial_id)
        if not history:
            return
        from skillearn.search_spaces.darts import draw_alpha_evolution

        epochs = sorted(history)
        config = dict(getattr(trial, "config", {}) or {})
        folder = self._stage()
        for which, name in (("alpha_normal", "alpha_evolution.png"),
                            ("alpha_reduce", "alpha_evolution_reduce.png")):
            series = [history[e][which] for e in epochs if which in history[e]]
            if not series:
                continue
            ops = self._ops.get(trial_id) or _ops_for({}, config, len(series[0][0]))
            draw_alpha_evolution([_as_logits(a) for a in series], ops, Path(folder, name))
        self._queue(trial_id, {"op": "artifacts", "dir": str(folder)})

    def _stage_reweighting(self, trial_id: str, epoch: int, result: Mapping[str, Any]) -> None:
        """MW-Net style plots: the learned loss -> weight curve of every epoch so far, and the
        histogram of this epoch's training-example weights (clean vs mislabelled)."""
        curve = _json_list(result.get("weight_curve"))
        weights = _json_list(result.get("train_weights"))
        noisy = _json_list(result.get("train_is_noisy"))
        if curve is None and (weights is None or noisy is None):
            return
        from skillearn.reweighting.plots import draw_weight_function, draw_weight_histogram

        folder = self._stage()
        if curve is not None:
            self._curves.setdefault(trial_id, {})[epoch] = curve
            history = self._curves[trial_id]
            curves = [([p[0] for p in history[e]], [p[1] for p in history[e]])
                      for e in sorted(history)]
            draw_weight_function(curves, Path(folder, "weight_function.png"))
        if weights is not None and noisy is not None and len(weights) == len(noisy):
            draw_weight_histogram(weights, noisy, Path(folder, "weight_histogram.png"))
        self._queue(trial_id, {"op": "artifacts", "dir": str(folder)})

    def _stage_weight_trends(self, trial_id: str, epoch: int, result: Mapping[str, Any]) -> None:
        """`learned_weights.png`: mean ± std of r / a / b over the epochs this driver has seen."""
        from skillearn.reweighting.trends import draw_weight_trends, has_trends, trend_values

        values = trend_values(result)
        if not has_trends(values):
            return
        history = self._trends.setdefault(trial_id, {})
        history[epoch] = values
        folder = self._stage()
        draw_weight_trends(history, Path(folder, "learned_weights.png"))
        self._queue(trial_id, {"op": "artifacts", "dir": str(folder)})

    def _safely(self, what: str, fn: Any, *args: Any) -> None:
        """Drawing problems are warnings: they never stop a sweep."""
        try:
            fn(*args)
        except Exception as err:
            logger.warning("skillearn: could not draw %s for MLflow: %s", what, err)

    # --- Tune hooks -------------------------------------------------------------------------

    def setup(self, **info: Any) -> None:
        """Create (or find again) the sweep's parent run before the first trial starts; send
        what a previous driver could not."""
        self._queue(SWEEP_KEY, {"op": "reopen"})
        self._queue(SWEEP_KEY, {"op": "params", "params": _params(self.params)})
        self.flush(force=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._queue(self._register(trial), {"op": "reopen"})  # a resumed errored trial runs again
        self.flush()

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._queue(self._register(trial), {"op": "reopen"})
        self.flush()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """Per-epoch metrics in one batch; where the trial runs; genotype, alphas and
        reweighting plots when present."""
        trial_id = self._register(trial)
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        now = int(time.time() * 1000)
        values = numeric_metrics(result)
        if self.metric in values:
            # MLflow lists a run's metrics in the order they were first logged, and its compare
            # view plots the first one in the parallel-coordinates chart: the sweep's metric.
            values = {self.metric: values.pop(self.metric), **values}
        self._queue(trial_id, {"op": "metrics", "step": step, "ts": now, "values": values})
        where = (result.get("node_id"), result.get("node_ip"))
        if all(isinstance(v, str) and v for v in where) and self._where.get(trial_id) != where:
            self._where[trial_id] = where
            self._queue(trial_id, {"op": "tags", "tags": {
                "node_id": where[0], "node_ip": where[1],
                "hardware": str(result.get("hardware") or "unknown")}})
        genotype = result.get("genotype")
        if isinstance(genotype, str) and genotype and self._genotype.get(trial_id) != genotype:
            # drawing two cells costs the driver ~0.5 s: only when the architecture changed
            self._genotype[trial_id] = genotype
            self._safely("the genotype", self._stage_genotype, trial_id, genotype)
        alphas = {}
        for key in ("alpha_normal", "alpha_reduce"):
            value = _json_list(result.get(key))
            if value is not None:
                alphas[key] = value
        if alphas:
            if trial_id not in self._ops:
                n_ops = len(next(iter(alphas.values()))[0])
                self._ops[trial_id] = _ops_for(result, dict(trial.config or {}), n_ops)
            self._safely("the alphas", self._stage_alphas, trial_id, step, alphas)
        self._safely("the reweighting plots", self._stage_reweighting, trial_id, step, result)
        self._safely("the learned weights", self._stage_weight_trends, trial_id, step, result)
        self.flush()

    def _end(self, trial: Any, status: str, error: str | None = None) -> None:
        trial_id = self._register(trial)
        self._safely("the alpha evolution", self._stage_alpha_evolution, trial)
        genotype = self._genotype.get(trial_id)
        if genotype is None:
            last = getattr(trial, "last_result", None) or {}
            genotype = last.get("genotype") if isinstance(last, Mapping) else None
        tags = {}
        if isinstance(genotype, str) and genotype:
            tags["genotype"] = genotype
        if error is not None:
            tags["error"] = error
        if tags:
            self._queue(trial_id, {"op": "tags", "tags": tags})
        self._queue(trial_id, {"op": "terminate", "status": status})
        self._log_best(trial)
        self.flush()

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
            self._queue(SWEEP_KEY, {"op": "metrics", "step": len(self._finished),
                                    "ts": int(time.time() * 1000),
                                    "values": {f"best_{self.metric}": self._best}})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A failed trial that Tune retries from its checkpoint: note why, keep the run open."""
        self._queue(self._register(trial), {"op": "tags",
                                            "tags": {"last_error": _error_message(trial)}})
        self.flush()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = _error_message(trial)
        print(f"skillearn: trial {trial.trial_id} failed: {message}", file=sys.stderr)
        self._end(trial, "FAILED", error=message)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._queue(SWEEP_KEY, {"op": "terminate", "status": "FINISHED"})
        self.drain()

    def drain(self) -> bool:
        """Retry with backoff for `flush_timeout_s` (env SKILLEARN_MLFLOW_FLUSH_S, default 60);
        what is still unsent stays in the backlog file, and the console says how to send it."""
        budget = self.flush_timeout_s
        if budget is None:
            budget = float(os.environ.get("SKILLEARN_MLFLOW_FLUSH_S", FLUSH_TIMEOUT_S))
        deadline = time.monotonic() + budget
        while True:
            if self.flush(force=True):
                self._clean_staging()
                return True
            if time.monotonic() >= deadline or self.refused is not None:
                break
            time.sleep(min(max(self._retry_at - time.monotonic(), 0.5),
                           max(deadline - time.monotonic(), 0.0)))
        self._persist()
        why = "refused the sweep's runs" if self.refused else "is still unreachable"
        print(
            f"skillearn: MLflow at {redact(self.tracking_uri)} {why}; "
            f"{self.pending_count()} writes are saved in {self.backlog_path}. Once it takes them "
            f"run `skillearn sync {shlex.quote(str(self.local_dir()))}` (or `skillearn sweep "
            f"--resume --name {shlex.quote(self.sweep_name)}`) to send them",
            file=sys.stderr,
        )
        return False

    def _clean_staging(self) -> None:
        root = self.local_dir() / STAGING_DIR
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()


def unsent_writes(sweep_path: str, sweep_name: str) -> int:
    """MLflow writes of a sweep still waiting in its backlog (0 when everything was recorded)."""
    return MlflowTracker("", "", sweep_name, sweep_path).pending_count()


def sync_backlog(sweep_dir: str | Path, tracking_uri: str | None = None,
                 timeout_s: float = 30.0) -> int:
    """Send the MLflow writes a sweep could not (its backlog file); returns how many are left.

    `tracking_uri` is needed when the saved one is redacted (it held a password)."""
    path = Path(sweep_dir) / BACKLOG_FILE
    if not path.is_file():
        return 0
    saved = json.loads(path.read_text())
    uri = tracking_uri or saved.get("tracking_uri", "")
    if "***" in uri or not uri:
        raise ValueError(f"{path} was written for {saved.get('tracking_uri')!r}; pass the "
                         "tracking URI with its password (--tracking-uri)")
    tracker = MlflowTracker(uri, saved["experiment"], saved["sweep_name"],
                            saved.get("sweep_path", str(sweep_dir)), flush_timeout_s=timeout_s)
    if "://" not in tracker.sweep_path and Path(tracker.sweep_path) != Path(sweep_dir):
        tracker.sweep_path = str(sweep_dir)  # the folder was moved
    with contextlib.redirect_stderr(io.StringIO()):
        tracker.drain()
    return tracker.pending_count()


def _short(err: BaseException) -> str:
    return redact_text(" ".join(str(err).split()))[:300]


_EXC_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*)([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))"
                       r"(?::\s*(.*))?$")


def error_summary(text: str) -> str:
    """`Type: message` of the exception a traceback text ends with, on one line.

    Prefers skillearn's own errors, told by their module path (Python prints
    `skillearn.….CheckpointError: …`), so a CheckpointError wrapped by Ray stays a
    CheckpointError without a list of names to keep in step; module paths are dropped and
    credentials in URIs masked."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [m for m in (_EXC_LINE.match(line) for line in lines) if m]
    if not found:
        return redact_text(lines[-1]) if lines else "trial failed (no error message recorded)"
    preferred = [m for m in found if m.group(1).startswith("skillearn.")]
    match = (preferred or found)[-1]
    name, message = match.group(2), (match.group(3) or "").strip()
    return redact_text(f"{name}: {message}" if message else name)[:MAX_TAG_CHARS]


def one_line_error(err: BaseException) -> str:
    """`Type: message` of an exception on one line (credentials masked)."""
    message = " ".join(str(err).split())
    return redact_text(f"{type(err).__name__}: {message}" if message else type(err).__name__)


def _error_message(trial: Any) -> str:
    """The trial's error as one line: the exception (skillearn's own preferred) and message."""
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
    return error_summary(text)
