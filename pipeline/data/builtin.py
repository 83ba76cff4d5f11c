"""Builtin datasets that ship on PyPI and work offline.

``elpv``: 2,624 solar-cell electroluminescence images (300x300, grayscale) from the
``elpv-dataset`` package (Deitsch et al. 2019). Two classes by default: ``functional``
(defect probability < 0.5) and ``defective`` (>= 0.5); ``levels=True`` keeps the four
probability levels 0, 1/3, 2/3, 1 as classes.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.hash_cache import Hasher, local_stat
from pipeline.data.samples import Dataset, Sample
from pipeline.errors import PipelineError

NAMES = ("elpv",)
LEVEL_NAMES = ("p0.00", "p0.33", "p0.67", "p1.00")


def elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError:
        raise PipelineError("the elpv dataset needs its package: pip install elpv-dataset") \
            from None
    return Path(elpv_dataset.__file__).parent / "data"


def elpv_probabilities(root: Path | None = None) -> list[tuple[str, float]]:
    """``(relative path, defect probability)`` of every ELPV image, from its ``labels.csv``."""
    root = root or elpv_root()
    rows = []
    with open(root / "labels.csv", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                rows.append((parts[0], float(parts[1])))
    return rows


def elpv_label(probability: float, levels: bool = False) -> int:
    """The class of a defect probability: defective (1) from 0.5, or the nearest of the
    four levels 0, 1/3, 2/3, 1 with ``levels``."""
    if levels:
        return min(range(4), key=lambda i: abs(probability - i / 3))
    return int(probability >= 0.5)


def load(name: str, levels: bool = False, hasher: Hasher | None = None) -> Dataset:
    if name != "elpv":
        raise PipelineError(f"unknown builtin dataset {name!r}; known: {', '.join(NAMES)}")
    root = elpv_root()
    class_names = list(LEVEL_NAMES) if levels else ["functional", "defective"]
    rows = elpv_probabilities(root)
    shas = (hasher or Hasher()).hashes(f"{name}:{root}", [local_stat(root / r) for r, _ in rows])
    samples = [Sample(id=rel, path=root / rel, label=elpv_label(p, levels), sha256=sha)
               for (rel, p), sha in zip(rows, shas, strict=True)]
    return Dataset(name="elpv4" if levels else "elpv", source="elpv", root=root,
                   class_names=class_names, samples=samples, options={"elpv_levels": levels})
