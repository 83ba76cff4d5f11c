"""What one base's extraction did."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExtractResult:
    """What one base's extraction did."""

    base: str
    path: Path
    hit: bool
    n_rows: int
    n_new: int = 0
    n_reused: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.n_new / self.seconds if self.seconds > 0 else 0.0
