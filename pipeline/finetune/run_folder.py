"""A fine-tuning run's folder while it trains: its state file, its lock, and resuming.

The folder of an unfinished run holds ``finetune_state.json`` (the settings digest, status
and one entry per session), the Keras epoch backup (``backup/``), the learning curve so far
and the best epoch's weights. Running the same settings again finds that folder and resumes
it; ``epochs`` is a budget and not part of the digest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.fileio import file_lock, read_json, write_json
from pipeline.runs.store import new_run_dir

MODEL_FILE = "model.keras"
STATE_FILE = "finetune_state.json"
HISTORY_FILE = "finetune_history.json"
BACKUP_DIR = "backup"
LOCK_FILE = ".lock"


@dataclass
class RunFolder:
    """A locked run folder and its state (``digest``, ``status``, ``settings``,
    ``sessions``)."""

    path: Path
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def backup_dir(self) -> Path:
        return self.path / BACKUP_DIR

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_FILE

    def write_state(self) -> None:
        write_json(self.path / STATE_FILE, self.state)

    def epochs_done(self) -> int:
        """The last epoch the Keras backup can restore (0: none)."""
        meta = read_json(self.backup_dir / "training_metadata.json", {})
        return int(meta.get("epoch", 0)) if (self.backup_dir / "latest.weights.h5").exists() \
            else 0


@contextlib.contextmanager
def open_run_folder(reports: Path, digest: str, settings: dict[str, Any], *, resume: bool,
                    name_parts: tuple[str, ...]) -> Iterator[RunFolder]:
    """An unfinished run folder of the same ``digest`` that no other process holds (when
    ``resume``), else a new folder named from ``name_parts``; locked while in use."""
    with _resumable(reports, digest) if resume else contextlib.nullcontext() as found:
        if found is not None:
            yield _with_defaults(found, digest, settings)
            return
    path = new_run_dir(reports, *name_parts)
    with file_lock(path / LOCK_FILE, blocking=False) as ok:
        assert ok  # a brand-new folder
        folder = RunFolder(path, {"digest": digest, "status": "training"})
        folder.write_state()
        yield _with_defaults(folder, digest, settings)


@contextlib.contextmanager
def _resumable(reports: Path, digest: str) -> Iterator[RunFolder | None]:
    if reports.is_dir():
        for state_path in sorted(reports.glob(f"*/{STATE_FILE}"), reverse=True):
            state = read_json(state_path, {})
            if state.get("digest") != digest or state.get("status") == "done":
                continue
            with file_lock(state_path.parent / LOCK_FILE, blocking=False) as ok:
                if ok:
                    yield RunFolder(state_path.parent, state)
                    return
    yield None


def _with_defaults(folder: RunFolder, digest: str, settings: dict[str, Any]) -> RunFolder:
    folder.state.setdefault("digest", digest)
    folder.state.setdefault("settings", settings)
    folder.state.setdefault("sessions", [])
    return folder
