"""Synthetic feature caches for the head tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.cache import FeatureSetInfo, write_feature_set


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
