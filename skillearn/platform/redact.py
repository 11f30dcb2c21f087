"""Keep credentials out of logs: `redact(uri)` hides the password (and tokens) of a URI.

Used wherever a tracking URI, an Optuna storage URL or a Ray address is printed, logged, or
stored as an MLflow param/tag: `postgresql://mlflow:s3cret@db:5432/mlflow` becomes
`postgresql://mlflow:***@db:5432/mlflow`.
"""

from __future__ import annotations

import re
import urllib.parse

from skillearn.platform.secrets import PLACEHOLDER, split_userinfo

MASK = "***"
# query parameters that carry secrets (e.g. ?password=..., ?token=..., SAS signatures)
_SECRET_KEYS = re.compile(r"(pass|pwd|secret|token|key|sig|credential|auth)", re.IGNORECASE)
# user:password@ inside any text (a URI embedded in an error message, a log line)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):\S*@")


def redact(uri: str | None) -> str:
    """`uri` with any password or secret query value replaced by ***; other text unchanged.

    The password runs to the last `@` before the host, so one holding `# / ? @` (which urllib
    would take for the start of a fragment, path or query) is still masked whole."""
    if not uri:
        return "" if uri is None else uri
    text = str(uri)
    scheme, user, password, rest = split_userinfo(text)
    if not scheme:
        return redact_text(text)
    if password is not None and not PLACEHOLDER.fullmatch(password):  # ${VAR} is no secret
        text = f"{scheme}{user}:{MASK}@{rest}"
    try:
        query = urllib.parse.urlsplit(text).query
    except ValueError:
        return redact_text(text)
    if query:
        pairs = [pair.partition("=") for pair in query.split("&")]  # values as written
        masked = "&".join(f"{k}={MASK}" if eq and _SECRET_KEYS.search(urllib.parse.unquote(k))
                          else f"{k}{eq}{v}" for k, eq, v in pairs)
        text = text.replace(f"?{query}", f"?{masked}", 1)
    return text


def redact_text(text: str) -> str:
    """Every `scheme://user:password@` inside free text (e.g. an error message) masked; the
    password runs to the last `@` of its word, so `# / ? @` inside it are masked too."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
