"""Never "success" with nothing recorded, and no secret where it does not belong (fast part).

- user text (a quote in a sweep name, storage path or working directory) never reaches an MLflow
  filter string: runs are still created and found again on resume;
- a store that refuses requests (not an MLflow database, another program's database, a scheme
  MLflow cannot track to, an HTTP server refusing credentials or not speaking MLflow) is one
  `skillearn: error:` line before Ray starts, with nothing written; one that starts refusing
  mid-sweep is not mistaken for an outage: its writes are kept and not retried forever;
- passwords only as `${VAR}` placeholders, URL-encoded when used, masked when shown, and absent
  from every pickle (the Optuna storage pickles the placeholder).

The end-to-end versions (real sweeps) are in test_tracking_hardening_e2e.py.
"""

from __future__ import annotations

import http.server
import json
import pickle
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from skillearn.platform.cli import main

SECRET = "pw&#@/?{x}%20 ;'\""  # every character that used to break a URI or a shell


def _trial(trial_id: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"_skill": "darts", "dataset": "digits",
                                                      "seed": 0, "w_lr": 0.1},
                           last_result={}, error_file=None)


def _run_trial(tracker, trial, epochs: int = 2) -> None:
    tracker.on_trial_start(iteration=0, trials=[trial], trial=trial)
    for epoch in range(1, epochs + 1):
        result = {"epoch": epoch, "val_acc": 0.5 + epoch / 10, "training_iteration": epoch}
        trial.last_result = result
        tracker.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
    tracker.on_trial_complete(iteration=epochs, trials=[trial], trial=trial)


# --- quotes in names and paths ----------------------------------------------------------------


def test_quotes_in_sweep_path_and_name_record_every_run_and_resume_finds_them(
    tmp_path: Path,
) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.tracking import MlflowTracker

    home = tmp_path / "o'brien" / 'say "hi"'
    home.mkdir(parents=True)
    uri = f"sqlite:///{home}/mlflow.db"
    name = "it's a \"sweep\" \\ `x`"
    sweep_path = str(home / "runs'" / name)
    filters: list[str] = []

    def spy(tracker):
        search = tracker.client.search_runs

        def recording(*args, **kwargs):
            filters.append(kwargs.get("filter_string", ""))
            return search(*args, **kwargs)

        tracker.client.search_runs = recording
        return tracker

    tracker = spy(MlflowTracker(uri, "exp'\"", name, sweep_path, params={"epochs": 2}))
    tracker.setup()
    first = _trial("t_00000")
    _run_trial(tracker, first)
    pickled = pickle.dumps(tracker)
    tracker.on_experiment_end(trials=[first])
    assert tracker.pending_count() == 0

    resumed = spy(pickle.loads(pickled))  # a resumed sweep finds its runs again
    resumed.setup()
    again, second = _trial("t_00000"), _trial("t_00001")
    resumed.on_trial_start(iteration=0, trials=[again], trial=again)
    _run_trial(resumed, second, epochs=1)
    resumed.on_experiment_end(trials=[again, second])
    assert resumed.pending_count() == 0

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("exp'\"").experiment_id])
    parents = [r for r in runs if r.data.tags["skillearn.role"] == "sweep"]
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags["skillearn.role"] ==
                "trial"}
    assert len(parents) == 1 and set(children) == {"t_00000", "t_00001"} and len(runs) == 3
    assert parents[0].data.tags["skillearn.sweep_path"] == sweep_path
    assert parents[0].data.tags["sweep"] == name
    for trial_id, epochs in (("t_00000", 2), ("t_00001", 1)):
        history = client.get_metric_history(children[trial_id].info.run_id, "val_acc")
        assert [m.step for m in history] == list(range(1, epochs + 1))
    assert filters  # runs were looked up, by hashes and ids only: no user text in any filter
    assert not any(part in f for f in filters for part in ("brien", "it's", "runs", "exp"))


# --- stores that refuse are fatal before Ray -------------------------------------------------


class _Refusing(http.server.BaseHTTPRequestHandler):
    """/health answers 200 (it is "up"); every API request gets `status`."""

    status = 401

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = 200 if self.path.startswith("/health") else self.status
        body = b"OK" if code == 200 else json.dumps(
            {"error_code": {401: "UNAUTHENTICATED", 503: "TEMPORARILY_UNAVAILABLE"}.get(
                code, "ENDPOINT_NOT_FOUND"),
             "message": "refused"}).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args) -> None:
        pass


@contextmanager
def _refusing_server(status: int) -> Iterator[str]:
    handler = type("Handler", (_Refusing,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _not_a_database(tmp: Path) -> str:
    (tmp / "notes.db").write_text("this is a text file, not a database\n")
    return f"sqlite:///{tmp}/notes.db"


def _other_programs_database(tmp: Path) -> str:
    with sqlite3.connect(tmp / "other.db") as db:
        db.execute("CREATE TABLE alembic_version (version_num TEXT)")
        db.execute("CREATE TABLE studies (id INTEGER)")
    return f"sqlite:///{tmp}/other.db"


REFUSED_STORES = {
    "not-a-database": (_not_a_database, "not an SQLite database"),
    "another-programs-database": (_other_programs_database, "another program"),
    "unknown-scheme": (lambda tmp: "gopher://mlflow.example/x", "cannot track to"),
    "401": (401, "refused the credentials"),
    "404-not-mlflow": (404, "is it an MLflow tracking store"),
}


@pytest.mark.parametrize("command", ["sweep", "report", "sync"])
@pytest.mark.parametrize("case", sorted(REFUSED_STORES))
def test_a_refusing_store_is_one_error_before_ray_with_nothing_written(
    case: str, command: str, tmp_path: Path, monkeypatch, capsys,
) -> None:
    import ray

    monkeypatch.chdir(tmp_path)
    make, needle = REFUSED_STORES[case]
    sweep_dir = tmp_path / "old-sweep"
    sweep_dir.mkdir()
    (sweep_dir / "mlflow_backlog.json").write_text(json.dumps(
        {"pending": {}, "info": {}, "tracking_uri": "sqlite:///x.db", "experiment": "e",
         "sweep_name": "s", "sweep_path": str(sweep_dir)}))

    def run(uri: str) -> int:
        args = {"sweep": ["sweep", "darts", "--epochs", "1", "--samples", "1", "--storage",
                          str(tmp_path / "runs")],
                "report": ["report"], "sync": ["sync", str(sweep_dir)]}[command]
        return main([*args, "--tracking-uri", uri])

    before = sorted(p.name for p in tmp_path.rglob("*"))
    if isinstance(make, int):
        with _refusing_server(make) as url:
            code = run(url)
    else:
        uri = make(tmp_path)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        content = {p: p.read_bytes() for p in tmp_path.glob("*.db")}
        code = run(uri)
        assert {p: p.read_bytes() for p in tmp_path.glob("*.db")} == content
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("skillearn: error: "), err
    assert needle in lines[0] and "Traceback" not in err
    assert not ray.is_initialized()
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_a_store_refusing_mid_sweep_keeps_the_writes_without_retrying(tmp_path: Path,
                                                                       capsys) -> None:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED

    from skillearn.platform.tracking import MlflowTracker, unsent_writes

    sweep = tmp_path / "runs" / "s"
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", "exp", "s", str(sweep),
                            flush_timeout_s=600.0)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise MlflowException("user may not create runs", error_code=PERMISSION_DENIED)

    tracker.client.create_run = refuse
    tracker.setup()
    _run_trial(tracker, _trial("t_00000"))
    tracker.on_experiment_end(trials=[])  # returns at once: a refusal does not heal by waiting
    err = capsys.readouterr().err
    assert len(calls) == 1  # asked once, then the writes went straight to the backlog
    assert tracker.refused and "user may not create runs" in tracker.refused
    assert unsent_writes(str(sweep), "s") > 0
    assert "refused the sweep's runs" in err and "skillearn sync" in err


def test_backlog_left_means_a_non_zero_exit(tmp_path: Path, monkeypatch, capsys) -> None:
    """`skillearn sweep` returns 3 (not 0) when writes wait in the backlog at its end."""
    import skillearn.platform.sweep as sweep_module
    from skillearn.platform.tracking import BACKLOG_FILE

    monkeypatch.chdir(tmp_path)

    def fake_run(spec):  # the sweep itself (Ray) is exercised in the e2e module
        Path(spec.path).mkdir(parents=True, exist_ok=True)  # the dry run created it
        (Path(spec.path) / BACKLOG_FILE).write_text(json.dumps(
            {"pending": {"__sweep__": [{"op": "terminate", "status": "FINISHED"}]}}))
        return {"val_acc": 0.5}

    monkeypatch.setattr(sweep_module, "run_sweep", fake_run)
    args = ["sweep", "darts", "--epochs", "1", "--samples", "1", "--storage",
            str(tmp_path / "runs")]
    assert main([*args, "--name", "left"]) == 3
    monkeypatch.setattr(sweep_module, "run_sweep", lambda spec: {"val_acc": 0.5})
    assert main([*args, "--name", "clean"]) == 0


# --- secrets -------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--tracking-uri", "--optuna-storage"])
def test_a_plain_text_password_is_refused_and_never_echoed(flag: str, tmp_path: Path,
                                                           monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    uri = "postgresql://mlflow:Pl41n#t/x?t@127.0.0.1:9/mlflow"
    code = main(["sweep", "darts", "--epochs", "1", "--storage", str(tmp_path / "runs"),
                 flag, uri])
    err = capsys.readouterr().err
    assert code == 2 and "plain text" in err and "${" in err
    assert "Pl41n" not in err and "t/x?t" not in err
    assert not (tmp_path / "runs").exists()


def test_an_unset_password_variable_is_named(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKL_NOT_SET", raising=False)
    code = main(["sweep", "darts", "--storage", str(tmp_path / "runs"), "--optuna-storage",
                 "postgresql://u:${SKL_NOT_SET}@127.0.0.1:9/db"])
    assert code == 2 and "SKL_NOT_SET" in capsys.readouterr().err


def test_placeholders_are_url_encoded_when_used_and_kept_when_shown(monkeypatch) -> None:
    import urllib.parse

    from skillearn.platform.redact import redact, redact_text
    from skillearn.platform.secrets import check_uri_secrets, expand_secrets

    monkeypatch.setenv("SKL_PW", SECRET)
    template = "postgresql://mlflow:${SKL_PW}@db:5432/mlflow?options=-csearch_path%3Doptuna"
    assert check_uri_secrets(template, "--optuna-storage") == template
    used = expand_secrets(template)
    parts = urllib.parse.urlsplit(used)
    assert urllib.parse.unquote(parts.password) == SECRET and parts.hostname == "db"
    assert parts.port == 5432 and parts.path == "/mlflow"
    assert redact(template) == template  # the placeholder is no secret: shown as written
    # plain passwords holding # / ? @ are masked whole, in URIs and in free text
    for raw in ("a#b", "a/b", "a?b", "a@b", "p&#@/?x"):
        uri = f"postgresql://mlflow:{raw}@db:5432/mlflow"
        assert redact(uri) == "postgresql://mlflow:***@db:5432/mlflow", raw
        assert redact_text(f"failed: {uri} (down)") == \
            "failed: postgresql://mlflow:***@db:5432/mlflow (down)", raw


def test_the_optuna_storage_pickles_the_placeholder_not_the_password(tmp_path: Path,
                                                                     monkeypatch) -> None:
    """EnvRDBStorage against SQLite (no password possible there): its pickled URL is the template
    it was given, and unpickling reads the environment again."""
    from skillearn.platform.study_storage import EnvRDBStorage, study_storage

    storage = study_storage(f"sqlite:///{tmp_path}/o/optuna.db")
    assert isinstance(storage, EnvRDBStorage)
    monkeypatch.setenv("SKL_PW", SECRET)
    state = storage.__getstate__()
    assert state["url"] == state["url_template"] == f"sqlite:///{tmp_path}/o/optuna.db"
    storage.url_template = "postgresql://u:${SKL_PW}@db/x"
    state = storage.__getstate__()
    blob = pickle.dumps(state)
    assert SECRET.encode() not in blob and b"${SKL_PW}" in blob
    restored = pickle.loads(pickle.dumps(study_storage(f"sqlite:///{tmp_path}/o/optuna.db")))
    assert restored.url == f"sqlite:///{tmp_path}/o/optuna.db"
    restored.get_all_studies()  # a working storage again


def test_a_busy_server_is_an_outage_not_a_refusal(capsys) -> None:
    """/health answers but the API gives 503: reported, not fatal (the tracker buffers)."""
    from skillearn.platform.store_probe import probe_tracking_store

    with _refusing_server(503) as url:
        probe_tracking_store(url)
    err = capsys.readouterr().err
    assert "is up but did not answer" in err and len(err.strip().splitlines()) == 1
