"""Shared fixtures: small generated image datasets and an isolated cache."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

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


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_class_folder(tmp_path / "data", {"cat": 12, "dog": 12})


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache, reports and weights folders (weights: shared per
    session when already converted, to stay fast)."""
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIPELINE_REPORTS_DIR", str(tmp_path / "reports"))
    return tmp_path


@pytest.fixture(scope="session")
def elpv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real ELPV dataset through the real offline base, extracted once per session."""
    from pipeline.extract import extract

    cache = tmp_path_factory.mktemp("elpv-cache")
    return extract("elpv", ["efficientnet_lite0"], cache_dir=cache, quiet=True)[0]
