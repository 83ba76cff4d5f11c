"""User-facing errors.

A :class:`PipelineError` is bad input or an unmet precondition that the user can fix. The CLI
prints its message as one line and exits non-zero; it never shows a traceback for it.
"""


class PipelineError(Exception):
    """An error whose message is meant for the user: one line saying what was expected."""
