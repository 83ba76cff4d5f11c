"""Which run a command means: ``RUN_ID``, ``best``, a run folder, or (for predict/export) a
``.keras`` file.

Run folders live under the reports folder (``$PIPELINE_REPORTS_DIR`` or ``./reports``). A run
is either a *head run* (from ``pipeline fit-head``: a head fitted on cached features) or a
*fine-tuned run* (from ``pipeline finetune``: a whole Keras model, ``model.keras``). ``best``
is the top row of the leaderboard (ranked by the validation selection metric), optionally
restricted to head runs – fine-tuning always starts from a head run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pipeline import settings
from pipeline.errors import PipelineError, did_you_mean
from pipeline.heads.registry import finetunable_kinds
from pipeline.runs.leaderboard import leaderboard
from pipeline.runs.record import CONFIG, FINETUNE_STAGE, RunMetrics, RunRecord
from pipeline.runs.store import iter_runs

__all__ = ["FINETUNE_STAGE", "RunRef", "resolve_run"]


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
                head_runs_only: bool = False) -> RunRef:
    """The run folder ``ref`` names: ``best``, a run id (or a unique prefix of one), or a path.

    ``head_runs_only`` restricts ``best`` (and refuses a named run) to head runs.
    """
    reports = settings.reports_dir(reports_dir)
    text = str(ref).strip()
    if not text:
        raise PipelineError("no run given; expected a run id, 'best' or a run folder")
    run_dir = _best(reports, head_runs_only) if text == "best" else _named(reports, text)
    found = RunRef(run_dir=run_dir, record=RunRecord.read(run_dir),
                   run_metrics=RunMetrics.read(run_dir))
    if head_runs_only and found.is_finetuned:
        info = found.record.finetune
        src = (info.source_run if info is not None else None) or "its head run"
        raise PipelineError(f"run {found.run_id} is already fine-tuned; fine-tune its head run "
                            f"({src}) with other settings instead")
    return found


def _best(reports: Path, head_runs_only: bool) -> Path:
    finetunable = finetunable_kinds()
    finetuned = {str(d) for d, record, _ in iter_runs(reports) if record.is_finetuned}
    rows = leaderboard(reports)
    if head_runs_only:  # fine-tuning: the best run whose head can become Keras layers
        rows = [r for r in rows if r["run_dir"] not in finetuned and r["head"] in finetunable]
    if not rows:
        what = f"head runs of a kind fine-tuning can start from ({', '.join(finetunable)})" \
            if head_runs_only else "runs"
        raise PipelineError(f"no {what} under {reports}; fit heads first "
                            "(`pipeline fit-head CACHE`) or set --reports-dir")
    return Path(rows[0]["run_dir"])


def _named(reports: Path, text: str) -> Path:
    path = Path(text).expanduser()
    if (path / CONFIG).is_file():
        return path
    if (reports / text / CONFIG).is_file():
        return reports / text
    ids = sorted(p.parent.name for p in reports.glob(f"*/{CONFIG}")) if reports.is_dir() else []
    matches = [i for i in ids if i.startswith(text)]
    if len(matches) == 1:
        return reports / matches[0]
    if len(matches) > 1:
        shown = ", ".join(matches[:5]) + (" ..." if len(matches) > 5 else "")
        raise PipelineError(f"run {text!r} is ambiguous under {reports}: {shown}")
    hint = did_you_mean(text, ids, n=3, cutoff=0.5)
    if path.exists():
        raise PipelineError(f"{path}: not a run folder (no {CONFIG})")
    raise PipelineError(f"no run {text!r} under {reports}{hint}; give a run id from "
                        "`pipeline runs`, 'best', or a run folder path")
