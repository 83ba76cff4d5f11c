"""User-facing errors and the command line's exit statuses.

A :class:`PipelineError` is bad input or an unmet precondition that the user can fix. The CLI
prints its message as one line and exits non-zero; it never shows a traceback for it. A
:class:`UsageError` is the subset that is a bad flag or value (caught before any work):

====  ==========================================================
0     success
1     a failure while running (:class:`PipelineError`), or a check that found problems
      (``cache verify``, ``predict`` with undecodable files)
2     a usage error: unknown flag, bad value, invalid options (:class:`UsageError`)
130   interrupted (Ctrl-C); finished work is kept
====  ==========================================================
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class PipelineError(Exception):
    """An error whose message is meant for the user: one line saying what was expected."""

    exit_code = EXIT_FAILURE


class UsageError(PipelineError):
    """A bad flag or value given by the user (exit status 2), found before any work starts."""

    exit_code = EXIT_USAGE


def did_you_mean(name: str, choices: Iterable[str], n: int = 3, cutoff: float = 0.6) -> str:
    """`` (did you mean a, b?)`` for the close matches of a mistyped name, else ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=cutoff)
    return f" (did you mean {', '.join(close)}?)" if close else ""
