"""The durable write queue between a sweep's driver and its MLflow store.

Writes are queued per run (parent: SWEEP_KEY, children: trial_id) and sent in order. When the
store is unreachable they stay queued — persisted to `mlflow_backlog.json` in the sweep
directory (staged files in `.mlflow_staging/`), so neither a long outage nor a killed driver
loses them — and are sent again with exponential backoff; `drain` retries for a while and
leaves what is still unsent in the file for `skillearn sync` or `skillearn sweep --resume`. A
store that refuses the sweep's runs (a client error, not an outage) is not retried: its writes go
to the backlog at once. Delivery is at least once: a write repeated after a timeout is
idempotent in MLflow (same params, tags, metric points and artifact paths).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from skillearn.platform.mlflow_runs import SWEEP_KEY, SweepRuns
from skillearn.platform.redact import redact, redact_text

logger = logging.getLogger(__name__)

BACKLOG_FILE = "mlflow_backlog.json"
STAGING_DIR = ".mlflow_staging"
MAX_PENDING_OPS = 2000  # in memory; more go to the backlog file
MAX_BACKOFF_S = 30.0
FLUSH_TIMEOUT_S = 60.0


class StoreRefused(Exception):
    """The tracking store answered with a client error for a run itself (not an outage)."""


class RunWriter(Protocol):
    """Where queued writes go: the run of a key, one write to it, and what creating runs needs
    (kept with the backlog)."""

    info: dict[str, dict[str, Any]]

    def resolve(self, key: str) -> str: ...

    def apply(self, key: str, run_id: str, op: dict[str, Any]) -> None: ...


def transient(err: BaseException) -> bool:
    """Whether a failed MLflow write may succeed later (server down, timeout, 5xx, locked db).

    A 4xx answer (bad value, conflicting param) never will: such a write is reported and dropped.
    """
    from mlflow.exceptions import MlflowException

    if isinstance(err, MlflowException):
        return err.get_http_status_code() >= 500
    return True


def short_error(err: BaseException) -> str:
    return redact_text(" ".join(str(err).split()))[:300]


class WriteQueue:
    """Ordered, persisted, retried writes to a sweep's runs (see the module docstring)."""

    def __init__(self, tracking_uri: str, experiment: str, sweep_name: str, sweep_path: str,
                 writer: RunWriter, *, flush_timeout_s: float | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.sweep_path = sweep_path
        self.writer = writer
        self.flush_timeout_s = flush_timeout_s
        self.pending: dict[str, list[dict[str, Any]]] = {}  # run key -> ops in order
        self._failures = 0
        self._retry_at = 0.0
        self._outage_since: float | None = None
        self.refused: str | None = None  # why the store refused the sweep's runs (client error)

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

    def stage(self) -> Path:
        """A fresh folder for files to log (kept until they are sent)."""
        root = self.local_dir() / STAGING_DIR
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=root))

    # --- queueing ----------------------------------------------------------------------------

    def put(self, key: str, op: dict[str, Any]) -> None:
        self.pending.setdefault(key, []).append(op)
        if sum(len(ops) for ops in self.pending.values()) > MAX_PENDING_OPS:
            self.persist()  # bounded memory: the overflow waits on disk, nothing is dropped

    def pending_count(self) -> int:
        """Writes not yet sent (in memory and in the backlog file)."""
        count = sum(len(ops) for ops in self.pending.values())
        if self.backlog_path.is_file():
            try:
                saved = json.loads(self.backlog_path.read_text())
                count += sum(len(ops) for ops in saved.get("pending", {}).values())
            except (OSError, ValueError):
                pass
        return count

    def persist(self) -> None:
        """Move the in-memory queue into the backlog file (merged after what it holds)."""
        if not self.pending:
            return
        path = self.backlog_path
        saved: dict[str, Any] = {"pending": {}, "info": {}}
        if path.is_file():
            saved = json.loads(path.read_text())
        for key, ops in self.pending.items():
            saved["pending"].setdefault(key, []).extend(ops)
        for key, info in self.writer.info.items():
            saved["info"].setdefault(key, info)
        saved.update(
            version=1, tracking_uri=redact(self.tracking_uri), experiment=self.experiment,
            sweep_name=self.sweep_name, sweep_path=self.sweep_path,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, path)  # atomic: a killed driver leaves the old or the new file
        self.pending = {}

    def load_backlog(self) -> None:
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
            self.writer.info.setdefault(key, info)
        merged: dict[str, list[dict[str, Any]]] = {}
        for key, ops in saved.get("pending", {}).items():
            merged[key] = list(ops)
        for key, ops in self.pending.items():
            merged.setdefault(key, []).extend(ops)
        self.pending = merged
        path.unlink()

    # --- sending -----------------------------------------------------------------------------

    def flush(self, *, force: bool = False) -> bool:
        """Send the queued writes in order; True when nothing is left.

        On a transient failure the rest stays queued (and goes to the backlog file) and no new
        attempt is made before the backoff expires (2, 4, ... up to 30 s), so a dead server does
        not stall Tune on every event.
        """
        if not force and time.monotonic() < self._retry_at:
            if self.pending:
                self.persist()
            return False
        if self.refused is not None:  # a client error never heals by itself: no retries
            self.persist()
            return False
        self.load_backlog()
        try:
            self._send()
        except StoreRefused as err:
            self.refused = short_error(err.__cause__ or err)
            print(f"skillearn: error: MLflow at {redact(self.tracking_uri)} refused the sweep's "
                  f"runs ({self.refused}); their writes are kept in {self.backlog_path}",
                  file=sys.stderr)
            self.persist()
            return False
        except Exception as err:
            self._failures += 1
            self._retry_at = time.monotonic() + min(MAX_BACKOFF_S, 2.0 ** self._failures)
            if self._outage_since is None:
                self._outage_since = time.monotonic()
                logger.warning(
                    "skillearn: MLflow at %s is unreachable (%s); buffering its writes in %s and "
                    "retrying", redact(self.tracking_uri), short_error(err), self.backlog_path,
                )
            self.persist()
            return False
        if self._outage_since is not None:
            logger.warning("skillearn: MLflow at %s is back after %.0f s; buffered writes sent",
                           redact(self.tracking_uri), time.monotonic() - self._outage_since)
        self._failures, self._retry_at, self._outage_since = 0, 0.0, None
        return True

    def _send(self) -> None:
        keys = sorted(self.pending, key=lambda k: k != SWEEP_KEY)  # the parent first
        for key in keys:
            ops = self.pending[key]
            try:
                run_id = self.writer.resolve(key)
            except Exception as err:
                if transient(err):
                    raise
                raise StoreRefused(err) from err
            while ops:
                op = ops[0]
                try:
                    self.writer.apply(key, run_id, op)
                except Exception as err:
                    if transient(err):
                        raise
                    logger.warning("skillearn: MLflow refused %s for run %s: %s (dropped)",
                                   op.get("op"), run_id, short_error(err))
                ops.pop(0)
                if op.get("op") == "artifacts":
                    shutil.rmtree(op["dir"], ignore_errors=True)
            del self.pending[key]

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
        self.persist()
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


def _queue_for(tracking_uri: str, experiment: str, sweep_name: str, sweep_path: str,
               flush_timeout_s: float | None = None) -> WriteQueue:
    runs = SweepRuns(tracking_uri, experiment, sweep_name, sweep_path)
    return WriteQueue(tracking_uri, experiment, sweep_name, sweep_path, runs,
                      flush_timeout_s=flush_timeout_s)


def unsent_writes(sweep_path: str, sweep_name: str) -> int:
    """MLflow writes of a sweep still waiting in its backlog (0 when everything was recorded)."""
    return _queue_for("", "", sweep_name, sweep_path).pending_count()


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
    sweep_path = saved.get("sweep_path", str(sweep_dir))
    if "://" not in sweep_path and Path(sweep_path) != Path(sweep_dir):
        sweep_path = str(sweep_dir)  # the folder was moved
    queue = _queue_for(uri, saved["experiment"], saved["sweep_name"], sweep_path,
                       flush_timeout_s=timeout_s)
    with contextlib.redirect_stderr(io.StringIO()):
        queue.drain()
    return queue.pending_count()
