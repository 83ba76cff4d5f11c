"""The command line: a thin typer layer over the Python API.

:mod:`pipeline.cli.app` holds the typer :data:`app`; each ``*_cmd`` module adds the commands
of one stage to it (they parse options and delegate), and importing this package imports them
all. Nothing here imports TensorFlow: only the commands that run a model do, when they run
(``pipeline --help``, ``runs``, ``heads``, ``bases``, ``cache ...`` start at once).

:func:`main` is the console entry point. Exit statuses: a
:class:`~pipeline.errors.UsageError` (bad flag or value) is one line and 2, any other
:class:`~pipeline.errors.PipelineError` one line and 1, Ctrl-C one line and 130.
"""

from __future__ import annotations

import sys

import typer

# Each command module registers its commands on import (one line per module). Then
# ``pipeline.cli.app`` is rebound from the submodule of that name to the Typer application.
import pipeline.cli.extract_cmd
import pipeline.cli.finetune_cmd
import pipeline.cli.heads_cmd
import pipeline.cli.report_cmd  # noqa: F401  (report, interpret)
from pipeline.cli.app import app, quiet_tensorflow, table_console
from pipeline.errors import EXIT_INTERRUPTED, PipelineError

__all__ = ["app", "main", "quiet_tensorflow", "table_console"]

INTERRUPTED = "interrupted; finished work is kept and the next run resumes"


def _interrupted() -> None:
    typer.echo(INTERRUPTED, err=True)
    sys.exit(EXIT_INTERRUPTED)


def main() -> None:
    """Console entry point: user errors are one line and a non-zero exit, never a traceback."""
    # A file name that is not valid UTF-8 is printed with escapes, not a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit
        if code == EXIT_INTERRUPTED:  # typer turns Ctrl-C into Exit(130) and returns its code
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # usage errors from typer's bundled click (exit 2)
        from typer._click import exceptions as click_exc

        if isinstance(e, click_exc.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
