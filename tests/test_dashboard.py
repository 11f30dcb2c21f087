"""`skillearn dashboard SWEEP`: finds the sweep's Optuna study, refuses bad requests in one line,
and serves optuna-dashboard on 127.0.0.1 (its API answers with the study's trials).

The study here is written by Optuna directly (no Ray): the sweep folder layout is the one
`run_sweep` writes (`skillearn_sweep.json`, `optuna.db`, the study named after the sweep). The
browser test (tests/test_ui_browser.py) opens the dashboard of a real sweep.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, kill_group, wait_http

from skillearn.platform.cli import main
from skillearn.platform.dashboard import locate_study, open_study_storage
from skillearn.platform.validate import UsageError, write_sweep_record


def _sweep(root: Path, name: str = "lfm-digits-1", trials: int = 3) -> Path:
    import optuna

    folder = root / "runs" / name
    write_sweep_record(str(folder), "lfm", name, "digits", f"sqlite:///{folder}/optuna.db")
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{folder}/optuna.db",
                                direction="maximize")
    for k in range(trials):
        trial = study.ask({"w_lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)})
        study.tell(trial, 0.5 + 0.1 * k)
    return folder


def test_locates_the_study_by_folder_or_by_name(tmp_path: Path) -> None:
    folder = _sweep(tmp_path)
    by_folder = locate_study(str(folder))
    by_name = locate_study("lfm-digits-1", storage=str(tmp_path / "runs"))
    assert by_folder == by_name
    assert by_folder.name == "lfm-digits-1" and by_folder.url.endswith("/optuna.db")
    storage = open_study_storage(by_folder)
    study_id = storage.get_study_id_from_name("lfm-digits-1")
    assert len(storage.get_all_trials(study_id)) == 3


def test_a_placeholder_password_is_recorded_a_plain_one_never(tmp_path: Path) -> None:
    url = "postgresql://optuna:${OPTUNA_DB_PASSWORD}@db/optuna"
    write_sweep_record(str(tmp_path / "a"), "lfm", "a", "digits", url)
    write_sweep_record(str(tmp_path / "b"), "lfm", "b", "digits", "postgresql://u:s3cret@db/o")
    assert json.loads((tmp_path / "a" / "skillearn_sweep.json").read_text())[
        "optuna_storage"] == url
    assert "s3cret" not in (tmp_path / "b" / "skillearn_sweep.json").read_text()
    assert locate_study(str(tmp_path / "a")).url == url


@pytest.mark.parametrize("case", ["no-sweep", "no-study-file", "other-study", "port", "secret"])
def test_bad_requests_are_one_line(tmp_path: Path, capsys, monkeypatch, case: str) -> None:
    folder = _sweep(tmp_path)
    args = ["dashboard", str(folder), "--port", str(free_port())]
    expected = {"no-sweep": "no sweep", "no-study-file": "no Optuna study",
                "other-study": "has no study 'elsewhere'", "port": "another program uses it",
                "secret": "OPTUNA_DB_PASSWORD"}[case]
    holder = None
    if case == "no-sweep":
        args[1] = "missing-sweep"
    elif case == "no-study-file":
        (folder / "optuna.db").unlink()
    elif case == "other-study":
        record = json.loads((folder / "skillearn_sweep.json").read_text())
        (folder / "skillearn_sweep.json").write_text(json.dumps({**record, "name": "elsewhere"}))
    elif case == "port":
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        args[-1] = str(holder.getsockname()[1])
    elif case == "secret":
        monkeypatch.delenv("OPTUNA_DB_PASSWORD", raising=False)
        args += ["--optuna-storage", "postgresql://optuna:${OPTUNA_DB_PASSWORD}@127.0.0.1/o"]
    try:
        assert main(args) == 2
    finally:
        if holder is not None:
            holder.close()
    err = capsys.readouterr().err.strip()
    assert err.startswith("skillearn: error:") and "\n" not in err and expected in err, err


def test_locate_study_refuses_an_unknown_sweep(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no sweep"):
        locate_study("nope", storage=str(tmp_path))


def test_serves_the_study_on_loopback(tmp_path: Path) -> None:
    folder = _sweep(tmp_path, trials=4)
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "skillearn.platform.cli", "dashboard", str(folder),
         "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/studies", timeout=60, proc=proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=10) as r:
            studies = json.load(r)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["lfm-digits-1"]
        study_id = studies[0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}",
                                    timeout=10) as r:
            detail = json.load(r)
        assert len(detail["trials"]) == 4
        assert detail["best_trials"][0]["values"] == [pytest.approx(0.8)]
        with socket.socket() as probe:  # bound to loopback only
            host = socket.gethostbyname(socket.gethostname())
            if not host.startswith("127."):
                assert probe.connect_ex((host, port)) != 0
    finally:
        kill_group(proc)
        log.close()
    assert "Optuna dashboard of study 'lfm-digits-1'" in (tmp_path / "dashboard.log").read_text()


def test_ui_links_the_experiment_in_model_training_mode(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from skillearn.platform.cli import _experiment_page

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    experiment_id = MlflowClient(uri).create_experiment("skillearn")
    assert _experiment_page(uri, "skillearn") == (
        f"#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    assert _experiment_page(uri, "other") == "#/experiments?workflowType=machine_learning"
