"""Speed-related behaviour of the heads stage: the thread budget of a sweep, the in-memory
dense-head training, the scalable forms of the superlinear kinds (small generated data)."""

from __future__ import annotations

import numpy as np
import pytest
from joblib import Parallel, delayed

from pipeline.heads import threads
from pipeline.heads.registry import make_head


def test_plan_never_gives_more_busy_threads_than_cores(monkeypatch):
    for cores in (1, 2, 3, 8):
        monkeypatch.setattr(threads, "cpu_count", lambda c=cores: c)
        for jobs in (None, -1, 1, 2, 5, 64):
            for n_tasks in (1, 3, 20):
                workers, per = threads.plan(n_tasks, jobs)
                assert 1 <= workers <= n_tasks and per >= 1
                assert workers * per <= cores
                if jobs in (None, -1) and n_tasks >= cores:
                    assert workers == cores


def test_the_budget_holds_inside_each_worker():
    workers, per = threads.plan(4, None)
    probes = Parallel(n_jobs=workers, backend="loky")(
        delayed(threads.run_budgeted)(per, threads.probe) for _ in range(4))
    assert len({p["pid"] for p in probes}) <= workers
    for p in probes:
        assert p["budget"] == per
        assert p["pool_threads"] <= per
    assert workers * per <= threads.cpu_count()


def test_limited_threads_sets_estimator_jobs_and_restores():
    outside = threads.thread_budget()
    head = make_head("random_forest", {"n_estimators": 3}, n_classes=2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.arange(40) % 2
    with threads.limited_threads(1):
        head.fit(x, y)
        assert head.pipeline.named_steps["model"].n_jobs == 1
        assert threads.probe()["pool_threads"] == 1
    assert threads.thread_budget() == outside


def test_a_sweep_worker_fits_within_its_share(tmp_path):
    """A random forest fitted by a sweep worker gets the worker's share as n_jobs."""
    from helpers import make_cache

    from pipeline.heads.options import FitOptions
    from pipeline.heads.sweep import run_sweep

    cache = make_cache(tmp_path / "c.h5", n=60, d=6)
    result = run_sweep([cache], [{"kind": "random_forest", "n_estimators": [3, 4]},
                                 {"kind": "logreg"}], FitOptions(cv=0))
    workers, per = threads.plan(3, None)
    for c in result.candidates:
        if c.config.kind == "random_forest":
            assert c.head.pipeline.named_steps["model"].n_jobs == per
    assert workers * per <= threads.cpu_count()


# -- dense heads trained in memory ----------------------------------------------------------

def _blobs(n: int = 240, d: int = 10, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 2.0, (k, d))
    y = np.arange(n) % k
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_dense_heads_train_without_tensorflow_and_save_the_same_model(tmp_path):
    """Fitting and scoring a dense head imports no TensorFlow; the Keras model built for
    saving computes the same probabilities; the loaded file too."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from pipeline.heads.registry import make_head\n"
            "x = np.random.default_rng(0).normal(size=(60, 5)).astype('float32')\n"
            "y = np.arange(60) % 2\n"
            "for kind, p in (('dense', {}), ('dense_mlp', {'units': 8})):\n"
            "    h = make_head(kind, dict(p, epochs=3), n_classes=2)\n"
            "    h.fit(x[:40], y[:40], x[40:], y[40:]).predict_proba(x)\n"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    x, y = _blobs()
    for kind, params in (("dense", {"epochs": 8}), ("dense_mlp", {"epochs": 8, "units": 16})):
        head = make_head(kind, params, n_classes=3, seed=1).fit(x[:180], y[:180], x[180:],
                                                                y[180:])
        proba = head.predict_proba(x)
        from_keras = head.model.predict(x, verbose=0)
        e = np.exp(from_keras - from_keras.max(axis=1, keepdims=True))
        np.testing.assert_allclose(e / e.sum(axis=1, keepdims=True), proba, atol=1e-5)
        again = type(head).load(head.save(tmp_path), kind, head.params, n_classes=3)
        np.testing.assert_allclose(again.predict_proba(x), proba, atol=1e-5)


def test_dense_early_stopping_keeps_the_best_epoch():
    """Validation rows whose labels disagree with training: the validation loss rises, the
    fit stops ``patience`` epochs after its best and keeps that epoch's weights."""
    x, y = _blobs(k=2)
    y_val = 1 - y[180:]  # the opposite of what training teaches
    head = make_head("dense", {"epochs": 40, "patience": 3, "learning_rate": 0.05},
                     n_classes=2).fit(x[:180], y[:180], x[180:], y_val)
    hist = head.history
    assert set(hist) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    best = int(np.argmin(hist["val_loss"])) + 1
    assert head.best_epoch == best and len(hist["loss"]) == best + 3 < 40
    assert head.refit_params()["epochs"] == best
    from pipeline.heads.metrics import classification_metrics

    kept = classification_metrics(y_val, head.predict_proba(x[180:]))["log_loss"]
    assert kept == pytest.approx(hist["val_loss"][best - 1], rel=1e-4)


def test_dense_training_is_seeded():
    x, y = _blobs()
    a = make_head("dense", {"epochs": 5}, n_classes=3, seed=3).fit(x, y).predict_proba(x)
    b = make_head("dense", {"epochs": 5}, n_classes=3, seed=3).fit(x, y).predict_proba(x)
    c = make_head("dense", {"epochs": 5}, n_classes=3, seed=4).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# -- scalable forms ---------------------------------------------------------------------------

def test_past_the_threshold_the_sweep_fits_recorded_scalable_forms(tmp_path, capsys):
    from helpers import make_cache

    from pipeline.context import Context
    from pipeline.heads.options import FitOptions
    from pipeline.heads.sklearn_heads import SCALE_ROWS
    from pipeline.heads.sweep import run_sweep
    from pipeline.progress import Reporter

    n = int((SCALE_ROWS + 60) / 0.6) + 1
    cache = make_cache(tmp_path / "big.h5", n=n, d=4, k=3)
    ctx = Context(cache_dir=tmp_path, reports_dir=tmp_path / "r", report=Reporter())
    result = run_sweep([cache], [{"kind": "rbf_svm"}, {"kind": "knn"},
                                 {"kind": "random_forest", "n_estimators": 5},
                                 {"kind": "logreg"}], FitOptions(), ctx=ctx)
    err = capsys.readouterr().err
    n_train = len(result.splits[0].y["train"])
    assert n_train > SCALE_ROWS
    for kind in ("rbf_svm", "knn", "random_forest"):
        assert err.count(f"{kind}: {n_train:,} training rows > {SCALE_ROWS:,}") == 1
        run = next(r for r in result.runs if r.config.kind == kind)
        assert run.head.params["form"] == "scalable"
        assert run.validation["accuracy"] > 0.9
    assert "logreg:" not in err
    heads = {r.config.kind: r.head.pipeline.named_steps["model"] for r in result.runs}
    assert "nystroem" in heads["rbf_svm"].named_steps
    assert SCALE_ROWS - 3 <= heads["knn"].n_samples_fit_ <= SCALE_ROWS + 3
    assert heads["random_forest"].max_samples == SCALE_ROWS


def test_below_the_threshold_and_form_exact_stay_exact():
    x, y = _blobs(k=2)
    for form in ("auto", "exact"):
        head = make_head("rbf_svm", {"form": form}, n_classes=2).fit(x, y)
        assert head.params["form"] == "exact"
        assert type(head.pipeline.named_steps["model"]).__name__ == "CalibratedClassifierCV"


@pytest.mark.parametrize("k", [2, 3])
def test_the_scalable_rbf_svm_exports_as_equal_layers_and_onnx(k):
    from pipeline.finetune.kernel_layers import kernel_head

    x, y = _blobs(k=k)
    x = x * 3 + 5  # unscaled rows: the scaler is inside the layers
    head = make_head("rbf_svm", {"form": "scalable", "C": 10.0}, n_classes=k).fit(x, y)
    proba = head.predict_proba(x)
    layer = kernel_head("rbf_svm", head.pipeline, k, output="proba").layers[0]
    np.testing.assert_allclose(np.asarray(layer(x)), proba, atol=1e-4)
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    import onnxruntime as ort

    from pipeline.finetune.onnx_export import onnx_head_graph

    graph = onnx_head_graph(head, x.shape[1])
    sess = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, proba, atol=1e-4)
