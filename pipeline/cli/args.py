"""How the commands read their arguments, the same way everywhere.

:func:`split_list`: every list flag accepts ``--x a --x b`` and ``--x a,b`` (bases, heads,
filters, grids). :func:`usage_errors`: a bad value found while the command line is checked is
a :class:`~pipeline.errors.UsageError` (exit status 2), not a failure while running (1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

from pipeline.errors import PipelineError, UsageError


def split_list(values: Iterable[str] | None) -> list[str]:
    """A list flag's values: ``--base a --base b`` and ``--base a,b`` (or both) are the same
    list. Empty items are dropped; order is kept; ``None`` is ``[]``."""
    return [item.strip() for v in values or () for item in str(v).split(",") if item.strip()]


@contextlib.contextmanager
def usage_errors() -> Iterator[None]:
    """Inside: a :class:`PipelineError` is a bad flag or value (exit status 2), e.g. an
    unknown base or head kind while the command line is checked, before any work."""
    try:
        yield
    except UsageError:
        raise
    except PipelineError as e:
        raise UsageError(str(e)) from None
