"""Fast checks of the cluster-mode pieces: credential redaction, the tracker's write buffer and
backlog (an unreachable server loses nothing), one-line trial errors, reweighting plots, and the
Optuna storage checks."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from skillearn.artifacts import WeightHistogram, WeightTrends, artifacts_payload
from skillearn.platform.redact import redact, redact_text
from skillearn.platform.secrets import SecretError
from skillearn.platform.validate import UsageError, check_optuna_storage, optuna_schema
from skillearn.trainables.weight_reports import weight_function


def test_redact_hides_passwords_and_secret_query_values() -> None:
    assert redact("postgresql://mlflow:s3cret@db:5432/mlflow") == \
        "postgresql://mlflow:***@db:5432/mlflow"
    assert redact("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert redact("sqlite:////tmp/x/mlflow.db") == "sqlite:////tmp/x/mlflow.db"
    assert redact("https://host/x?token=abc&run=1") == "https://host/x?token=***&run=1"
    assert redact("postgresql://u:p@h/db?options=-csearch_path%3Doptuna").startswith(
        "postgresql://u:***@h/db?options=")
    assert redact(None) == ""
    assert redact_text("failed: postgresql://u:pw@h/db down") == \
        "failed: postgresql://u:***@h/db down"


def test_error_summary_prefers_skillearn_errors_on_one_line() -> None:
    from skillearn.platform.tracking import error_summary

    text = ("Failure # 1\nray::ImplicitFunc.train() (pid=1, ip=1.2.3.4)\n  File x\n"
            "skillearn.trainables.checkpoint.CheckpointError: checkpoint /r/t/trial.pt is "
            "corrupt: bad\n\nThe above exception was the direct cause of:\n"
            "ray.exceptions.RayTaskError(CheckpointError): wrapped\n")
    assert error_summary(text) == "CheckpointError: checkpoint /r/t/trial.pt is corrupt: bad"
    assert error_summary("Traceback\nValueError: boom\n") == "ValueError: boom"
    # told by module path, not by a list of names: a skillearn error raised in a trial wins
    # over the library error Ray's report ends with
    nan = ("Traceback\nskillearn.trainables.runner.NonFiniteError: training loss became nan\n"
           "\nDuring handling:\nray.tune.error.TuneError: trial failed\n")
    assert error_summary(nan) == "NonFiniteError: training loss became nan"
    unroll = "skillearn.mlo.unroll.UnrollError: Adagrad cannot unroll\nRuntimeError: wrapped\n"
    assert error_summary(unroll) == "UnrollError: Adagrad cannot unroll"  # a newer error class
    assert error_summary("") == "trial failed (no error message recorded)"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once it is closed


def _trial(trial_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"_skill": "mwnet", "w_lr": 0.1},
                           last_result={}, error_file=None)


def test_unreachable_server_buffers_to_the_backlog_and_sync_sends_it(tmp_path: Path,
                                                                     monkeypatch) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import BACKLOG_FILE, MlflowTracker, sync_backlog

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    sweep = tmp_path / "runs" / "sweep"
    tracker = MlflowTracker(f"http://127.0.0.1:{_closed_port()}", "exp", "sweep", str(sweep),
                            params={"samples": 1}, flush_timeout_s=0.0)
    trial = _trial("t1")
    tracker.setup()
    tracker.on_trial_start(iteration=0, trials=[trial], trial=trial)
    artifacts = artifacts_payload([
        weight_function([[0.0, 0.9], [1.0, 0.5], [2.0, 0.1]]),
        WeightHistogram(weights=[0.9, 0.1, 0.8], is_noisy=[0, 1, 0]),
        WeightTrends(values={"a_mean": 0.5, "a_std": 0.1}),
    ])
    for epoch in (1, 2):
        result = {"epoch": epoch, "val_acc": 0.5 + epoch / 10, "artifacts": artifacts,
                  "a_mean": 0.5, "a_std": 0.1, "node_id": "abc", "node_ip": "127.0.0.1"}
        trial.last_result = result
        tracker.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
    tracker.on_trial_complete(iteration=3, trials=[trial], trial=trial)
    tracker.on_experiment_end(trials=[trial])  # no retry budget: everything stays on disk
    backlog = json.loads((sweep / BACKLOG_FILE).read_text())
    assert backlog["pending"]["t1"] and backlog["pending"]["__sweep__"]
    assert tracker.pending_count() > 0

    # the server "comes back" (here: a SQLite store) and `skillearn sync` sends it all
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    assert sync_backlog(sweep, uri) == 0
    assert not (sweep / BACKLOG_FILE).exists()
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp").experiment_id])
    child = next(r for r in runs if r.data.tags.get("skillearn.role") == "trial")
    parent = next(r for r in runs if r.data.tags.get("skillearn.role") == "sweep")
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == [1, 2]
    assert child.data.tags["node_id"] == "abc" and child.data.params["w_lr"] == "0.1"
    names = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"weight_function.png", "weight_histogram.png", "learned_weights.png"} <= names
    assert parent.data.params["samples"] == "1"


def test_optuna_storage_checks(tmp_path: Path) -> None:
    assert check_optuna_storage(f"sqlite:///{tmp_path}/o.db") == f"sqlite:///{tmp_path}/o.db"
    with pytest.raises(UsageError, match="not a database URL"):
        check_optuna_storage("http://host/optuna")
    with pytest.raises(SecretError, match=r"user:\*\*\*@"):
        check_optuna_storage("postgresql://user:pw@127.0.0.1:1/db")
    assert optuna_schema("postgresql://u:p@h/db?options=-csearch_path%3Doptuna") == "optuna"
    assert optuna_schema("postgresql://u:p@h/db") is None
    # MLflow's own database cannot hold the study (both use an alembic_version table)
    from mlflow.tracking import MlflowClient

    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()
    with pytest.raises(UsageError, match="holds MLflow's tables"):
        check_optuna_storage(f"sqlite:///{tmp_path}/mlflow.db")
