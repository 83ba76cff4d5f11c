"""Builtin datasets that ship on PyPI and work offline.

``elpv``: 2,624 solar-cell electroluminescence images (300x300, grayscale) from the
``elpv-dataset`` package (Deitsch et al. 2019). Two classes by default: ``functional``
(defect probability < 0.5) and ``defective`` (>= 0.5); ``levels=True`` keeps the four
probability levels 0, 1/3, 2/3, 1 as classes.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.samples import Dataset, Sample, sample_sha256
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


def load(name: str, levels: bool = False) -> Dataset:
    if name != "elpv":
        raise PipelineError(f"unknown builtin dataset {name!r}; known: {', '.join(NAMES)}")
    root = elpv_root()
    rows = []
    with open(root / "labels.csv", encoding="ascii") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                rows.append((parts[0], float(parts[1])))
    if levels:
        class_names = list(LEVEL_NAMES)

        def label_of(p: float) -> int:
            return min(range(4), key=lambda i: abs(p - i / 3))
    else:
        class_names = ["functional", "defective"]

        def label_of(p: float) -> int:
            return int(p >= 0.5)

    samples = [Sample(id=rel, path=root / rel, label=label_of(p), sha256=sample_sha256(root / rel))
               for rel, p in rows]
    return Dataset(name="elpv4" if levels else "elpv", source="elpv", root=root,
                   class_names=class_names, samples=samples, options={"elpv_levels": levels})
