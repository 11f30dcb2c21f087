"""End-to-end sweeps on a real local Ray (2 CPUs): MLflow runs and artifacts, kill and resume.

Slow (about a minute); deselect with `-m "not slow"`. Every Ray started here is shut down: the
in-process one by the module fixture, the killed subprocess's one by its process group (it has
its own RAY_TMPDIR, so nothing else on the machine is touched).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import kill_marked, wait_for_finished_trials

from skillearn.platform.cli import main

pytestmark = pytest.mark.slow

TINY = ["--epochs", "1", "--set", "steps_per_epoch=2", "--set", "fd_gap_every=0"]


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    pytest.importorskip("skillearn.trainables.runner")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _children(uri: str, experiment: str = "skillearn"):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return client, []
    runs = client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")
    return client, runs


def _skill_or_skip(name: str) -> None:
    from skillearn.trainables.registry import get_skill

    try:
        get_skill(name)
    except ImportError as err:
        pytest.skip(f"skill {name} not available yet: {err}")


@pytest.mark.parametrize("skill", ["darts", "lfm"])
def test_sweep_logs_trials_to_mlflow(skill: str, local_ray, tmp_path: Path) -> None:
    _skill_or_skip(skill)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    code = main(["sweep", skill, "--samples", "2", "--storage", str(tmp_path / "runs"),
                 "--tracking-uri", uri, "--name", f"e2e-{skill}", *TINY])
    assert code == 0
    assert local_ray.is_initialized()  # the caller's Ray is left alone
    client, runs = _children(uri)
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        assert run.data.tags["skill"] == skill
        assert {"val_acc", "test_acc", "train_loss"} <= set(run.data.metrics)
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"genotype.json", "cell_normal.png"} <= names
        if skill == "lfm":  # the learned weighting, per epoch and as a plot
            assert {"r_mean", "r_std", "a_mean", "a_std"} <= set(run.data.metrics)
            assert "learned_weights.png" in names


def _kill_group(proc: subprocess.Popen, ray_tmp: str) -> None:
    """SIGKILL the driver's process group, then any straggler started under its RAY_TMPDIR."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    kill_marked(ray_tmp)


def test_killed_sweep_resumes_and_keeps_finished_trials(local_ray, tmp_path: Path) -> None:
    _skill_or_skip("darts")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = tmp_path / "runs"
    args = ["sweep", "darts", "--samples", "4", "--concurrency", "1", "--no-asha",
            "--storage", str(storage), "--tracking-uri", uri, "--name", "killed",
            "--epochs", "2", "--set", "steps_per_epoch=2", "--set", "fd_gap_every=0"]
    ray_tmp = tempfile.mkdtemp(prefix="skr", dir="/tmp")  # short: Ray's socket paths are capped
    env = {**os.environ, "RAY_TMPDIR": ray_tmp}
    log = (tmp_path / "driver.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "skillearn.platform.cli", *args], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        finished = wait_for_finished_trials(uri, storage / "killed", proc,
                                            tmp_path / "driver.log", timeout=240)
        time.sleep(3.0)  # let Ray snapshot its experiment state after the completions
    finally:
        _kill_group(proc, ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
        log.close()

    code = main(["sweep", "darts", "--resume", "--name", "killed", "--storage", str(storage),
                 "--tracking-uri", uri])
    assert code == 0
    client, runs = _children(uri)
    by_trial = {r.data.tags["trial_id"]: r for r in runs}
    assert len(by_trial) == len(runs) == 4  # no duplicate child runs
    assert all(r.info.status == "FINISHED" for r in runs)
    for trial_id, run_id in finished.items():
        assert by_trial[trial_id].info.run_id == run_id
        steps = [m.step for m in client.get_metric_history(run_id, "val_acc")]
        assert steps == [1, 2], f"finished trial {trial_id} was re-run: {steps}"
