"""An autoscaling Ray cluster on one machine, for the autoscaling and preemption rehearsals.

Ray's fake multi-node provider plays the cloud: the head (no trial resources) runs the
autoscaler, which starts and stops worker "nodes" (a raylet each, on this machine) as the load
asks. `ray.cluster_utils.AutoscalingCluster` would do the same, but its start and shutdown run
`ray stop --force`, which stops every Ray on the machine; here the head is started in-process
(`ray.cluster_utils.Cluster`) on a free port and only this cluster's processes are stopped.

The worker type carries `accel`, the GPU stand-in of clusters/*.yaml: a sweep that asks for
`--trial-resource accel=1` can only run on workers, so the autoscaler must launch them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRIAL_RESOURCE = "accel"  # the resource name clusters/aws.yaml, gcp.yaml and kuberay.yaml use
WORKER_TYPE = "accel_worker"
# Node deaths are noticed in ~5-10 s instead of Ray's ~30 s default (tolerant enough for a
# loaded 2-core box, where a live raylet can answer late): preemption tests stay short.
FAST_FAILURE_DETECTION = {"health_check_period_ms": 1000, "health_check_failure_threshold": 5,
                          "health_check_timeout_ms": 2000}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def autoscaling_config(gcs_address: str, *, max_workers: int, idle_timeout_s: float,
                       worker_cpus: float) -> dict[str, Any]:
    """The fake provider's cluster config: a head with nothing for trials, one worker type."""
    return {
        "cluster_name": "skillearn-rehearsal",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address,
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {
                "resources": {"CPU": worker_cpus, TRIAL_RESOURCE: 1,
                              "object_store_memory": 100 * 1024 * 1024},
                "node_config": {}, "min_workers": 0, "max_workers": max_workers,
            },
        },
        "head_node_type": "ray.head.default",
        "docker": {}, "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [], "file_mounts": {}, "cluster_synced_files": [],
        "file_mounts_sync_continuously": False, "rsync_exclude": [], "rsync_filter": [],
    }


@dataclass
class FakeAutoscalingCluster:
    """A running fake autoscaling cluster (see `fake_autoscaling_cluster`)."""

    address: str
    head_node_id: str
    idle_timeout_s: float
    max_workers: int
    cluster: Any = field(repr=False)

    def worker_nodes(self) -> list[dict[str, Any]]:
        """The alive worker nodes (Ray's `ray.nodes()` rows), head excluded."""
        import ray

        return [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != self.head_node_id]

    def wait_for_workers(self, count: int, timeout_s: float) -> float:
        """Block until exactly `count` workers are alive; the seconds it took."""
        started = time.perf_counter()
        while len(self.worker_nodes()) != count:
            if time.perf_counter() - started > timeout_s:
                raise TimeoutError(f"{len(self.worker_nodes())} workers alive after "
                                   f"{timeout_s:.0f} s, expected {count}")
            time.sleep(0.5)
        return time.perf_counter() - started

    def remove_node(self, node_id: str) -> int:
        """Take a worker node away as a spot preemption would: every process of that node (its
        raylet, agents and the trial's worker process) is killed at once. Returns the count."""
        raylets = {pid for pid, env in _cluster_processes(self.address) if
                   env.get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id}
        pids = raylets | _descendants(raylets)  # its agents and worker processes
        for pid in pids:
            _kill(pid)
        return len(pids)


def _cluster_processes(gcs_address: str) -> list[tuple[int, dict[str, str]]]:
    """(pid, environment) of this user's processes that belong to the cluster at `gcs_address`
    (their command line names it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if gcs_address not in cmdline:
                continue
            raw = (entry / "environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0")
                   if "=" in item)
        found.append((int(entry.name), env))
    return found


def _descendants(roots: set[int]) -> set[int]:
    """Every process below `roots` (children, grandchildren, ...), from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found: set[int] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextmanager
def fake_autoscaling_cluster(*, max_workers: int = 3, idle_timeout_s: float = 6.0,
                             worker_cpus: float = 1.0) -> Iterator[FakeAutoscalingCluster]:
    """Start the head (its autoscaler included), connect this process as the driver, yield;
    then disconnect and stop exactly this cluster's processes (workers first)."""
    import ray
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID
    from ray.cluster_utils import Cluster

    port = free_port()
    gcs_address = f"{ray.util.get_node_ip_address()}:{port}"
    config = autoscaling_config(gcs_address, max_workers=max_workers,
                                idle_timeout_s=idle_timeout_s, worker_cpus=worker_cpus)
    handle, config_path = tempfile.mkstemp(prefix="skillearn-autoscaling-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump(config, out)
    # read by the autoscaler process the head starts (it inherits this environment)
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, connect=False, head_node_args={
            "gcs_server_port": port, "num_cpus": 0, "include_dashboard": False,
            "autoscaling_config": config_path, "_system_config": FAST_FAILURE_DETECTION,
            "object_store_memory": 100 * 1024 * 1024})
        for key, value in saved.items():  # the head is up: later Ray starts see no fake cluster
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        ray.init(address=cluster.address, log_to_driver=False)
        yield FakeAutoscalingCluster(cluster.address, FAKE_HEAD_NODE_ID, idle_timeout_s,
                                     max_workers, cluster)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if ray.is_initialized():
            ray.shutdown()
        if cluster is not None:
            # the workers are the autoscaler's children: stop them before the head goes
            for pid, _ in _cluster_processes(gcs_address):
                if pid not in _head_pids(cluster):
                    _kill(pid)
            cluster.shutdown()
            for pid, _ in _cluster_processes(gcs_address):  # stragglers of a killed head
                _kill(pid)
        os.unlink(config_path)


def _head_pids(cluster: Any) -> set[int]:
    pids = set()
    for infos in cluster.head_node.all_processes.values():
        pids.update(info.process.pid for info in infos)
    return pids


class NodeCounter:
    """Samples the number of alive worker nodes every `period_s` (a thread of the driver)."""

    def __init__(self, cluster: FakeAutoscalingCluster, period_s: float = 0.5) -> None:
        self.cluster = cluster
        self.period_s = period_s
        self.samples: list[tuple[float, int]] = []  # (seconds since start, workers alive)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def __enter__(self) -> NodeCounter:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the count at the end (the last periodic sample may be older)

    def _sample(self) -> None:
        self.samples.append((time.perf_counter() - self._started,
                             len(self.cluster.worker_nodes())))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.period_s)

    def first_time_at_least(self, count: int) -> float | None:
        return next((t for t, n in self.samples if n >= count), None)


def plot_node_count(samples: list[tuple[float, int]], marks: dict[str, float], path: Path,
                    max_workers: int) -> Path:
    """The worker count over the rehearsal as a step plot, with its events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.step([t for t, _ in samples], [n for _, n in samples], where="post", color="tab:blue",
            label="alive workers")
    for (label, when), color in zip(marks.items(), ("tab:green", "tab:orange", "tab:red",
                                                    "tab:purple"), strict=False):
        ax.axvline(when, color=color, linestyle="--", linewidth=1, label=f"{label} ({when:.0f} s)")
    ax.set_xlabel("seconds since the sweep started")
    ax.set_ylabel("worker nodes")
    ax.set_ylim(-0.2, max_workers + 1.4)  # room for the legend above the steps
    ax.set_yticks(range(max_workers + 1))
    ax.legend(loc="upper left", fontsize=8, ncol=2)
    ax.set_title("autoscaling rehearsal: workers launched for the trials, released when idle",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def parent_run_id(tracking_uri: str, experiment: str, sweep_name: str) -> str:
    """The MLflow parent run of the sweep `sweep_name`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id],
                              "tags.`skillearn.role` = 'sweep' and tags.sweep = "
                              f"'{sweep_name}'")
    if len(runs) != 1:
        raise LookupError(f"{len(runs)} parent runs of sweep {sweep_name!r} in {experiment!r}")
    return runs[0].info.run_id


def log_rehearsal(tracking_uri: str, run_id: str, figures: dict[str, float], plot: Path) -> None:
    """The rehearsal's figures (metrics) and node-count plot (artifact) on the parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for key, value in figures.items():
        client.log_metric(run_id, key, value)
    client.log_artifact(run_id, str(plot))


@dataclass
class Rehearsal:
    """What one rehearsal sweep showed (times in seconds since the sweep started)."""

    exit_code: int
    sweep_dir: Path
    tracking_uri: str
    experiment: str
    samples: list[tuple[float, int]]  # (time, alive workers)
    first_worker_s: float | None
    sweep_done_s: float
    released_s: float  # from the sweep's end until no worker was left
    preempted: dict[str, Any]  # trial, node, epoch, processes; empty without preemption
    parent_run_id: str | None = None

    @property
    def peak_workers(self) -> int:
        return max((n for _, n in self.samples), default=0)


def _latest_result(trial_dir: Path) -> dict[str, Any] | None:
    results = trial_dir / "result.json"
    lines = results.read_text().splitlines() if results.is_file() else []
    return json.loads(lines[-1]) if lines else None


class Preemptor(threading.Thread):
    """Removes the node of the first trial that has saved a checkpoint (mid-trial: it still has
    epochs to go), as a spot preemption would."""

    def __init__(self, cluster: FakeAutoscalingCluster, sweep_dir: Path,
                 timeout_s: float = 300) -> None:
        super().__init__(daemon=True)
        self.cluster, self.sweep_dir, self.timeout_s = cluster, sweep_dir, timeout_s
        self.removed: dict[str, Any] = {}
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline and not self._halt.is_set():
            for trial_dir in sorted(self.sweep_dir.glob("trial_*")):
                result = _latest_result(trial_dir)
                if (trial_dir / "checkpoint_000000").is_dir() and result:
                    self.removed.update(
                        trial=trial_dir.name, node=result["node_id"], epoch=result["epoch"],
                        processes=self.cluster.remove_node(result["node_id"]),
                        at=time.perf_counter())
                    return
            self._halt.wait(0.2)


def rehearse(cluster: FakeAutoscalingCluster, workdir: Path, sweep_args: list[str], *,
             name: str, preempt: bool) -> Rehearsal:
    """Run a sweep (the CLI, `sweep_args` plus where it goes) on the cluster, sampling the
    worker count; optionally preempt a node mid-trial; wait for the workers to be released;
    log the figures and the node-count plot on the sweep's MLflow parent run."""
    from skillearn.platform.cli import main

    uri = f"sqlite:///{workdir}/mlflow.db"
    sweep_dir = workdir / "runs" / name
    preemptor = Preemptor(cluster, sweep_dir) if preempt else None
    with NodeCounter(cluster) as counter:
        started = time.perf_counter()
        if preemptor is not None:
            preemptor.start()
        try:
            code = main(["sweep", *sweep_args, "--address", cluster.address,
                         "--trial-resource", f"{TRIAL_RESOURCE}=1",
                         "--storage", str(workdir / "runs"), "--tracking-uri", uri,
                         "--experiment", name, "--name", name])
        finally:
            if preemptor is not None:
                preemptor.stop()
        done = time.perf_counter() - started
        released = cluster.wait_for_workers(0, timeout_s=cluster.idle_timeout_s + 60)
    result = Rehearsal(code, sweep_dir, uri, name, list(counter.samples),
                       counter.first_time_at_least(1), done, released,
                       dict(preemptor.removed) if preemptor else {})
    if code == 0:
        marks = {"first worker": result.first_worker_s or 0.0}
        if result.preempted:
            marks["node removed"] = result.preempted["at"] - started
        marks["sweep done"] = done
        plot = plot_node_count(result.samples, marks, workdir / "node_count.png",
                               cluster.max_workers)
        result.parent_run_id = parent_run_id(uri, name, name)
        log_rehearsal(uri, result.parent_run_id, {
            "time_to_first_worker_s": result.first_worker_s or -1.0,
            "time_to_last_trial_s": done, "peak_workers": result.peak_workers,
            "workers_released_after_s": released}, plot)
    return result
