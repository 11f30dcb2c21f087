"""`skillearn sync SWEEP_DIR`: send the MLflow writes a sweep could not (its backlog file).

A sweep whose tracking server was down at its end leaves `mlflow_backlog.json` (and staged files
in `.mlflow_staging/`) in its directory; `skillearn sweep --resume` sends them too.
"""

from __future__ import annotations

from pathlib import Path

from skillearn.platform.redact import redact
from skillearn.platform.validate import SWEEP_RECORD, UsageError, check_tracking_uri


def sync_sweep(sweep_dir: str, tracking_uri: str | None = None) -> int:
    """Flush the sweep's backlog; 0 when everything was sent, 1 when some is still waiting."""
    import json

    from skillearn.platform.tracking import BACKLOG_FILE, sync_backlog

    folder = Path(sweep_dir).expanduser().resolve()
    path = folder / BACKLOG_FILE
    if tracking_uri is not None:  # a bad URI is refused even when there is nothing to send
        tracking_uri = check_tracking_uri(tracking_uri)
    if not folder.is_dir() or not any(
        (folder / marker).exists() for marker in (BACKLOG_FILE, SWEEP_RECORD, "tuner.pkl")
    ):
        raise UsageError(f"{folder} is not a sweep directory; pass STORAGE/NAME of the sweep")
    if not path.is_file():
        print(f"nothing to send: {folder} has no {BACKLOG_FILE}")
        return 0
    try:
        saved_uri = json.loads(path.read_text()).get("tracking_uri", "")
    except ValueError as err:
        raise UsageError(f"{path} is not valid JSON ({err}); it cannot be sent") from None
    if tracking_uri is None and ("***" in saved_uri or not saved_uri):
        raise UsageError(
            f"{path} was written for {saved_uri or 'an unknown server'}; pass its --tracking-uri "
            "(with the password, which is never saved)"
        )
    uri = check_tracking_uri(tracking_uri or saved_uri)
    left = sync_backlog(folder, uri)
    if left:
        print(f"{left} writes still wait in {path}: MLflow at {redact(uri)} did not take them")
        return 1
    print(f"sent the backlog of {folder} to MLflow at {redact(uri)}")
    return 0
