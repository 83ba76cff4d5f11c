"""The typer application the command modules add their commands to, and the table console.

Its own module so that the command modules import it without importing the ``pipeline.cli``
package that imports them (no import circle). ``pipeline.cli`` re-exports :data:`app`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    name="pipeline",
    help="Extract features once with pretrained bases, fit many heads on the cache, "
    "fine-tune the best.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def table_console() -> Console:
    """Console for tables on stdout: the terminal's width, or wide when piped to a file, so
    that long run ids are not folded into unreadable columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)
