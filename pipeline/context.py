"""Where a stage reads and writes, and how it talks to the user: one small object.

Instead of threading ``cache_dir``, ``reports_dir`` and ``quiet`` through every layer, the
entry points make one :class:`Context` and hand it down::

    ctx = Context.create(cache_dir="cache", quiet=True)
    ctx.cache_dir, ctx.reports_dir, ctx.report.line("...")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import settings
from pipeline.progress import Reporter


@dataclass(frozen=True)
class Context:
    """The cache folder, the reports folder and the reporter of one invocation."""

    cache_dir: Path
    reports_dir: Path
    report: Reporter = field(default_factory=Reporter)

    @classmethod
    def create(cls, *, cache_dir: str | os.PathLike | None = None,
               reports_dir: str | os.PathLike | None = None, quiet: bool = False,
               report: Reporter | None = None) -> Context:
        """Folders from the arguments, else the environment, else ``./cache``, ``./reports``."""
        return cls(cache_dir=settings.cache_dir(cache_dir),
                   reports_dir=settings.reports_dir(reports_dir),
                   report=report or Reporter(quiet=quiet))

    @property
    def quiet(self) -> bool:
        return self.report.quiet
