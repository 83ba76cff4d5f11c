"""The typer application the command modules add their commands to, and what they share.

Its own module so that the command modules import it without importing the ``pipeline.cli``
package that imports them (no import circle). ``pipeline.cli`` re-exports :data:`app`.

Shared here: the table console, :func:`emit_json` (every ``--json``),
:func:`quiet_tensorflow` (called only by commands that run a model), and the environment
variables and exit statuses shown in ``pipeline --help``. How arguments are read (lists,
usage errors) is in :mod:`pipeline.cli.args`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

#: Every environment variable the code reads (tests/test_cli_surface.py greps the code for
#: them): name -> what it does. Shown in ``pipeline --help``.
ENVIRONMENT: dict[str, str] = {
    "PIPELINE_CACHE_DIR": "feature cache folder (default ./cache; --cache-dir wins)",
    "PIPELINE_REPORTS_DIR": "run folders and leaderboard (default ./reports; --reports-dir "
                            "wins)",
    "PIPELINE_WEIGHTS_DIR": "converted weights, e.g. EfficientNet-Lite (default "
                            "$XDG_CACHE_HOME/pipeline/weights)",
    "XDG_CACHE_HOME": "parent of the default weights folder (default ~/.cache)",
    "PIPELINE_TF_LOGS": "set to 1 to show TensorFlow's start-up logs (hidden by default)",
    "TF_CPP_MIN_LOG_LEVEL": "TensorFlow's C++ log level; set to 3 unless already set",
    "PIPELINE_RUNTIMES_DIR": "extractors converted for --runtime onnxruntime|openvino and the "
                             "remembered --runtime auto choices (default "
                             "$XDG_CACHE_HOME/pipeline/runtimes)",
    "PIPELINE_ENGINE": "extract's --engine when the flag is not given (local or ray)",
    "RAY_ADDRESS": "extract's --address for --engine ray when the flag is not given",
    "PIPELINE_RAY_KILL_WORKER_AFTER": "tests only: a Ray model worker kills itself after its "
                                      "k-th batch (k:MARKER), to test recovery",
    "MPLBACKEND": "matplotlib's backend; set to Agg (files only) unless already set",
    "OMP_NUM_THREADS": "set inside the sweep's worker processes so workers x threads never "
                       "exceeds the cores (also OPENBLAS_NUM_THREADS, MKL_NUM_THREADS)",
    "OPENBLAS_NUM_THREADS": "see OMP_NUM_THREADS",
    "MKL_NUM_THREADS": "see OMP_NUM_THREADS",
}

EXIT_STATUSES = ("0 success; 1 a failure while running (or `cache verify` / `predict` found "
                 "problems); 2 a usage error (bad flag or value); 130 interrupted (finished "
                 "work is kept).")


def _epilog() -> str:
    # typer's rich help keeps lines apart only when separated by blank lines.
    env = "\n\n".join(f"{name}: {what}" for name, what in ENVIRONMENT.items())
    return f"Environment:\n\n{env}\n\nExit status: {EXIT_STATUSES}"


app = typer.Typer(
    name="pipeline",
    help="Extract features once with pretrained bases, fit many heads on the cache, "
    "fine-tune the best.",
    epilog=_epilog(),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def table_console() -> Console:
    """Console for tables on stdout: the terminal's width, or wide when piped to a file, so
    that long run ids are not folded into unreadable columns."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200)


def emit_json(obj: Any) -> None:
    """One JSON document on stdout (``--json`` of every command): indented, keys as given,
    paths and other objects as strings."""
    typer.echo(json.dumps(obj, indent=2, default=str))


def quiet_tensorflow() -> None:
    """Import TensorFlow now, with its C++ start-up logs (oneDNN notices, which ignore
    TF_CPP_MIN_LOG_LEVEL set from Python) hidden at the file-descriptor level. Called only by
    commands that run a model; PIPELINE_TF_LOGS=1 shows the logs."""
    if os.environ.get("PIPELINE_TF_LOGS") or "tensorflow" in sys.modules:
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
