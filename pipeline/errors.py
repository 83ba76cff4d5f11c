"""User-facing errors.

A :class:`PipelineError` is bad input or an unmet precondition that the user can fix. The CLI
prints its message as one line and exits non-zero; it never shows a traceback for it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PipelineError(Exception):
    """An error whose message is meant for the user: one line saying what was expected."""


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """`` (did you mean a, b?)`` for the close matches of a mistyped name, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(close)}?)" if close else ""
