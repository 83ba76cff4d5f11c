"""Where things live on disk, with the environment variables that override the defaults."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_DIR_ENV = "PIPELINE_CACHE_DIR"
REPORTS_DIR_ENV = "PIPELINE_REPORTS_DIR"
WEIGHTS_DIR_ENV = "PIPELINE_WEIGHTS_DIR"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """The feature cache folder: the argument, else ``$PIPELINE_CACHE_DIR``, else ``./cache``."""
    return Path(override or os.environ.get(CACHE_DIR_ENV) or "cache")


def reports_dir(override: str | os.PathLike | None = None) -> Path:
    """The reports folder: the argument, else ``$PIPELINE_REPORTS_DIR``, else ``./reports``."""
    return Path(override or os.environ.get(REPORTS_DIR_ENV) or "reports")


def weights_dir() -> Path:
    """Per-user folder for converted weights (e.g. EfficientNet-Lite ported from PyTorch).

    ``$PIPELINE_WEIGHTS_DIR``, else ``$XDG_CACHE_HOME/pipeline/weights``, else
    ``~/.cache/pipeline/weights``.
    """
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pipeline" / "weights"
