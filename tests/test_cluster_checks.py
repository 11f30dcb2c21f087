"""Fast checks of the cluster settings an autoscaling sweep needs: `--trial-resource` (the custom
resource that sends trials to accelerator workers) and the node-local `--storage` warning, both
decided before any Ray work starts."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from skillearn.platform.cli import main
from skillearn.platform.cluster_checks import (
    SHARED_FILESYSTEMS,
    ClusterCheckError,
    filesystem_type,
    node_local_storage_warning,
    parse_trial_resources,
)
from skillearn.platform.sweep import default_concurrency, trial_resources, trials_that_fit
from skillearn.platform.validate import SweepRequest, validate_sweep

MOUNTS = ("/dev/sda1 / ext4 rw 0 0\nfs:/export /mnt/shared nfs4 rw 0 0\n"
          "bucket /mnt/gcs fuse.gcsfuse rw 0 0\n")


def test_trial_resources_parse_names_and_positive_amounts() -> None:
    assert parse_trial_resources(["accel=1", "tpu_v4=0.5"]) == {"accel": 1.0, "tpu_v4": 0.5}
    for bad, says in [("accel", "NAME=AMOUNT"), ("GPU=1", "--gpus-per-trial"),
                      ("CPU=2", "--cpus-per-trial"), ("accel=0", r"\(0, 1000\]"),
                      ("accel=x", "not a number"), ("a b=1", "not a resource name")]:
        with pytest.raises(ClusterCheckError, match=says):
            parse_trial_resources([bad])
    with pytest.raises(ClusterCheckError, match="twice"):
        parse_trial_resources(["accel=1", "accel=2"])


def test_custom_resource_without_a_cluster_is_refused_up_front(tmp_path: Path, capsys) -> None:
    code = main(["sweep", "ce", "--trial-resource", "accel=1", "--storage", str(tmp_path),
                 "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"])
    assert code == 2
    err = capsys.readouterr().err
    assert "a local Ray has no such resource" in err and "--address" in err
    assert not (tmp_path / "mlflow.db").exists()  # refused before anything was made


def test_node_local_storage_warning_only_for_this_machines_disk() -> None:
    warning = node_local_storage_warning("/home/me/runs", "10.0.0.5:6379", MOUNTS)
    assert warning and "ext4" in warning and "s3://" in warning and "preempted" in warning
    assert node_local_storage_warning("/mnt/shared/runs", "10.0.0.5:6379", MOUNTS) is None
    assert node_local_storage_warning("/mnt/gcs/sweeps", "10.0.0.5:6379", MOUNTS) is None
    assert node_local_storage_warning("/mnt/sharedx/runs", "10.0.0.5:6379", MOUNTS)  # not nfs
    assert node_local_storage_warning("s3://bucket/sweeps", "10.0.0.5:6379", MOUNTS) is None
    assert node_local_storage_warning("/home/me/runs", None, MOUNTS) is None  # a local Ray
    assert filesystem_type(Path("/mnt/shared/a/b"), MOUNTS) == "nfs4"


def test_validation_warns_about_node_local_storage_before_ray(tmp_path: Path, capsys) -> None:
    """The real validation path with --address (a listening socket stands in for the head)."""
    with socket.socket() as head:
        head.bind(("127.0.0.1", 0))
        head.listen()
        address = f"127.0.0.1:{head.getsockname()[1]}"
        spec = validate_sweep(SweepRequest(
            "ce", {}, samples=2, storage=str(tmp_path / "runs"),
            tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", address=address,
            trial_resources=["accel=1"]))
    assert spec.trial_resources == {"accel": 1.0}
    assert trial_resources(spec) == {"cpu": 1.0, "gpu": 0.0, "accel": 1.0}
    shared = filesystem_type(tmp_path) in SHARED_FILESYSTEMS
    assert ("warning: --storage" in capsys.readouterr().err) != shared


def test_default_concurrency_counts_the_nodes_there_are_now(capsys) -> None:
    spec = SimpleNamespace(concurrency=None, samples=8, cpus_per_trial=1.0, gpus_per_trial=0.0,
                           trial_resources={"accel": 1.0}, address="10.0.0.5:6379")
    assert trials_that_fit(spec, {"CPU": 16, "accel": 3}) == 3
    assert default_concurrency(spec, {"CPU": 16, "accel": 3}) == 3
    # an autoscaling cluster that starts from zero workers: one at a time, and it says why
    assert default_concurrency(spec, {"CPU": 0}) == 1
    assert "--concurrency N" in capsys.readouterr().err
    assert default_concurrency(SimpleNamespace(**{**vars(spec), "concurrency": 5}), {}) == 5
