"""The root of every user-fixable skillearn error.

One base class lets the CLI turn any of them into one `skillearn: error:` line (exit 2), and lets
the sweep tell a deterministic failure (same input, same error: a bad config or bad data) from a
transient one, so only the transient ones are retried.
"""

from __future__ import annotations


class SkillearnError(ValueError):
    """A problem the user can fix; the message says what is wrong and how to fix it.

    `deterministic = True` means retrying with the same input cannot help (the sweep does not
    retry such a trial); a subclass for transient problems sets it to False.
    """

    deterministic: bool = True
