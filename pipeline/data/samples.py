"""Samples and datasets: what every later stage aligns on.

A sample's **id** is its path relative to the dataset root (POSIX separators) and its
**sha256** is the hash of its bytes; both travel with every feature row, label and prediction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.errors import PipelineError

# Re-exported: runs/ and finetune/ import it from here (the one implementation is fileio's).
from pipeline.fileio import file_sha256

__all__ = ["IMAGE_SUFFIXES", "Dataset", "Sample", "is_image_file",
           "is_image_name", "sample_sha256"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Sample:
    id: str
    path: Path | str  # a file here, or a URL's location string (pipeline.data.locations)
    label: int
    sha256: str
    split: str | None = None


@dataclass
class Dataset:
    """A labelled image collection, resolved to files, with content hashes and splits."""

    name: str
    source: str  # what the user named: a folder, a CSV file, a URL, or a builtin name
    root: Path | str  # a folder here, or a URL
    class_names: list[str]
    samples: list[Sample]
    options: dict = field(default_factory=dict)  # e.g. {"elpv_levels": True}
    #: Per split: "given" by the dataset, "carved" out of its train split, or "assigned".
    split_origin: dict[str, str] = field(default_factory=dict)
    #: Things the user should know about how the dataset was read (one line each).
    warnings: list[str] = field(default_factory=list)

    def class_counts(self) -> dict[str, int]:
        c = Counter(s.label for s in self.samples)
        return {name: c.get(i, 0) for i, name in enumerate(self.class_names)}

    def split_counts(self) -> dict[str, int]:
        return dict(Counter(s.split for s in self.samples))

    def with_samples(self, samples: list[Sample]) -> Dataset:
        return replace(self, samples=samples)


def is_image_name(name: str) -> bool:
    """Candidate images by name; hidden files are ignored (decoding decides the rest)."""
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def is_image_file(path: Path) -> bool:
    """A file with a candidate image name (:func:`is_image_name`)."""
    return is_image_name(path.name) and path.is_file()


def sample_sha256(path: Path) -> str:
    """:func:`file_sha256` for a dataset being listed: an unreadable file is a user error."""
    try:
        return file_sha256(path)
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
