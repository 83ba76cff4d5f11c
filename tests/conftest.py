"""Shared fixtures: small generated image datasets and an isolated cache."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Converted models and `--runtime auto` choices: per test session, never the user's own
# ~/.cache/pipeline/runtimes (subprocesses inherit it too).
os.environ["PIPELINE_RUNTIMES_DIR"] = tempfile.mkdtemp(prefix="pipeline-runtimes-")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from helpers import make_class_folder  # noqa: E402


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
