"""Real sweeps (digits, 1 epoch, 2 trials) for the hardening promises on MLflow and secrets:

- a quote in the sweep name, the storage path and the working directory (where the default
  SQLite store lives): exit 0 and every run recorded;
- passwords given as `${VAR}` for an HTTP tracking server and (with SKILLEARN_TEST_POSTGRES) a
  PostgreSQL Optuna storage: no file under the sweep storage holds them (tuner.pkl, searcher
  state, backlog, trial folders); the server stopped mid-sweep leaves a backlog, so the sweep
  exits 3 and says how to send it; `skillearn sync` sends it once the server is back.

Slow (about two minutes on 2 cores).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
from conftest import POSTGRES_ENV, TINY, mlflow_server

from skillearn.platform.cli import main

pytestmark = pytest.mark.slow

TWO_TRIALS = ["--samples", "2", "--concurrency", "2", "--cpus-per-trial", "0.5", "--no-asha"]
MLFLOW_SECRET = "mlf&#@/?{x}%20;'\"pw"


def _runs(uri: str, experiment: str) -> tuple[list, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    parents = [r for r in runs if r.data.tags.get("skillearn.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("skillearn.role") == "trial"]
    return parents, children


def _assert_recorded(uri: str, experiment: str, trials: int = 2) -> None:
    from mlflow.tracking import MlflowClient

    parents, children = _runs(uri, experiment)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == trials
    client = MlflowClient(uri)
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")] == [1]


def test_quotes_in_name_storage_and_cwd_still_record_every_run(tmp_path: Path, monkeypatch,
                                                               capsys) -> None:
    pytest.importorskip("ray")
    home = tmp_path / "home" / "o'brien"
    home.mkdir(parents=True)
    monkeypatch.chdir(home)  # the default store: sqlite:///.../o'brien/mlflow.db
    name = "it's \"quoted\""
    code = main(["sweep", "darts", *TWO_TRIALS, *TINY, "--storage", str(home / "runs 'a'"),
                 "--name", name])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    _assert_recorded(f"sqlite:///{home}/mlflow.db", "skillearn")
    assert not (home / "runs 'a'" / name / "mlflow_backlog.json").exists()


def _postgres_template(monkeypatch) -> tuple[str, list[str]] | None:
    """SKILLEARN_TEST_POSTGRES with its password moved into an environment variable:
    (URL with ${SKL_E2E_DB_PW}, the password's forms to look for) or None."""
    from skillearn.platform.secrets import split_userinfo

    url = os.environ.get(POSTGRES_ENV)
    if not url:
        return None
    pytest.importorskip("psycopg")
    scheme, user, password, rest = split_userinfo(url)
    password = urllib.parse.unquote(password or "")
    monkeypatch.setenv("SKL_E2E_DB_PW", password)
    schema = f"optuna_{uuid.uuid4().hex[:8]}"
    template = f"{scheme}{user}:${{SKL_E2E_DB_PW}}@{rest}?options=-csearch_path%3D{schema}"
    forms = [f":{password}@", f":{urllib.parse.quote(password, safe='')}@"]
    if len(password) >= 12:  # long enough not to occur by chance (the CI's is the user name)
        forms += [password, urllib.parse.quote(password, safe="")]
    return template, forms


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for n in needles if n.encode() in data]
    return found


def test_password_uris_leave_no_secret_in_storage_and_a_backlog_exits_non_zero(
    tmp_path: Path, monkeypatch, capsys,
) -> None:
    pytest.importorskip("ray")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SKL_E2E_MLFLOW_PW", MLFLOW_SECRET)
    monkeypatch.setenv("SKILLEARN_MLFLOW_FLUSH_S", "2")  # give up quickly at the end
    needles = [MLFLOW_SECRET, urllib.parse.quote(MLFLOW_SECRET, safe="")]
    postgres = _postgres_template(monkeypatch)
    study = ["--optuna-storage", postgres[0]] if postgres else []
    needles += postgres[1] if postgres else []
    experiment = f"secret-{uuid.uuid4().hex[:8]}"
    backend = tmp_path / "server.db"
    sweep_dir = tmp_path / "runs" / "secret"

    def stop_after_setup(server) -> None:
        """SIGSTOP the server once the sweep's parent run exists (set-up done, no trial yet)."""
        deadline = time.time() + 240
        while time.time() < deadline and not stop.is_set():
            try:
                with sqlite3.connect(f"file:{backend}?mode=ro", uri=True) as db:
                    if db.execute("SELECT count(*) FROM runs").fetchone()[0]:
                        os.killpg(server.pid, signal.SIGSTOP)
                        stopped.set()
                        return
            except sqlite3.Error:
                pass
            time.sleep(0.1)

    stop, stopped = threading.Event(), threading.Event()
    with mlflow_server(f"sqlite:///{backend}", tmp_path / "artifacts", tmp_path / "server.log",
                       start_timeout=300) as (url, server):  # a loaded 2-core machine is slow
        template = url.replace("http://", "http://skillearn:${SKL_E2E_MLFLOW_PW}@")
        watcher = threading.Thread(target=stop_after_setup, args=(server,), daemon=True)
        watcher.start()
        try:
            code = main(["sweep", "darts", *TWO_TRIALS, *TINY, "--storage",
                         str(tmp_path / "runs"), "--name", "secret", "--tracking-uri", template,
                         "--experiment", experiment, *study])
        finally:
            stop.set()
            watcher.join(timeout=10)
            os.killpg(server.pid, signal.SIGCONT)
        captured = capsys.readouterr()
        assert stopped.is_set(), f"the server was never stopped: {captured.err[-2000:]}"
        assert code == 3, captured.err[-3000:]
        assert "skillearn sync" in captured.err and (sweep_dir / "mlflow_backlog.json").is_file()
        for text in (captured.out, captured.err):
            assert not any(n in text for n in needles)
        assert (sweep_dir / "tuner.pkl").is_file()
        assert list(sweep_dir.glob("searcher-state*")) or list(sweep_dir.glob("*.pkl"))
        assert _files_holding(tmp_path / "runs", needles) == []

        # the server is back: the backlog (saved with the placeholder) is sent
        assert main(["sync", str(sweep_dir)]) == 0, capsys.readouterr()
        _assert_recorded(url, experiment)
        assert _files_holding(tmp_path / "runs", needles) == []
