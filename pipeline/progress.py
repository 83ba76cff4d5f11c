"""Console output for long work: status lines, warnings, and a progress bar with rate and ETA."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:  # annotation only: the result comes from the extract layer above
    from pipeline.extract.result import ExtractResult


class _Bar:
    def __init__(self, progress: Progress | None, task: Any):
        self._progress, self._task = progress, task

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)


class Reporter:
    """Prints to stderr so stdout stays clean for ``--json`` and pipes; ``quiet`` silences all
    but warnings."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)

    def line(self, text: str) -> None:
        if not self.quiet:
            self.console.print(text, markup=False, soft_wrap=True)

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, total: int, what: str = "images") -> Iterator[_Bar]:
        if self.quiet or total == 0:
            yield _Bar(None, None)
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TaskProgressColumn(), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=not sys.stderr.isatty(),
                      refresh_per_second=4) as progress:
            task = progress.add_task(what, total=total, rate="")
            bar = _RateBar(progress, task, what)
            yield bar

    def result(self, r: ExtractResult) -> None:
        """One extraction's outcome: skipped files (a warning), then hit or rows."""
        if r.skipped:
            listed = "; ".join(f"{sid} ({why})" for sid, why in r.skipped[:10])
            more = f" (+{len(r.skipped) - 10} more)" if len(r.skipped) > 10 else ""
            self.warn(f"{r.base}: skipped {len(r.skipped)} undecodable file(s), recorded in "
                      f"the cache: {listed}{more}")
        if r.hit:
            self.line(f"{r.base}: cache hit, nothing to extract -> {r.path}")
        else:
            rate = f" at {r.images_per_s:.1f} images/s" if r.n_new else ""
            self.line(f"{r.base}: {r.n_rows} rows ({r.n_new} extracted{rate}, "
                      f"{r.n_reused} reused) -> {r.path}")


class _RateBar(_Bar):
    def __init__(self, progress: Progress, task: Any, what: str):
        super().__init__(progress, task)
        self._what = what

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)
        t = self._progress.tasks[self._task]
        if t.speed:
            self._progress.update(self._task, rate=f"{t.speed:.1f} {self._what}/s")
