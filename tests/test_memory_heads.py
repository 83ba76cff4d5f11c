"""Heads on caches larger than the memory budget: linear heads train out of core from
chunks of the HDF5 file; heads that need every row in memory are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import make_cache

from pipeline.cache import store
from pipeline.cache.store import open_feature_rows
from pipeline.errors import PipelineError
from pipeline.heads.out_of_core import (
    evaluate,
    fit_cache_out_of_core,
    parse_memory,
    plan_memory,
    training_bytes,
)
from pipeline.progress import Reporter


class Lines(Reporter):
    def __init__(self):
        super().__init__(quiet=True)
        self.lines: list[str] = []

    def line(self, text: str) -> None:
        self.lines.append(text)


def test_memory_sizes_parse_and_nonsense_is_one_line():
    assert parse_memory("256M") == 256 << 20 and parse_memory("2G") == 2 << 30
    assert parse_memory("1.5k") == 1536 and parse_memory(4096) == 4096
    assert parse_memory(None) > 0
    with pytest.raises(PipelineError, match="expected a size such as 256M"):
        parse_memory("lots")


def test_over_budget_linear_heads_go_out_of_core_and_others_are_refused(tmp_path):
    cache = make_cache(tmp_path / "c.h5", n=400, d=16)
    need = training_bytes(open_feature_rows(cache))
    report = Lines()
    assert plan_memory([cache], ["logreg", "rbf_svm"], need, report) == []
    assert plan_memory([cache], ["logreg", "linear_svm"], need - 1, report) == [cache]
    assert "out of core" in report.lines[-1] and "linear_svm, logreg" in report.lines[-1]
    with pytest.raises(PipelineError) as e:
        plan_memory([cache], ["logreg", "rbf_svm", "knn"], need - 1, report)
    assert "knn, rbf_svm need every row in memory" in str(e.value)
    assert "logreg, linear_svm" in str(e.value)


@pytest.mark.parametrize("kind", ["logreg", "linear_svm"])
def test_out_of_core_heads_learn_from_chunks_as_well_as_in_memory(tmp_path, monkeypatch, kind):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cache = make_cache(tmp_path / "c.h5", n=600, d=16, sep=2.0)
    monkeypatch.setattr(store, "CHUNK_BYTES", 50 * 16 * 4)  # 50 rows a chunk: many chunks
    model, validation = fit_cache_out_of_core(cache, kind, {"C": 1.0})
    fs = store.load_feature_set(cache)
    x, y = fs.xy("train")
    whole = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y)
    xv, yv = fs.xy("validation")
    in_memory = float(np.mean(whole.predict(xv) == yv))
    assert validation["accuracy"] >= in_memory - 0.05 and validation["accuracy"] > 0.8
    test = evaluate(model, open_feature_rows(cache), "test")
    assert test["accuracy"] > 0.8


def test_an_out_of_core_sweep_scores_each_configuration_and_tests_the_best(tmp_path):
    from pipeline.heads.grid import HeadConfig
    from pipeline.heads.out_of_core import sweep_out_of_core

    cache = make_cache(tmp_path / "c.h5", n=300, d=8, sep=3.0)
    configs = [HeadConfig("logreg", {"C": 1e-4}), HeadConfig("linear_svm", {"C": 1.0})]
    fitted = sweep_out_of_core(cache, configs, metric="balanced_accuracy")
    scores = [f["validation"]["balanced_accuracy"] for f in fitted]
    assert scores == sorted(scores, reverse=True) and len(fitted) == 2
    assert fitted[0]["test"]["accuracy"] > 0.8 and fitted[1]["test"] is None
