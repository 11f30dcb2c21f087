"""Up-front checks of what a sweep on a (possibly autoscaling) Ray cluster needs.

- `--trial-resource NAME=AMOUNT`: a custom resource each trial asks for (the `accel` of
  clusters/*.yaml), which keeps trials on the accelerator workers and is what makes an autoscaler
  launch them;
- `--storage`: checkpoints must live where every node reaches them, or a trial that resumes on
  another node (a spot preemption) cannot find its checkpoint. A folder on this machine's own
  disk together with `--address` gets a warning before any Ray work starts.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from skillearn.errors import SkillearnError
from skillearn.platform.redact import redact

# Ray's built-in resources have their own flags (--cpus-per-trial, --gpus-per-trial).
BUILTIN_RESOURCES = {"CPU", "GPU", "memory", "object_store_memory"}
RESOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,63}$")
# Filesystems that other machines can mount too (NFS, SMB, cluster and FUSE object-store mounts).
SHARED_FILESYSTEMS = ("nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "ceph", "glusterfs",
                      "beegfs", "gpfs", "wekafs", "9p", "fuse.gcsfuse", "fuse.s3fs",
                      "fuse.mountpoint-s3", "fuse.juicefs", "fuse.sshfs", "fuse.rclone")


class ClusterCheckError(SkillearnError):
    """A bad cluster setting: the CLI prints it as one line, exit 2."""


def parse_trial_resources(items: list[str]) -> dict[str, float]:
    """`NAME=AMOUNT` pairs of --trial-resource, each a positive amount of a custom resource."""
    resources: dict[str, float] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ClusterCheckError(f"--trial-resource expects NAME=AMOUNT, got {item!r} "
                                    "(e.g. --trial-resource accel=1)")
        if name in BUILTIN_RESOURCES or name.upper() in ("CPU", "GPU"):
            raise ClusterCheckError(
                f"--trial-resource {name}: use --cpus-per-trial or --gpus-per-trial for Ray's "
                "built-in resources")
        if not RESOURCE_NAME.match(name):
            raise ClusterCheckError(f"--trial-resource {name[:60]!r} is not a resource name "
                                    "(letters, digits, _ . : / -; up to 64)")
        try:
            amount = float(raw)
        except ValueError:
            raise ClusterCheckError(f"--trial-resource {name}: {raw!r} is not a number") from None
        if not 0 < amount <= 1000:
            raise ClusterCheckError(
                f"--trial-resource {name}: the amount must be in (0, 1000], got {raw}")
        if name in resources:
            raise ClusterCheckError(f"--trial-resource {name} is given twice")
        resources[name] = amount
    return resources


def check_trial_resources(resources: dict[str, float], address: str | None) -> None:
    """Custom resources exist only on a cluster whose nodes declare them: a local Ray has none,
    and its trials would wait forever."""
    if resources and not address:
        names = ", ".join(sorted(resources))
        raise ClusterCheckError(
            f"--trial-resource {names}: a local Ray has no such resource, so no trial would "
            "start; pass --address of a cluster whose workers declare it (clusters/*.yaml "
            "declare accel)")


def filesystem_type(path: Path, mounts_text: str | None = None) -> str | None:
    """The type of the filesystem `path` lives on, from /proc/mounts (None when unknown)."""
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return None
    best, best_type = "", None
    target = path.as_posix()
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = fields[1].replace("\\040", " ")
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def node_local_storage_warning(storage: str, address: str | None,
                               mounts_text: str | None = None) -> str | None:
    """The warning for checkpoints that only this machine can reach, else None.

    Without --address every trial runs here. A URI (s3://, gs://) or a folder on a network
    filesystem is shared. A folder on this machine's own disk is shared only when every node runs
    on this machine (a loopback rehearsal); on a real cluster Ray fails the trials of other nodes
    at their first checkpoint, and a preempted trial cannot resume elsewhere."""
    if not address or "://" in storage:
        return None
    fstype = filesystem_type(Path(storage), mounts_text)
    if fstype in SHARED_FILESYSTEMS:
        return None
    on = f"this machine's {fstype} disk" if fstype else "this machine"
    return (
        f"skillearn: warning: --storage {redact(storage)} is a folder on {on}, and --address "
        f"{redact(address)} is a cluster: its other nodes cannot reach it, so their trials fail "
        "at the first checkpoint and a preempted trial cannot resume elsewhere. Use s3://BUCKET/"
        "sweeps, gs://BUCKET/sweeps or a shared filesystem mounted at the same path on every "
        "node (this warning is harmless when every node runs on this machine)")


def warn_node_local_storage(storage: str, address: str | None) -> None:
    """Print the node-local storage warning (stderr), once, before Ray starts."""
    message = node_local_storage_warning(storage, address)
    if message:
        print(message, file=sys.stderr)
