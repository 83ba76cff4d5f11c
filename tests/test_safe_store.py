"""Heads stored without pickle: every scikit-learn kind round-trips, anything else is refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import joblib
import numpy as np
import pytest
import skops.io

from pipeline.errors import PipelineError
from pipeline.heads import list_heads, make_head
from pipeline.heads.safe_store import load_estimator, save_estimator

SKLEARN_KINDS = [spec.kind for spec in list_heads() if spec.family == "sklearn"]
FAST = {"mlp": {"max_iter": 50}, "random_forest": {"n_estimators": 5},
        "gradient_boosting": {"max_iter": 10}}


def _data(n_classes: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), 30)
    x = rng.normal(0, 1, (len(y), n_features)) + y[:, None] * 1.5
    return (x * 4 + 3).astype(np.float32), y


def test_every_sklearn_kind_is_covered():
    assert {"logreg", "linear_svm", "rbf_svm", "knn", "random_forest", "gradient_boosting",
            "mlp"} <= set(SKLEARN_KINDS)


@pytest.mark.parametrize("n_classes,n_features", [(2, 3), (3, 20)])
@pytest.mark.parametrize("kind", SKLEARN_KINDS)
def test_round_trip_keeps_predict_proba(tmp_path, kind, n_classes, n_features):
    x, y = _data(n_classes, n_features)
    params = dict(FAST.get(kind, {}))
    if kind != "knn":  # knn has no class_weight
        params["class_weight"] = "balanced"
    head = make_head(kind, params, n_classes=n_classes).fit(x, y)
    fitted = head.export()["pipeline"]
    path = save_estimator(fitted, tmp_path / "head.skops")
    loaded = load_estimator(path)
    x_new, _ = _data(n_classes, n_features, seed=1)
    np.testing.assert_array_equal(loaded.predict_proba(x_new), fitted.predict_proba(x_new))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
def test_knn_round_trip_both_weightings(tmp_path, weights):
    x, y = _data(2, 3)
    fitted = make_head("knn", {"weights": weights}, n_classes=2).fit(x, y).export()["pipeline"]
    loaded = load_estimator(save_estimator(fitted, tmp_path / "knn.skops"))
    np.testing.assert_array_equal(loaded.predict_proba(x + 0.1), fitted.predict_proba(x + 0.1))


class Payload:
    """A class outside the allow-list; constructing it would leave a marker file."""

    marker: Path | None = None

    def __setstate__(self, state):  # pragma: no cover - must never run
        Path(state["marker"]).write_text("ran")


def test_a_file_with_a_foreign_type_is_refused_unloaded(tmp_path):
    marker = tmp_path / "marker"
    obj = Payload()
    obj.marker = str(marker)
    path = tmp_path / "evil.skops"
    skops.io.dump({"model": obj}, path)
    with pytest.raises(PipelineError, match="Payload") as err:
        load_estimator(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_a_file_naming_os_system_is_refused(tmp_path):
    path = tmp_path / "evil.skops"
    skops.io.dump({"f": os.system}, path)
    with pytest.raises(PipelineError, match="system"):
        load_estimator(path)


def test_a_default_trusted_estimator_outside_the_list_is_refused(tmp_path):
    """skops trusts every scikit-learn estimator; the allow-list is narrower."""
    from sklearn.linear_model import Ridge

    path = tmp_path / "ridge.skops"
    skops.io.dump(Ridge().fit(np.eye(3), [0.0, 1.0, 2.0]), path)
    with pytest.raises(PipelineError, match="Ridge"):
        load_estimator(path)


class Boom:
    def __reduce__(self):
        return (Path.write_text, (Path(os.environ["SAFE_STORE_MARKER"]), "ran"))


@pytest.mark.parametrize("writer", ["joblib", "pickle"])
def test_pickles_are_refused_without_unpickling(tmp_path, monkeypatch, writer):
    marker = tmp_path / "marker"
    monkeypatch.setenv("SAFE_STORE_MARKER", str(marker))
    path = tmp_path / "head.joblib"
    if writer == "joblib":
        joblib.dump(Boom(), path, compress=3)
    else:
        path.write_bytes(pickle.dumps(Boom()))
    with pytest.raises(PipelineError, match="not a skops file") as err:
        load_estimator(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_saving_something_unloadable_is_refused(tmp_path):
    with pytest.raises(PipelineError, match="Payload"):
        save_estimator({"model": Payload()}, tmp_path / "x.skops")
    assert not (tmp_path / "x.skops").exists()
