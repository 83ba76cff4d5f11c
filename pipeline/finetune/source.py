"""Which run a command means: ``RUN_ID`` (or a unique prefix), ``#N`` (a row of ``pipeline
runs``), ``best``, a run folder, or (for predict/export) a ``.keras`` file.

Run folders live under the reports folder (``$PIPELINE_REPORTS_DIR`` or ``./reports``). A run
is either a *head run* (from ``pipeline fit-head``: a head fitted on cached features) or a
*fine-tuned run* (from ``pipeline finetune``: a whole Keras model, ``model.keras``). ``best``
is the top row of the leaderboard (ranked by the validation selection metric); for
fine-tuning, the best head run whose head can become Keras layers. The run a ``best``, ``#N``
or prefix resolved to is echoed on stderr.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import settings
from pipeline.errors import PipelineError
from pipeline.heads.registry import finetunable_kinds
from pipeline.progress import Reporter
from pipeline.runs.leaderboard import ROW, all_rows, find_run, sort_column
from pipeline.runs.record import RunMetrics, RunRecord
from pipeline.runs.store import iter_runs

__all__ = ["RunRef", "resolve_run"]


@dataclass
class RunRef:
    """A resolved run folder with its records."""

    run_dir: Path
    record: RunRecord
    run_metrics: RunMetrics

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def is_finetuned(self) -> bool:
        return self.record.is_finetuned


def resolve_run(ref: str | os.PathLike, reports_dir: str | os.PathLike | None = None, *,
                head_runs_only: bool = False, report: Reporter | None = None) -> RunRef:
    """The run folder ``ref`` names: ``best``, a row number of ``pipeline runs`` (``#3`` or
    ``3``), a run id (or a unique prefix of one), or a path.

    ``best`` is the top row of the leaderboard's default order (validation); with
    ``head_runs_only`` (fine-tuning) the best run that can be fine-tuned, and a named run must
    be a head run. A run named by ``best``, a row number or a prefix is echoed on ``report``
    (stderr), with the better runs ``best`` skipped and why.
    """
    reports = settings.reports_dir(reports_dir)
    report = report or Reporter()
    text = str(ref).strip()
    if not text:
        raise PipelineError("no run given; expected a run id, #N, 'best' or a run folder")
    if text == "best":
        run_dir = _best(reports, head_runs_only, report)
    else:
        run_dir = find_run(reports, text)
        if run_dir.name != text and Path(text).expanduser() != run_dir:
            report.line(f"run {text} -> {run_dir.name}")
    found = RunRef(run_dir=run_dir, record=RunRecord.read(run_dir),
                   run_metrics=RunMetrics.read(run_dir))
    if head_runs_only and found.is_finetuned:
        info = found.record.finetune
        src = (info.source_run if info is not None else None) or "its head run"
        raise PipelineError(f"run {found.run_id} is already fine-tuned; fine-tune its head run "
                            f"({src}) with other settings instead")
    return found


def _skip_reason(row: dict, finetuned: set[str], finetunable: list[str]) -> str | None:
    """Why fine-tuning cannot start from a leaderboard row (``None``: it can)."""
    if row["run_dir"] in finetuned:
        return "already fine-tuned"
    if row["head"] not in finetunable:
        return f"a {row['head']} head cannot be fine-tuned"
    return None


def _best(reports: Path, head_runs_only: bool, report: Reporter) -> Path:
    finetunable = finetunable_kinds()
    rows = all_rows(reports)
    skipped: list[str] = []
    if head_runs_only:  # fine-tuning: the best run whose head can become Keras layers
        finetuned = {str(d) for d, record, _ in iter_runs(reports) if record.is_finetuned}
        for row in rows:
            why = _skip_reason(row, finetuned, finetunable)
            if why is None:
                break
            skipped.append(f"#{row[ROW]} {row['run_id']} ({why})")
        rows = rows[len(skipped):]
    if not rows:
        what = f"head runs of a kind fine-tuning can start from ({', '.join(finetunable)})" \
            if head_runs_only else "runs"
        raise PipelineError(f"no {what} under {reports}; fit heads first "
                            "(`pipeline fit-head CACHE`) or set --reports-dir")
    best = rows[0]
    # The validation column of a run chosen by cross-validation holds its fold mean.
    on = f"{best['cv_folds']}-fold cv" if best.get("cv_folds") else "validation"
    report.line(f"best -> #{best[ROW]} {best['run_id']} ({best['config']}, {on} "
                f"{sort_column(None).removeprefix('val_')} {_num(best.get(sort_column(None)))})")
    if skipped:
        report.line(f"skipped {len(skipped)} better run(s): {'; '.join(skipped)}")
    return Path(best["run_dir"])


def _num(v: object) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)
