"""`skillearn dashboard SWEEP`: optuna-dashboard on the sweep's Optuna study, on 127.0.0.1.

A sweep's study (the TPE history: every trial's knobs and value) lives in `STORAGE/NAME/optuna.db`
unless the sweep was given `--optuna-storage`; the sweep record (`skillearn_sweep.json`) notes
that URL (with its `${VAR}` password placeholder, never the password) so the dashboard finds
the study again. The study is named after the sweep. The dashboard shows the optimisation
history, parameter importances, slices and parallel coordinates (and a Pareto front for
multi-objective studies; skillearn's sweeps have one objective).

The password is expanded in this process only: optuna-dashboard runs in it, so the storage URL
never reaches a command line (`ps`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillearn.platform.redact import redact
from skillearn.platform.validate import SWEEP_RECORD, UsageError

DEFAULT_STORAGE = "skillearn_runs"
STUDY_FILE = "optuna.db"


@dataclass(frozen=True)
class SweepStudy:
    """Where a sweep's Optuna study is: its storage URL (placeholder form) and its name."""

    url: str
    name: str


def _sweep_dir(sweep: str, storage: str | None) -> Path | None:
    """SWEEP as a folder (STORAGE/NAME), else as a name under --storage; None if neither."""
    given = Path(sweep).expanduser()
    if given.is_dir():
        return given.resolve()
    if "/" in sweep:
        return None
    under = Path(storage or DEFAULT_STORAGE).expanduser() / sweep
    return under.resolve() if under.is_dir() else None


def _read_record(folder: Path) -> dict[str, object]:
    path = folder / SWEEP_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError:
        raise UsageError(f"{path} is not a skillearn sweep record") from None
    return record if isinstance(record, dict) else {}


def locate_study(sweep: str, storage: str | None = None,
                 optuna_storage: str | None = None) -> SweepStudy:
    """The study of the sweep `sweep` (a folder STORAGE/NAME or a NAME under `storage`).

    `optuna_storage` overrides the URL the sweep recorded (or its default `optuna.db`)."""
    folder = _sweep_dir(sweep, storage)
    if folder is None and optuna_storage is None:
        where = Path(storage or DEFAULT_STORAGE).expanduser().resolve()
        raise UsageError(
            f"no sweep {sweep[:200]!r}: neither a folder nor a sweep in {where}; pass "
            "STORAGE/NAME (or NAME with --storage STORAGE)"
        )
    record = _read_record(folder) if folder is not None else {}
    name = str(record.get("name") or (folder.name if folder is not None else sweep))
    recorded = record.get("optuna_storage")
    url = optuna_storage or (recorded if isinstance(recorded, str) else None)
    if url is None:
        assert folder is not None
        url = f"sqlite:///{folder / STUDY_FILE}"
    return SweepStudy(url=url, name=name)


def open_study_storage(study: SweepStudy) -> Any:
    """The study's storage, opened read-as-is (no tables created, no schema upgrade), after
    checking the study is there; every failure is a SkillearnError (the CLI's one line)."""
    import optuna

    from skillearn.platform.secrets import check_uri_secrets, expand_secrets

    check_uri_secrets(study.url, "--optuna-storage")  # a SecretError: the CLI's one line
    if study.url.startswith("sqlite:///"):
        db = Path(study.url[len("sqlite:///") :]).expanduser()
        if not db.is_file():
            raise UsageError(
                f"no Optuna study: {db} does not exist (a --seeds sweep searches nothing, and "
                "a sweep on remote storage without --optuna-storage keeps its study in memory)"
            )
    try:
        storage = optuna.storages.RDBStorage(
            expand_secrets(study.url), skip_compatibility_check=True, skip_table_creation=True,
        )
        names = [s.study_name for s in storage.get_all_studies()]
    except Exception as err:
        message = redact(" ".join(str(err).split()))[:300]
        raise UsageError(
            f"cannot read the Optuna storage {redact(study.url)} ({message})"
        ) from None
    if study.name not in names:
        shown = ", ".join(repr(n) for n in names[:10]) or "none"
        raise UsageError(f"the Optuna storage {redact(study.url)} has no study {study.name!r} "
                         f"(studies there: {shown})")
    return storage


def serve_dashboard(storage: Any, port: int) -> None:
    """optuna-dashboard on http://127.0.0.1:PORT until Ctrl-C (blocks)."""
    from optuna_dashboard import run_server

    run_server(storage, host="127.0.0.1", port=port)
