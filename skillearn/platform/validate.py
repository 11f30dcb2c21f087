"""Up-front checks of a sweep request: everything a user can get wrong fails here, in one line.

Runs before `ray.init` and before any trial, so a typo costs milliseconds, not a cluster start.
Nothing here imports Ray at module level; only `--address auto` asks Ray's own lookup.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from skillearn.errors import SkillearnError
from skillearn.knobs import ConfigError, Skill
from skillearn.platform.cluster_checks import (
    check_trial_resources,
    parse_trial_resources,
    warn_node_local_storage,
)
from skillearn.platform.redact import redact
from skillearn.trainables.registry import all_knobs, get_skill, resolve_config

CONNECT_TIMEOUT_S = 3.0
MAX_GPUS_PER_TRIAL = 8


class UsageError(SkillearnError):
    """A user-fixable problem with the request; the message says what is wrong and how to fix it."""


def default_storage() -> Path:
    """Where sweeps are stored when --storage is not given: ./skillearn_runs, absolute."""
    return (Path.cwd() / "skillearn_runs").resolve()


def default_tracking_uri() -> str:
    """A local SQLite MLflow store next to the user (MLflow >= 3.13 refuses file stores)."""
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


@dataclass(frozen=True)
class SweepRequest:
    """A sweep as asked for, unchecked: what `skillearn sweep`'s flags and `skillearn.sweep`'s
    arguments both build (its defaults are theirs); `validate_sweep` makes it a SweepSpec."""

    skill: str
    overrides: Mapping[str, Any] = field(default_factory=dict)  # knob -> value, as given
    samples: int = 8
    # no search: one trial per seed with the given settings (comparisons over seeds)
    seeds: Sequence[int] | None = None
    storage: str | None = None  # default ./skillearn_runs
    name: str | None = None  # default SKILL-DATASET-TIMESTAMP
    tracking_uri: str | None = None  # default sqlite:///./mlflow.db
    experiment: str = "skillearn"
    address: str | None = None  # a Ray cluster; default a local Ray
    resume: bool = False
    concurrency: int | None = None  # default CPUs // cpus_per_trial
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = True
    optuna_storage: str | None = None  # default STORAGE/NAME/optuna.db
    # NAME=AMOUNT custom Ray resources each trial asks for (e.g. "accel=1")
    trial_resources: Sequence[str] = ()


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep request: only values that are known to work from here on."""

    skill: str
    overrides: Mapping[str, Any]
    config: Mapping[str, Any]
    samples: int
    storage: str  # an absolute local directory, or a URI (s3://, gs://) for multi-node clusters
    name: str
    tracking_uri: str
    experiment: str
    address: str | None = None
    resume: bool = False
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    asha: bool = True
    # where Optuna keeps the study (TPE history): an SQLAlchemy URL, None for in-memory
    optuna_storage: str | None = None
    # --seeds: no search; one trial per seed with the given settings (comparisons over seeds)
    seeds: tuple[int, ...] | None = None
    # --trial-resource: custom Ray resources each trial asks for (e.g. {"accel": 1})
    trial_resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The sweep's experiment directory (Ray's storage_path / name)."""
        return f"{self.storage.rstrip('/')}/{self.name}"


def parse_value(raw: str, default: Any) -> Any:
    """Turn a --set string into the type of the knob's default (unknown knobs keep the string)."""
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--set expects true or false for this setting, got {raw!r}")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            try:
                return float(raw)  # resolve_config then says "must be an integer"
            except ValueError:
                raise UsageError(f"--set expects an integer here, got {raw!r}") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise UsageError(f"--set expects a number here, got {raw!r}") from None
    return raw


def parse_sets(items: list[str], skill: Skill) -> dict[str, Any]:
    """KEY=VALUE pairs from --set, typed by the skill's knobs."""
    knobs = all_knobs(skill)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--set expects KEY=VALUE, got {item!r} (e.g. --set batch_size=32)")
        knob = knobs.get(key)
        try:
            out[key] = parse_value(raw, knob.default) if knob is not None else raw
        except UsageError as err:
            raise UsageError(f"{key}: {err}") from None
    return out


def check_address(address: str) -> None:
    """Fail unless a Ray cluster answers at `address` (TCP connect; `auto` via Ray's lookup)."""
    if address == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address_or_die

            address = canonicalize_bootstrap_address_or_die("auto")
        except Exception as err:  # ConnectionError, or Ray's internals moved
            raise UsageError(
                f"--address auto found no running Ray cluster ({err}); start one with "
                "`ray start --head` or drop --address to run locally"
            ) from None
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(
            f"--address {address!r} is not host:port, ray://host:port or auto; "
            "e.g. --address ray://head-node:10001"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise UsageError(
            f"cannot reach the Ray cluster at {address} ({err}); check the head node is up and "
            "the port is open, or drop --address to run locally"
        ) from None


def _check_creatable(db: Path, what: str, fix: str, what_kind: str = "database") -> None:
    """The nearest existing ancestor of `db` must be a writable directory."""
    probe = db.parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        shown = db if what_kind == "database" else db.parent
        raise UsageError(
            f"cannot create the {what} {what_kind} {shown}: {probe} is not a writable directory; "
            f"pick {fix}"
        )


MAX_NAME_LEN = 100  # sweep names become folder names and MLflow run names
MAX_EXPERIMENT_LEN = 200
REMOTE_STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss")
SWEEP_RECORD = "skillearn_sweep.json"


def _check_text(flag: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise UsageError(f"{flag} is {len(value)} characters long; keep it to {limit}")
    if any(ord(c) < 32 or c == "\x7f" for c in value):
        raise UsageError(f"{flag} {value[:60]!r} contains control characters; remove them")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{flag} {value[:60]!r} is not valid UTF-8; use UTF-8 text") from None


def _check_name(name: str) -> None:
    if not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
        raise UsageError(f"--name {name[:60]!r} must be a non-empty name without '/' or '\\'")
    _check_text("--name", name, MAX_NAME_LEN)
    if len(name.encode()) > MAX_NAME_LEN * 2:
        raise UsageError(f"--name is {len(name.encode())} bytes long in UTF-8; shorten it")


def _check_remote_storage(store: str) -> None:
    scheme = urllib.parse.urlparse(store).scheme.lower()
    if scheme not in REMOTE_STORAGE_SCHEMES:
        raise UsageError(
            f"--storage {redact(store)[:80]!r} has an unknown scheme {scheme + '://'!r}; give a "
            f"local folder or a URI with one of "
            f"{', '.join(s + '://' for s in REMOTE_STORAGE_SCHEMES)}"
        )
    _check_text("--storage", store, 1024)


def write_sweep_record(path: str, skill: str, name: str, dataset: str,
                       optuna_storage: str | None = None) -> None:
    """Note which skill a sweep folder belongs to, so `--resume` cannot pick up another's, and
    where its Optuna study is (for `skillearn dashboard`; a password only as its ${VAR})."""
    fields: dict[str, Any] = {"skill": skill, "name": name, "dataset": dataset}
    if optuna_storage and redact(optuna_storage) == optuna_storage:  # nothing secret in it
        fields["optuna_storage"] = optuna_storage
    record = json.dumps(fields)
    if "://" not in path:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / SWEEP_RECORD).write_text(record + "\n")
        return
    import pyarrow.fs

    filesystem, root = pyarrow.fs.FileSystem.from_uri(path)
    filesystem.create_dir(root, recursive=True)
    with filesystem.open_output_stream(f"{root}/{SWEEP_RECORD}") as out:
        out.write(record.encode() + b"\n")


def check_sweep_record(path: str, skill: str) -> None:
    """`--resume` of a sweep of another skill is refused (sweeps from before the record are
    let through)."""
    try:
        if "://" in path:
            import pyarrow.fs

            filesystem, root = pyarrow.fs.FileSystem.from_uri(path)
            with filesystem.open_input_stream(f"{root}/{SWEEP_RECORD}") as stream:
                text = stream.read().decode()
        else:
            text = (Path(path) / SWEEP_RECORD).read_text()
    except (FileNotFoundError, OSError):
        return
    try:
        recorded = json.loads(text).get("skill")
    except (ValueError, AttributeError):
        raise UsageError(f"{path}/{SWEEP_RECORD} is not a skillearn sweep record") from None
    if recorded != skill:
        raise UsageError(
            f"--resume: the sweep {path.rsplit('/', 1)[-1]!r} is a {recorded} sweep, not {skill}; "
            f"run `skillearn sweep {recorded} --resume ...` or pick another --name"
        )


SQLITE_HEADER = b"SQLite format 3\x00"


def _check_sqlite_file(db: Path) -> None:
    """An existing file must be an SQLite database (an empty one is fine: SQLite adopts it)."""
    if db.is_dir():
        raise UsageError(f"the MLflow database {db} is a directory; name a file")
    if db.is_file() and db.stat().st_size:
        with db.open("rb") as file:
            if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                raise UsageError(f"{db} is not an SQLite database; point --tracking-uri at an "
                                 "MLflow database or a new file")


def _sqlite_path(uri: str) -> Path:
    """The database file of a sqlite:/// URI (relative paths taken from the current directory)."""
    rest = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    if not rest or rest == ":memory:":
        raise UsageError(
            f"tracking URI {uri!r} names no database file; use sqlite:///<path>/mlflow.db"
        )
    return Path(rest).expanduser().resolve()


def _probe_store(uri: str, flag: str) -> None:
    """No plain-text password (else a SecretError), and a real read-only request to a tracking
    store (else a StoreError, store_probe.py)."""
    from skillearn.platform.secrets import check_uri_secrets
    from skillearn.platform.store_probe import probe_tracking_store

    check_uri_secrets(uri, flag)
    if flag == "--tracking-uri":
        probe_tracking_store(uri)


def check_tracking_uri(uri: str) -> str:
    """Fail unless MLflow can write to `uri`; returns it normalised (sqlite paths absolute).

    The store is asked once (read-only): a client error is fatal here, not an outage later."""
    _probe_store(uri, "--tracking-uri")
    scheme = urllib.parse.urlparse(uri).scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:  # plain paths, file:, Windows drives
        raise UsageError(
            f"tracking URI {uri!r} is a file store, which MLflow >= 3.13 refuses; "
            f"use sqlite:///{Path(uri.removeprefix('file:')).expanduser().resolve()}/mlflow.db "
            "or an http(s):// tracking server"
        )
    if scheme == "sqlite":
        db = _sqlite_path(uri)
        _check_creatable(db, "MLflow", "a --tracking-uri sqlite:///<writable dir>/mlflow.db")
        if db.exists() and not os.access(db, os.W_OK):
            raise UsageError(f"the MLflow database {db} is read-only; make it writable")
        _check_sqlite_file(db)
        return f"sqlite:///{db}"
    if scheme in ("http", "https"):
        return uri  # probed above: /health, then a read-only API request with the credentials
    if scheme.split("+")[0] not in TRACKING_SCHEMES:
        raise UsageError(
            f"tracking URI {redact(uri)[:80]!r} has a scheme MLflow cannot track to; use "
            "sqlite:///<dir>/mlflow.db, http(s)://server or a database URL (postgresql://...)"
        )
    return uri  # databricks, postgresql, ...: MLflow reports its own errors


TRACKING_SCHEMES = ("databricks", "postgresql", "mysql", "mssql")


OPTUNA_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")


def default_optuna_storage(sweep_path: str) -> str | None:
    """A SQLite study beside the sweep's results (local storage only), so the TPE history survives
    a killed driver; None (in-memory, pickled with the searcher) for s3:// or gs:// storage."""
    if "://" in sweep_path:
        return None
    return f"sqlite:///{Path(sweep_path) / 'optuna.db'}"


def check_optuna_storage(url: str) -> str:
    """Fail unless `url` is an SQLAlchemy URL Optuna can use (a database server must answer)."""
    _probe_store(url, "--optuna-storage")  # its password only as ${VAR}
    scheme = urllib.parse.urlparse(url).scheme.lower().split("+")[0]
    if scheme not in OPTUNA_SCHEMES:
        raise UsageError(
            f"--optuna-storage {redact(url)!r} is not a database URL; use "
            "sqlite:///<path>/optuna.db or postgresql://user:password@host:5432/db"
            "?options=-csearch_path%3Doptuna"
        )
    if scheme == "sqlite":
        db = _sqlite_path(url)
        _check_creatable(db, "Optuna", "--optuna-storage sqlite:///<writable dir>/optuna.db")
        url = f"sqlite:///{db}"
        if not db.exists():
            return url
    try:
        import sqlalchemy

        from skillearn.platform.secrets import expand_secrets

        engine = sqlalchemy.create_engine(
            expand_secrets(url),
            connect_args={"connect_timeout": 5} if scheme == "postgresql" else {},
        )
        with engine.begin() as connection:
            schema = optuna_schema(url)
            if schema:  # Optuna's own schema of a shared database: create it once
                connection.execute(sqlalchemy.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        with engine.connect() as connection:
            inspector = sqlalchemy.inspect(connection)
            mlflow_tables = inspector.has_table("experiments") and inspector.has_table("runs")
        engine.dispose()
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        raise UsageError(
            f"cannot open the Optuna storage {redact(url)} ({redact(message)}); check the "
            "database server is up and the URL's user, password and database name"
        ) from None
    if mlflow_tables:
        # Both keep their schema version in an `alembic_version` table: they cannot share one.
        raise UsageError(
            f"--optuna-storage {redact(url)} holds MLflow's tables; give Optuna its own schema "
            "of that database (append ?options=-csearch_path%3Doptuna to a postgresql:// URL) "
            "or another database"
        )
    return url


def optuna_schema(url: str) -> str | None:
    """The schema a postgresql:// URL selects with `options=-csearch_path=NAME` (else None)."""
    import re

    query = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)
    for option in query.get("options", []):
        found = re.search(r"search_path\s*=\s*([A-Za-z_][A-Za-z0-9_]*)", option)
        if found:
            return found.group(1)
    return None


def _check_data(config: Mapping[str, Any]) -> None:
    """The data layer's own cheap checks (unknown dataset, rates, missing CIFAR files)."""
    from skillearn.data import check_data_spec, data_spec

    check_data_spec(data_spec(config))  # a DataError is a SkillearnError: the CLI's one line


def _check_encoder_weights(path: str, kind: str) -> None:
    """A pretrained encoder file must load (weights only) and fit the chosen ResNet."""
    from skillearn.trainables.encoders import check_encoder_weights, load_encoder_weights

    check_encoder_weights(load_encoder_weights(path), path, kind)  # a ConfigError says why


def sweep_exists(path: Path | str) -> bool:
    """Whether `path` (a directory or URI) holds a Ray Tune experiment that can be restored."""
    if "://" not in str(path):
        return (Path(path) / "tuner.pkl").is_file()
    from ray import tune

    try:
        return tune.Tuner.can_restore(str(path))
    except Exception as err:
        raise UsageError(f"cannot read the sweep storage {path} ({err}); check --storage") from None


def _latest_sweep(storage: Path, prefix: str) -> str | None:
    """Name of the newest restorable sweep in `storage` whose name starts with `prefix`."""
    if not storage.is_dir():
        return None
    found = [p for p in storage.iterdir() if p.name.startswith(prefix) and sweep_exists(p)]
    return max(p.name for p in found) if found else None  # names end in a timestamp


PATH_KNOBS = ("data_root", "encoder_weights")


def absolute_paths(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """`overrides` with the path knobs made absolute: trials run in another directory."""
    out = dict(overrides)
    for path_knob in PATH_KNOBS:
        if out.get(path_knob) and isinstance(out[path_knob], str):  # else resolve_config refuses
            out[path_knob] = str(Path(out[path_knob]).expanduser().resolve())
    return out


def skill_named(name: str) -> Skill:
    """The skill a sweep names; an unknown name is a UsageError pointing at `skillearn skills`."""
    try:
        return get_skill(name)
    except ConfigError as err:
        raise UsageError(f"{err} (see `skillearn skills`)") from None


def validate_sweep(request: SweepRequest) -> SweepSpec:
    """Check everything about a sweep request; raise a SkillearnError (a UsageError, or the
    ConfigError or DataError of the knob or data it names) for the first problem."""
    skill = skill_named(request.skill)
    overrides = absolute_paths(request.overrides)
    config = resolve_config(skill, overrides)
    _check_data_settings(config)
    seeds = _checked_seeds(request, skill, overrides)
    _check_resources(request)
    resources = parse_trial_resources(list(request.trial_resources))
    check_trial_resources(resources, request.address)
    _check_experiment(request.experiment)
    store, local = _sweep_storage(request.storage)
    name = _sweep_name(request, str(config["dataset"]), store, local)
    uri = _tracking_store(request)
    if request.address:
        warn_node_local_storage(store, request.address)
    study = _study_storage(request, f"{store}/{name}")
    return SweepSpec(
        skill=request.skill,
        overrides=overrides,
        config=config,
        samples=len(seeds) if seeds else request.samples,
        storage=store,
        name=name,
        tracking_uri=uri,
        experiment=request.experiment,
        address=request.address,
        resume=request.resume,
        concurrency=request.concurrency,
        cpus_per_trial=request.cpus_per_trial,
        gpus_per_trial=request.gpus_per_trial,
        asha=request.asha,
        optuna_storage=study,
        seeds=seeds,
        trial_resources=resources,
    )


def _check_data_settings(config: Mapping[str, Any]) -> None:
    """The data root exists (unless downloading), the data layer's own checks, and a
    pretrained encoder file that loads and fits."""
    if config["data_root"] and not config["download"] and not Path(config["data_root"]).is_dir():
        raise UsageError(
            f"data root {config['data_root']} does not exist; point --data-root at the folder "
            "holding the dataset or add --download"
        )
    _check_data(config)
    if config.get("encoder_weights"):
        _check_encoder_weights(config["encoder_weights"], config["encoder"])


def _checked_seeds(request: SweepRequest, skill: Skill,
                   overrides: Mapping[str, Any]) -> tuple[int, ...] | None:
    """--seeds as a tuple of distinct seeds in the seed knob's range (None: a search)."""
    if request.samples < 1:
        raise UsageError(f"--samples must be at least 1, got {request.samples}")
    seeds = request.seeds
    if seeds is None:
        return None
    if not seeds or any(int(x) < 0 for x in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds needs distinct non-negative integers, got {list(seeds)}")
    top = int(all_knobs(skill)["seed"].high or 0)
    if any(int(x) > top for x in seeds):
        raise UsageError(f"--seeds must be at most {top}, got {max(seeds)}")
    if "seed" in overrides:
        raise UsageError("give either --seed or --seeds, not both")
    return tuple(int(x) for x in seeds)


def _check_resources(request: SweepRequest) -> None:
    """Concurrency and per-trial CPUs/GPUs are sane, and a local Ray can give them."""
    if request.concurrency is not None and request.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {request.concurrency}")
    cpus_per_trial, gpus_per_trial = request.cpus_per_trial, request.gpus_per_trial
    if not cpus_per_trial > 0:
        raise UsageError(f"--cpus-per-trial must be > 0, got {cpus_per_trial}")
    if not 0 <= gpus_per_trial <= MAX_GPUS_PER_TRIAL:
        raise UsageError(
            f"--gpus-per-trial must be between 0 and {MAX_GPUS_PER_TRIAL} "
            f"(fractions such as 0.5 share a GPU), got {gpus_per_trial}"
        )
    if request.address:  # a cluster's resources are its own business
        return
    # a local Ray: trials asking for more than this machine has never start
    cpus = os.cpu_count() or 1
    if cpus_per_trial > cpus:
        raise UsageError(
            f"--cpus-per-trial {cpus_per_trial} exceeds this machine's {cpus} CPUs; lower it "
            "or pass --address of a bigger Ray cluster"
        )
    if gpus_per_trial > 0:
        import torch

        gpus = torch.cuda.device_count()
        if gpus_per_trial > gpus:
            raise UsageError(
                f"--gpus-per-trial {gpus_per_trial} but this machine has {gpus} GPU(s); use "
                "--gpus-per-trial 0 or --address of a Ray cluster with GPUs"
            )


def _check_experiment(experiment: str) -> None:
    if not experiment.strip():
        raise UsageError("--experiment must not be empty")
    _check_text("--experiment", experiment, MAX_EXPERIMENT_LEN)


def _sweep_storage(storage: str | None) -> tuple[str, Path | None]:
    """Where sweeps go: (the storage as written into the spec, its local folder or None for a
    remote URI), checked writable (local) or of a known scheme (remote)."""
    if storage and "://" in storage:
        store = storage.rstrip("/")
        _check_remote_storage(store)
        return store, None
    local = Path(storage).expanduser().resolve() if storage else default_storage()
    if local.exists() and not local.is_dir():
        raise UsageError(f"--storage {local} is a file; give a directory")
    _check_text("--storage", str(local), 4096)
    _check_creatable(local / "x", "sweep", "a writable --storage", what_kind="folder")
    return str(local), local


def _sweep_name(request: SweepRequest, dataset: str, store: str, local: Path | None) -> str:
    """The sweep's name: --name, a new PREFIX-TIMESTAMP, or with --resume the latest sweep of
    this skill and dataset; a new sweep must not exist yet, a resumed one must."""
    name, prefix = request.name, f"{request.skill}-{dataset}-"
    if name is not None:
        _check_name(name)
    if not request.resume:
        name = name or prefix + datetime.now().strftime("%Y%m%d-%H%M%S")
        if local is not None and (local / name).exists():
            raise UsageError(
                f"a sweep named {name!r} already exists in {store}; add --resume to "
                "continue it or choose another --name"
            )
        return name
    if name is None and local is None:
        raise UsageError("--resume with a remote --storage needs the sweep's --name")
    if name is None:
        name = _latest_sweep(local, prefix)
        if name is None:
            raise UsageError(
                f"--resume found no previous {request.skill} sweep on {dataset} in {store}; "
                "check --storage, or pass the sweep's --name"
            )
    elif not sweep_exists(f"{store}/{name}"):
        raise UsageError(
            f"--resume: no previous sweep named {name!r} in {store}; check --name and "
            "--storage, or drop --resume to start a new sweep"
        )
    check_sweep_record(f"{store}/{name}", request.skill)
    return name


def _tracking_store(request: SweepRequest) -> str:
    """The checked MLflow store, which the driver must be able to write from where it runs;
    then the Ray cluster of --address must answer."""
    uri = check_tracking_uri(request.tracking_uri or default_tracking_uri())
    address = request.address
    if address and address.startswith("ray://") and uri.startswith("sqlite:"):
        # With Ray Client the Tune driver (and so the MLflow logging) runs on the head node.
        raise UsageError(
            "with --address ray://... the sweep is driven from the cluster's head node, which "
            "cannot write this machine's SQLite store; pass --tracking-uri http://<mlflow-server>"
        )
    if address:
        check_address(address)
    return uri


def _study_storage(request: SweepRequest, sweep_path: str) -> str | None:
    """Where the Optuna study lives: --optuna-storage (checked), else beside the sweep, or in
    memory when the driver runs on a Ray Client's head node (no file of this machine's)."""
    if request.optuna_storage:
        return check_optuna_storage(request.optuna_storage)
    if request.address and request.address.startswith("ray://"):
        return None
    return default_optuna_storage(sweep_path)
