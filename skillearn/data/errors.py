"""The one exception type the data layer raises for user-fixable problems."""

from __future__ import annotations

from skillearn.errors import SkillearnError


class DataError(SkillearnError):
    """A data spec or data files are wrong; the message says what is wrong and how to fix it.

    Subclasses SkillearnError (a ValueError) so generic callers that catch bad arguments still
    catch it, the CLI prints the single line instead of a traceback, and a sweep does not retry a
    trial that failed on it (the same data fails the same way again).
    """
