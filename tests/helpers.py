"""Test helpers in one place: small generated images and datasets, synthetic feature caches.

Fixtures live in ``conftest.py`` (pytest finds them there); everything a test calls directly
is here, imported as ``from helpers import ...``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cache import FeatureSetInfo, write_feature_set

# A tiny random-init base keeps extraction tests fast; numbers only need to be deterministic.
TINY = dict(bases=["mobilenet_v2_0.35"], weights="none", input_size=32, batch_size=8,
            quiet=True)


def make_image(path: Path, seed: int, size: tuple[int, int] = (40, 48), fmt: str | None = None,
               mode: str = "RGB") -> Path:
    """A random image whose content is fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


def make_class_folder(root: Path, classes: dict[str, int], start_seed: int = 0) -> Path:
    seed = start_seed
    for name, n in classes.items():
        for i in range(n):
            make_image(root / name / f"img{i:03d}.png", seed)
            seed += 1
    return root


def make_cache(path: Path, *, n: int = 300, d: int = 12, k: int = 2, seed: int = 0,
               sep: float = 4.0, base: str = "fakenet", dataset: str = "synth",
               fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)) -> Path:
    """Gaussian blobs (one per class, well separated) with train/validation/test splits."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, sep, size=(k, d))
    y = np.arange(n) % k
    rng.shuffle(y)
    x = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    n_tr, n_va = int(n * fractions[0]), int(n * fractions[1])
    split = np.array(["train"] * n_tr + ["validation"] * n_va + ["test"] * (n - n_tr - n_va))
    return write_feature_set(
        path, features=x, labels=y, ids=[f"c{y[i]}/img{i:04d}.png" for i in range(n)],
        sha256=[f"{i:064x}" for i in range(n)], split=split,
        info=FeatureSetInfo(class_names=[f"class{c}" for c in range(k)], dataset=dataset,
                            base=base, key=f"{dataset}-{base}-{k}", pooling="avg"))
