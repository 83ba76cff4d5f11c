"""The command line: a thin typer layer over the Python API.

:mod:`pipeline.cli.app` holds the typer :data:`app`; each ``*_cmd`` module adds the commands
of one stage to it (they parse options and delegate), and importing this package imports them
all. :func:`main` is the console entry point: a :class:`~pipeline.errors.PipelineError` becomes
one line on stderr and exit 2; Ctrl-C is one line and exit 130.
"""

from __future__ import annotations

import os
import sys

import typer

# ``pipeline.cli.app`` is the Typer application: this import rebinds the name after the
# submodule of the same name was first loaded (by extract_cmd), and later imports of an
# already loaded submodule leave it alone.
from pipeline.cli import extract_cmd  # noqa: F401  (registers its commands)
from pipeline.cli.app import app, table_console
from pipeline.errors import PipelineError

try:  # stages that may not be present in every checkout during development
    from pipeline.cli import heads_cmd  # noqa: F401
except ImportError as _e:  # pragma: no cover
    if "heads_cmd" not in str(_e):
        raise
try:
    from pipeline.cli import finetune_cmd  # noqa: F401
except ImportError as _e:  # pragma: no cover
    if "finetune_cmd" not in str(_e):
        raise
from pipeline.cli import report_cmd  # noqa: F401,E402  (report, interpret)

__all__ = ["app", "main", "table_console"]


def _import_tensorflow_quietly() -> None:
    """TensorFlow's C++ start-up logs (oneDNN notices) ignore TF_CPP_MIN_LOG_LEVEL set from
    Python, so hide stderr at the file-descriptor level while it loads. Set
    PIPELINE_TF_LOGS=1 to see them."""
    if os.environ.get("PIPELINE_TF_LOGS"):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


INTERRUPTED = "interrupted; finished work is kept and the next run resumes"


def _interrupted() -> None:
    typer.echo(INTERRUPTED, err=True)
    sys.exit(130)


def main() -> None:
    """Console entry point: user errors are one line and a non-zero exit, never a traceback."""
    _import_tensorflow_quietly()
    # A file name that is not valid UTF-8 is printed with escapes, not a UnicodeEncodeError.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit
        if code == 130:  # typer turns Ctrl-C into Exit(130) and returns its code
            _interrupted()
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as e:
        if isinstance(e.__cause__, KeyboardInterrupt):  # typer turns Ctrl-C into Exit(130)
            _interrupted()
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # usage errors from typer's bundled click
        from typer._click import exceptions as click_exc

        if isinstance(e, click_exc.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
