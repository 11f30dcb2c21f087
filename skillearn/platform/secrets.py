"""Passwords in URIs come from the environment, are URL-encoded, and are never saved.

A sweep's settings are pickled by Ray (`tuner.pkl`, the searcher's state) into the sweep storage,
which on a cluster is a shared bucket, and they are printed and logged. So a password is never
part of a URI skillearn keeps: `--tracking-uri` and `--optuna-storage` take it as a placeholder
naming an environment variable,

    postgresql://mlflow:${OPTUNA_DB_PASSWORD}@db:5432/mlflow
    https://skillearn:${MLFLOW_PASSWORD}@mlflow.example.org

and only the moment a connection is opened is the placeholder replaced by the variable's value,
percent-encoded (so `& # @ / ? % {` in a password are safe). A URI holding a password in plain
text is refused: it would sit in shell history, `ps` and every file the URI reaches. Read a
password from a file with `export OPTUNA_DB_PASSWORD="$(cat ~/.skillearn/db_password)"`.
(MLflow's own MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD work as well.)
"""

from __future__ import annotations

import os
import re
import urllib.parse

from skillearn.errors import SkillearnError

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_AUTHORITY = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>.*)$", re.DOTALL)


class SecretError(SkillearnError):
    """A password given in plain text, or a placeholder whose variable is not set."""


def split_userinfo(uri: str) -> tuple[str, str | None, str | None, str]:
    """(scheme://, user, password, host-and-rest) of a URI; user/password None when absent.

    The userinfo ends at the last `@` before the host, so a raw password holding `/ ? # @`
    is still found (where urllib would cut it at the first of those)."""
    match = _AUTHORITY.match(uri)
    if not match:
        return "", None, None, uri
    rest = match["rest"]
    head, at, host = rest.rpartition("@")
    if not at or not head:
        return match["scheme"], None, None, rest
    user, colon, password = head.partition(":")
    return match["scheme"], user, (password if colon else None), host


def password_placeholder(uri: str | None) -> str | None:
    """The environment variable a URI's password names (`user:${VAR}@`), else None."""
    if not uri:
        return None
    _, _, password, _ = split_userinfo(uri)
    found = PLACEHOLDER.fullmatch(password or "")
    return found[1] if found else None


def check_uri_secrets(uri: str, flag: str) -> str:
    """Refuse a plain-text password in `uri`; its placeholder's variable must be set.

    Returns `uri` unchanged: the placeholder, not the password, is what the sweep keeps."""
    from skillearn.platform.redact import redact

    _, _, password, _ = split_userinfo(uri)
    if password and not PLACEHOLDER.fullmatch(password):
        raise SecretError(
            f"{flag} {redact(uri)} holds a password in plain text, which would be saved with the "
            "sweep; export it as an environment variable and write ${NAME} in its place, e.g. "
            "postgresql://user:${DB_PASSWORD}@host/db (see README, security notes)"
        )
    variable = password_placeholder(uri)
    if variable is not None and not os.environ.get(variable):
        raise SecretError(
            f"{flag} takes its password from ${{{variable}}}, which is not set (or empty) in the "
            f"environment; export {variable}=... (e.g. {variable}=\"$(cat PASSWORD-FILE)\")"
        )
    return uri


def expand_secrets(uri: str) -> str:
    """`uri` with its password placeholder replaced by the variable's value, percent-encoded.

    Only for opening a connection: the result must never be stored, printed or pickled."""
    variable = password_placeholder(uri)
    if variable is None:
        return uri
    value = os.environ.get(variable)
    if not value:
        raise SecretError(
            f"the password of {uri} comes from ${{{variable}}}, which is not set in this "
            f"process's environment; export {variable}=... where the sweep's driver runs"
        )
    scheme, user, _, host = split_userinfo(uri)
    return f"{scheme}{user}:{urllib.parse.quote(value, safe='')}@{host}"


def secret_values(*uris: str | None) -> list[str]:
    """The passwords the placeholders of `uris` stand for, raw and encoded (to look for leaks)."""
    found = []
    for uri in uris:
        variable = password_placeholder(uri)
        value = os.environ.get(variable or "")
        if variable and value:
            found += [value, urllib.parse.quote(value, safe="")]
    return found
