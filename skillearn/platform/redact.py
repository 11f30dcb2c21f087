"""Keep credentials out of logs: `redact(uri)` hides the password (and tokens) of a URI.

Used wherever a tracking URI, an Optuna storage URL or a Ray address is printed, logged, or
stored as an MLflow param/tag: `postgresql://mlflow:s3cret@db:5432/mlflow` becomes
`postgresql://mlflow:***@db:5432/mlflow`.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
# query parameters that carry secrets (e.g. ?password=..., ?token=..., SAS signatures)
_SECRET_KEYS = re.compile(r"(pass|pwd|secret|token|key|sig|credential|auth)", re.IGNORECASE)
# user:password@ inside any text (a URI embedded in an error message, a log line)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def redact(uri: str | None) -> str:
    """`uri` with any password or secret query value replaced by ***; other text unchanged."""
    if not uri:
        return "" if uri is None else uri
    text = str(uri)
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return redact_text(text)
    if not parts.scheme or not parts.netloc:
        return redact_text(text)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{hostport}" if sep else f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(
            f"{k}={MASK if _SECRET_KEYS.search(k) else v}" for k, v in pairs
        )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """Every `scheme://user:password@` inside free text (e.g. an error message) masked."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
