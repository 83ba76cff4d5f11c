"""Console output for long work: status lines, warnings, and progress with rate and ETA.

Progress is a live bar on a terminal; when stderr is not a terminal (a log file, a pipe, a CI
job) it is plain lines instead, one every ``interval`` seconds and one at the end, each with
the count, the rate and the time left::

    images: 320/2624 (12%), 41.7 images/s, ETA 0:00:55
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
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

    #: Seconds between two plain progress lines when stderr is not a terminal.
    INTERVAL = 10.0

    def __init__(self, quiet: bool = False, interval: float | None = None):
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self.interval = self.INTERVAL if interval is None else interval

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
        if not (self.console.is_terminal or self.console.is_jupyter):
            bar = _PlainBar(total, what, self.interval, self.line)
            yield bar
            bar.finish()
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


class _PlainBar(_Bar):
    """Progress for logs: a plain line every ``interval`` seconds and one at the end."""

    def __init__(self, total: int, what: str, interval: float, emit: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(None, None)
        self.total, self.what, self.interval, self._emit, self._clock = (
            total, what, interval, emit, clock)
        self.done = self._shown = 0
        self._start = self._last = clock()

    def advance(self, n: int) -> None:
        self.done += n
        if self._clock() - self._last >= self.interval:
            self._print()

    def finish(self) -> None:
        if self.done != self._shown:  # the last count, unless just printed
            self._print()

    def _print(self) -> None:
        self._last = now = self._clock()
        self._shown = self.done
        elapsed = now - self._start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else None
        eta = "?" if left is None else _clock_text(left)
        self._emit(f"{self.what}: {self.done}/{self.total} "
                   f"({100 * self.done / self.total:.0f}%), {rate:.1f} {self.what}/s, "
                   f"ETA {eta}")


def _clock_text(seconds: float) -> str:
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
