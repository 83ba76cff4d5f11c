"""RBF SVM and k-NN heads as Keras layers: equal to scikit-learn, loadable without pipeline."""

from __future__ import annotations

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.finetune import kernel_layers
from pipeline.finetune.kernel_layers import kernel_head, knn_layers, rbf_svm_layers
from pipeline.heads import make_head

N_FEATURES = 12


def _blobs(n_classes: int, n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping classes on raw (unscaled) features; continuous, so no distance ties."""
    centres = np.random.default_rng(99).normal(0, 2, (n_classes, N_FEATURES))
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = (centres[y] + rng.normal(0, 2, (len(y), N_FEATURES))) * 5 + 7
    return x.astype(np.float32), y


def _fitted(kind: str, params: dict, n_classes: int) -> tuple[object, np.ndarray, np.ndarray]:
    x, y = _blobs(n_classes, 40, seed=0)
    head = make_head(kind, params, n_classes=n_classes).fit(x, y)
    held_out, _ = _blobs(n_classes, 30, seed=1)
    # Exact copies of training rows too: distance 0 takes the whole vote in a distance k-NN.
    return head, np.vstack([held_out, x[:5]]), x


def _as_model(folded, softmax: bool = False) -> keras.Model:
    inp = keras.Input((N_FEATURES,))
    out = folded(inp)
    return keras.Model(inp, keras.layers.Softmax()(out) if softmax else out)


def _compare(head, rows: np.ndarray, got: np.ndarray) -> None:
    want = head.predict_proba(rows)
    assert np.abs(got - want).max() < 1e-4
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    assert agreement == 1.0, f"predicted class agrees on {agreement:.1%} of rows"


@pytest.mark.parametrize("n_classes", [2, 3])
def test_rbf_svm_layers_equal_predict_proba(n_classes):
    head, rows, _ = _fitted("rbf_svm", {"class_weight": "balanced"}, n_classes)
    pipe = head.export()["pipeline"]
    assert len(pipe.named_steps["model"].calibrated_classifiers_) == 3  # the ensemble
    folded = rbf_svm_layers(pipe, n_classes, output="proba")
    assert folded.kind == "rbf_svm" and folded.n_classes == n_classes
    _compare(head, rows, _as_model(folded).predict(rows, verbose=0))


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_knn_layers_equal_predict_proba(n_classes, weights):
    head, rows, _ = _fitted("knn", {"n_neighbors": 5, "weights": weights}, n_classes)
    folded = knn_layers(head.export()["pipeline"], n_classes, output="proba")
    _compare(head, rows, _as_model(folded).predict(rows, verbose=0))


@pytest.mark.parametrize("kind", ["rbf_svm", "knn"])
def test_log_proba_output_is_a_logit_for_softmax(kind):
    """The default output slots into FoldedHead, whose caller adds the softmax."""
    head, rows, _ = _fitted(kind, {}, 3)
    folded = kernel_head(kind, head.export()["pipeline"], 3)
    assert folded.extra["output"] == "log_proba"
    logits = _as_model(folded).predict(rows, verbose=0)
    assert np.isfinite(logits).all()
    _compare(head, rows, _as_model(folded, softmax=True).predict(rows, verbose=0))


@pytest.mark.parametrize("kind", ["rbf_svm", "knn"])
def test_a_class_missing_from_training_gets_probability_zero(kind):
    x, y = _blobs(3, 40, seed=0)
    keep = y != 1
    head = make_head(kind, {}, n_classes=3).fit(x[keep], y[keep])
    rows, _ = _blobs(3, 10, seed=2)
    got = _as_model(kernel_head(kind, head.export()["pipeline"], 3, output="proba")).predict(
        rows, verbose=0)
    assert np.all(got[:, 1] == 0)
    _compare(head, rows, got)


def test_knn_past_the_size_limit_is_refused(monkeypatch):
    head, _, train = _fitted("knn", {}, 2)
    monkeypatch.setattr(kernel_layers, "KNN_MAX_ROWS_X_FEATURES", train.size - 1)
    with pytest.raises(PipelineError, match="KNN_MAX_ROWS_X_FEATURES") as err:
        knn_layers(head.export()["pipeline"], 2)
    assert "\n" not in str(err.value) and "travel inside the model" in str(err.value)


def test_other_kinds_and_outputs_are_refused():
    head, _, _ = _fitted("logreg", {}, 2)
    with pytest.raises(PipelineError, match="rbf_svm, knn"):
        kernel_head("logreg", head.export()["pipeline"], 2)
    with pytest.raises(PipelineError, match="rbf_svm"):
        rbf_svm_layers(head.export()["pipeline"], 2)
    knn, _, _ = _fitted("knn", {}, 2)
    with pytest.raises(PipelineError, match="output"):
        knn_layers(knn.export()["pipeline"], 2, output="logits")


LOAD_WITHOUT_PIPELINE = """
import sys
sys.modules["pipeline"] = None  # any import of the package would now fail
import keras, numpy as np
rows = np.load("rows.npy")
for name in ("rbf_svm", "knn"):
    model = keras.models.load_model(name + ".keras")  # safe_mode is on by default
    np.save(name + "_loaded.npy", model.predict(rows, verbose=0))
"""


def test_saved_models_load_and_agree_without_pipeline(tmp_path):
    _, rows, _ = _fitted("knn", {}, 3)
    np.save(tmp_path / "rows.npy", rows)
    expected = {}
    for kind, params in (("rbf_svm", {}), ("knn", {"weights": "distance"})):
        head, _, _ = _fitted(kind, params, 3)
        model = _as_model(kernel_head(kind, head.export()["pipeline"], 3), softmax=True)
        model.save(tmp_path / f"{kind}.keras")
        expected[kind] = head.predict_proba(rows)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_PIPELINE], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    for kind, want in expected.items():
        got = np.load(tmp_path / f"{kind}_loaded.npy")
        assert np.abs(got - want).max() < 1e-4, kind
