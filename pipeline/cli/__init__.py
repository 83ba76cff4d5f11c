"""The command line: a thin typer layer over the Python API.

Each module here adds the commands of one stage to :data:`app`; they parse options and
delegate. A :class:`~pipeline.errors.PipelineError` becomes one line on stderr and exit 2.
"""

from __future__ import annotations

import os
import sys

import typer

from pipeline.errors import PipelineError


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


def table_console():
    """Console for tables on stdout: the terminal's width, or wide when piped to a file, so
    that long run ids are not folded into unreadable columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


app = typer.Typer(
    name="pipeline",
    help="Extract features once with pretrained bases, fit many heads on the cache, "
    "fine-tune the best.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Register the commands (imported for their side effect on `app`).
from pipeline.cli import extract_cmd  # noqa: E402,F401

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


def main() -> None:
    """Console entry point: user errors are one line and a non-zero exit, never a traceback."""
    _import_tensorflow_quietly()
    try:
        code = app(standalone_mode=False)  # returns the code of a typer.Exit
        if isinstance(code, int) and code:
            sys.exit(code)
    except PipelineError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; finished work is kept and the next run resumes", err=True)
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # usage errors from typer's bundled click
        from typer._click import exceptions as click_exc

        if isinstance(e, click_exc.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
