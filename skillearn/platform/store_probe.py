"""A real, short-timeout look at an MLflow tracking store before anything is run or written.

The sweep's tracker buffers writes while a store is unreachable; a store that *refuses* them (a
client error: wrong credentials, not an MLflow server, a file that is not a database, a scheme
MLflow cannot track to) would otherwise be mistaken for an outage, and the sweep would end with
nothing recorded. So every command that uses a tracking URI asks the store once, read-only, and
turns a refusal into one clear error before Ray starts.
"""

from __future__ import annotations

import sqlite3
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from skillearn.errors import SkillearnError
from skillearn.platform.redact import redact, redact_text
from skillearn.platform.secrets import expand_secrets, split_userinfo

PROBE_TIMEOUT_S = 5.0


class StoreError(SkillearnError):
    """The tracking store cannot be used (the message says why and what to do)."""


def _short(err: BaseException) -> str:
    return redact_text(" ".join(str(err).split()))[:300] or type(err).__name__


def probe_sqlite(db: Path) -> None:
    """An existing file must be an SQLite database that is MLflow's (or empty); read-only."""
    if not db.exists():
        return  # created by MLflow on first use (the folder was checked to be writable)
    if not db.is_file():
        raise StoreError(f"the MLflow database {db} is not a file; use sqlite:///<dir>/mlflow.db")
    if db.stat().st_size == 0:
        return
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=PROBE_TIMEOUT_S)
        try:
            tables = {row[0] for row in connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            connection.close()
    except sqlite3.Error as err:
        raise StoreError(
            f"{db} is not an SQLite database ({_short(err)}); point --tracking-uri at an MLflow "
            "database or a new file"
        ) from None
    if tables and "experiments" not in tables:
        raise StoreError(
            f"{db} is another program's SQLite database (no MLflow tables; it has "
            f"{', '.join(sorted(tables)[:5])}); give MLflow its own file"
        )


def probe_client(uri: str, *, server_is_up: bool = False) -> None:
    """One read-only request through MLflow's own client (its credentials, TLS settings):
    a client error (401/403/404, bad scheme) is a StoreError; so is no answer, unless the
    server is known to be up (its /health answered): a slow or busy server is an outage the
    sweep's tracker rides out (buffered writes), so it is only reported."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from skillearn.platform.mlflow_runs import http_defaults

    http_defaults()
    shown = redact(uri)
    try:
        MlflowClient(tracking_uri=expand_secrets(uri)).search_experiments(max_results=1)
    except MlflowException as err:
        status = err.get_http_status_code()
        if status in (401, 403):
            why = ("refused the credentials; set MLFLOW_TRACKING_USERNAME / "
                   "MLFLOW_TRACKING_PASSWORD (or user:${VAR}@ in the URI) to an MLflow user's")
        elif status < 500:
            why = "refused a read-only request; is it an MLflow tracking store?"
        else:
            if server_is_up:
                print(f"skillearn: warning: MLflow at {shown} is up but did not answer a "
                      f"read-only request in time ({_short(err)[:150]}); going on",
                      file=sys.stderr)
                return
            why = "did not answer a read-only request; is it up (and not overloaded)?"
        raise StoreError(f"MLflow at {shown} {why} ({_short(err)})") from None
    except Exception as err:  # no answer, DNS, TLS, a database driver missing, ...
        raise StoreError(f"cannot use the MLflow tracking store {shown} ({_short(err)})") from None


def without_userinfo(uri: str) -> str:
    """`uri` without `user:password@` (for plain HTTP requests such as /health)."""
    scheme, user, _, host = split_userinfo(uri)
    return f"{scheme}{host}" if user is not None else uri


def probe_health(uri: str) -> None:
    """GET /health of an MLflow server: fast and unauthenticated, so "not reachable" is told
    apart from "refused" (MLflow's own client retries a dead server for seconds)."""
    health = without_userinfo(uri).rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=PROBE_TIMEOUT_S) as response:
            if response.status >= 400:
                raise urllib.error.HTTPError(health, response.status, "", None, None)  # type: ignore[arg-type]
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise StoreError(
            f"cannot reach the MLflow tracking server at {redact(uri)} ({redact(health)}: "
            f"{_short(err)}); start it (`mlflow server`) or use --tracking-uri "
            "sqlite:///<dir>/mlflow.db"
        ) from None


def probe_database(uri: str) -> None:
    """Connect to a database store (short timeout) and run `SELECT 1`; nothing is created."""
    import sqlalchemy

    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    timeout = int(PROBE_TIMEOUT_S)
    args = {"postgresql": {"connect_timeout": timeout}, "mysql": {"connect_timeout": timeout},
            "mssql": {"timeout": timeout}}.get(scheme.split("+")[0], {})
    try:
        engine = sqlalchemy.create_engine(expand_secrets(uri), connect_args=args)
        try:
            with engine.connect() as connection:
                connection.execute(sqlalchemy.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as err:
        raise StoreError(
            f"cannot open the MLflow database {redact(uri)} ({_short(err)}); check the server "
            "is up and the URL's user, password (${VAR}) and database name"
        ) from None


DATABASE_SCHEMES = ("postgresql", "mysql", "mssql")


def probe_tracking_store(uri: str) -> None:
    """Ask the store behind `uri` once (read-only); raise StoreError when it cannot be used.

    File paths and `file:` URIs are left to the caller's own message."""
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme in ("", "file") or len(scheme) == 1:
        return
    if scheme == "sqlite":
        rest = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        if rest and rest != ":memory:":
            probe_sqlite(Path(rest).expanduser())
        return
    if scheme in ("http", "https"):
        probe_health(uri)
        probe_client(uri, server_is_up=True)
    elif scheme.split("+")[0] in DATABASE_SCHEMES:
        probe_database(uri)
    elif scheme in ("databricks", "databricks-uc", "uc"):
        probe_client(uri)
    else:
        raise StoreError(
            f"tracking URI {redact(uri)[:80]!r}: MLflow cannot track to the scheme {scheme}://; "
            "use sqlite:///<dir>/mlflow.db, http(s)://server or a database URL (postgresql://...)"
        )
