"""The one exception type the data layer raises for user-fixable problems."""

from __future__ import annotations


class DataError(ValueError):
    """A data spec or data files are wrong; the message says what is wrong and how to fix it.

    Subclasses ValueError so generic callers that catch bad arguments still catch it, while the CLI
    can catch it specifically and print the single line instead of a traceback.
    """
