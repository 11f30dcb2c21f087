"""A failed trial's error as one line (`Type: message`), for the console and the run's tags."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from skillearn.platform.mlflow_runs import MAX_TAG_CHARS
from skillearn.platform.redact import redact_text

_EXC_LINE = re.compile(r"^((?:[A-Za-z_][\w]*\.)*)([A-Za-z_]\w*(?:Error|Exception|Exit|Interrupt))"
                       r"(?::\s*(.*))?$")


def error_summary(text: str) -> str:
    """`Type: message` of the exception a traceback text ends with, on one line.

    Prefers skillearn's own errors, told by their module path (Python prints
    `skillearn.….CheckpointError: …`), so a CheckpointError wrapped by Ray stays a
    CheckpointError without a list of names to keep in step; module paths are dropped and
    credentials in URIs masked."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    found = [m for m in (_EXC_LINE.match(line) for line in lines) if m]
    if not found:
        return redact_text(lines[-1]) if lines else "trial failed (no error message recorded)"
    preferred = [m for m in found if m.group(1).startswith("skillearn.")]
    match = (preferred or found)[-1]
    name, message = match.group(2), (match.group(3) or "").strip()
    return redact_text(f"{name}: {message}" if message else name)[:MAX_TAG_CHARS]


def one_line_error(err: BaseException) -> str:
    """`Type: message` of an exception on one line (credentials masked)."""
    message = " ".join(str(err).split())
    return redact_text(f"{type(err).__name__}: {message}" if message else type(err).__name__)


def trial_error_message(trial: Any) -> str:
    """The trial's error as one line: the exception (skillearn's own preferred) and message."""
    path = getattr(trial, "error_file", None)
    text = ""
    try:
        if path and Path(path).is_file():
            text = Path(path).read_text()
        else:
            getter = getattr(trial, "get_error", None)
            text = str(getter() or "") if callable(getter) else ""
    except Exception as err:
        text = f"(could not read the error: {err})"
    return error_summary(text)
