"""Helpers shared by the slow cluster, tracking-server, browser and fault tests.

Everything started here is stopped in a `finally`: subprocesses run in their own process group
(`start_new_session=True`) and the whole group is killed, so no server or Ray worker outlives a
test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

POSTGRES_ENV = "SKILLEARN_TEST_POSTGRES"
TINY = ["--epochs", "1", "--set", "steps_per_epoch=2", "--set", "fd_gap_every=0"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Signal a subprocess started with start_new_session=True and its whole group; reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def kill_marked(marker: str, timeout: float = 20) -> None:
    """SIGKILL every process whose command line contains `marker` (a test's own RAY_TMPDIR):
    Ray daemons a killed driver leaves behind live in other sessions."""
    deadline = time.time() + timeout
    me = os.getpid()
    while time.time() < deadline:
        left = []
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == me:
                continue
            try:
                cmd = (pid_dir / "cmdline").read_bytes().decode(errors="ignore")
            except OSError:
                continue
            if marker in cmd:
                left.append(int(pid_dir.name))
        if not left:
            return
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def wait_http(url: str, timeout: float = 90, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    last: Exception | None = None
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=3) as response:
                if response.status < 500:
                    return
        except Exception as err:  # not up yet
            last = err
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s: {last}")


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, log: Path, port: int | None = None,
                  start_timeout: float = 90) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` on 127.0.0.1 (a free port) over `backend`, artifacts proxied to a folder."""
    port = port or free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
               "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_ALLOW_FILE_STORE": "false"}
    with log.open("ab") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout=start_timeout, proc=proc)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGCONT)  # a test may have left it stopped
        kill_group(proc, signal.SIGTERM)


@contextlib.contextmanager
def sweep_subprocess(args: list[str], log: Path) -> Iterator[subprocess.Popen]:
    """`skillearn ARGS` as its own process group with a private RAY_TMPDIR; killed at the end
    (with every Ray process it started)."""
    ray_tmp = tempfile.mkdtemp(prefix="skr", dir="/tmp")  # short: Ray's socket paths are capped
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "skillearn.platform.cli", *args], env=env,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        kill_group(proc)
        kill_marked(ray_tmp)
        out.close()
        import shutil

        shutil.rmtree(ray_tmp, ignore_errors=True)


def wait_for_finished_trials(uri: str, sweep_dir: Path, proc: subprocess.Popen, log: Path,
                             count: int = 2, timeout: float = 300) -> dict[str, str]:
    """Poll MLflow until `count` trial runs of a sweep running in `proc` are FINISHED;
    returns {trial_id: run_id}. MLflow is read only once a trial folder exists: the driver has
    then created the tables (two processes migrating one new SQLite file race each other)."""
    from mlflow.tracking import MlflowClient

    deadline = time.time() + timeout
    finished: dict[str, str] = {}
    while time.time() < deadline and proc.poll() is None:
        if list(sweep_dir.glob("trial_*")):
            client = MlflowClient(uri)
            exp = client.get_experiment_by_name("skillearn")
            runs = [] if exp is None else client.search_runs(
                [exp.experiment_id], "tags.`skillearn.role` = 'trial'")
            finished = {r.data.tags["trial_id"]: r.info.run_id for r in runs
                        if r.info.status == "FINISHED"}
            if len(finished) >= count:
                break
        time.sleep(0.5)
    assert proc.poll() is None, log.read_text()[-3000:]
    assert len(finished) >= count, f"the sweep did not finish {count} trials in time"
    return finished
