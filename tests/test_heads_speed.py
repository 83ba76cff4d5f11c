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


# -- the sweep: threads, the logistic-regression path, calibrating only the chosen ----------

def _svm_sweep(tmp_path, metric: str, monkeypatch):
    """A linear_svm grid on overlapping blobs; every fit's ``calibrate`` flag logged."""
    from helpers import make_cache

    from pipeline.heads.options import FitOptions
    from pipeline.heads.sklearn_heads import LinearSVMHead
    from pipeline.heads.sweep import run_sweep

    fits = []
    orig = LinearSVMHead.fit

    def spy(self, x, y, x_val=None, y_val=None):
        fits.append(self.calibrate)
        return orig(self, x, y, x_val, y_val)

    monkeypatch.setattr(LinearSVMHead, "fit", spy)
    cache = make_cache(tmp_path / "c.h5", n=240, d=8, sep=0.6)
    result = run_sweep([cache], [{"kind": "linear_svm", "C": [0.001, 0.01, 1.0]}],
                       FitOptions(cv=0, metric=metric, jobs=2))
    return result, fits, cache


def _calibrated_validation(cache, params):
    from pipeline.cache import load_feature_set
    from pipeline.heads.metrics import classification_metrics
    from pipeline.heads.sweep import prepare

    d = prepare(load_feature_set(cache))
    head = make_head("linear_svm", params, n_classes=2).fit(d.x["train"], d.y["train"])
    return classification_metrics(d.y["validation"], head.predict_proba(d.x["validation"]))


def test_the_svm_grid_is_ranked_uncalibrated_and_only_the_chosen_is_calibrated(
        tmp_path, monkeypatch):
    result, fits, cache = _svm_sweep(tmp_path, "roc_auc", monkeypatch)
    assert fits == [False, False, False, True]  # three ranking fits, one calibrated fit
    (run,) = result.runs
    # Binary ROC-AUC is unchanged by Platt scaling: the choice is the one that calibrating
    # every configuration (the previous sweep) makes.
    full = {c: _calibrated_validation(cache, {"C": c})["roc_auc"] for c in (0.001, 0.01, 1.0)}
    assert full[run.config.params["C"]] == pytest.approx(max(full.values()), abs=1e-12)
    # The recorded validation metrics are those of the calibrated head, log-loss included.
    direct = _calibrated_validation(cache, run.config.params)
    for name in ("balanced_accuracy", "accuracy", "roc_auc", "log_loss"):
        assert run.validation[name] == pytest.approx(direct[name])
    np.testing.assert_allclose(run.predictions["validation"].proba.sum(axis=1), 1.0)
    others = [c for c in result.pool(run) if c.config != run.config]
    assert len(others) == 2
    assert all(c.validation["calibrated"] is False and c.validation["log_loss"] is None
               for c in others)


def test_log_loss_selection_calibrates_every_configuration(tmp_path, monkeypatch):
    result, fits, _ = _svm_sweep(tmp_path, "log_loss", monkeypatch)
    assert fits == [True, True, True]
    assert all(c.validation["log_loss"] > 0 and "calibrated" not in c.validation
               for c in result.candidates)
    (run,) = result.runs
    assert run.config == min(result.candidates, key=lambda c: c.validation["log_loss"]).config


def test_a_ranking_only_svm_refuses_probabilities_and_saving(tmp_path):
    from pipeline.errors import PipelineError
    from pipeline.heads.registry import get_head_spec

    x, y = _blobs(120, 6, 3)
    for kind in ("linear_svm", "rbf_svm"):
        head = get_head_spec(kind).make({}, n_classes=3, calibrate=False).fit(x, y)
        scores = head.ranking_scores(x)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)
        assert np.array_equal(scores.argmax(axis=1), head.pipeline.predict(x))
        with pytest.raises(PipelineError, match="ranking only"):
            head.predict_proba(x)
        with pytest.raises(PipelineError, match="ranking only"):
            head.save(tmp_path)
    # Kinds with native probabilities ignore the flag.
    assert get_head_spec("logreg").make({}, n_classes=2, calibrate=False).calibrate


def _objective(head, x, y) -> float:
    """Logistic regression's objective, C * summed log-loss + |W|^2 / 2, on scaled rows."""
    from sklearn.metrics import log_loss

    model, scaler = head.pipeline.named_steps["model"], head.pipeline.named_steps["scale"]
    proba = model.predict_proba(scaler.transform(x))
    return model.C * log_loss(y, proba, normalize=False) + 0.5 * float((model.coef_ ** 2).sum())


@pytest.mark.parametrize("k", [2, 3])
def test_the_warm_started_logreg_path_equals_cold_fits(k):
    """Within the solver's tolerance: the same objective value (0.1%), and the same
    probabilities where the problem is well conditioned (at large C on separable rows the
    objective is flat and both runs stop at different points of it)."""
    from pipeline.heads.sklearn_heads import LogRegHead

    x, y = _blobs(300, 12, k, seed=1)
    x_val, _ = _blobs(90, 12, k, seed=2)
    grid = [10.0, 0.001, 0.1, 1.0, 0.01]  # fit_path orders them itself
    path = [make_head("logreg", {"C": c}, n_classes=k) for c in grid]
    seconds = LogRegHead.fit_path(path, x, y)
    assert len(seconds) == len(grid) and all(s >= 0 for s in seconds)
    for c, head in zip(grid, path, strict=True):
        cold = make_head("logreg", {"C": c}, n_classes=k).fit(x, y)
        assert _objective(head, x, y) == pytest.approx(_objective(cold, x, y), rel=1e-3)
        if c <= 1.0:
            np.testing.assert_allclose(head.predict_proba(x_val), cold.predict_proba(x_val),
                                       atol=1e-2)
        assert c == head.pipeline.named_steps["model"].C
        assert head.pipeline.named_steps["model"].warm_start is False
    scalers = {id(h.pipeline.named_steps["scale"]) for h in path}
    assert len(scalers) == len(path)  # each head owns its scaler (saved on its own)


def test_the_sweep_fits_in_threads_of_this_process_and_leaves_warning_filters(
        tmp_path, monkeypatch):
    """No worker processes: every fit runs here, within its share of the cores; the
    ConvergenceWarning filter of the pool is gone afterwards."""
    import os
    import warnings

    from helpers import make_cache

    import pipeline.heads.sklearn_heads as sk
    from pipeline.heads.options import FitOptions
    from pipeline.heads.sweep import run_sweep

    seen = []

    def spy() -> int:
        seen.append((os.getpid(), threads.thread_budget()))
        return threads.thread_budget()

    monkeypatch.setattr(sk, "thread_budget", spy)
    before = list(warnings.filters)
    cache = make_cache(tmp_path / "c.h5", n=90, d=5)
    result = run_sweep([cache], [{"kind": "random_forest", "n_estimators": [3, 4, 5]},
                                 {"kind": "logreg", "C": [0.1, 1.0]}], FitOptions(cv=0))
    assert not any(c.error for c in result.candidates)
    _, per = threads.plan(4, None)  # 3 forests + one logreg path
    assert len(seen) == 3
    assert all(pid == os.getpid() and budget == per for pid, budget in seen)
    assert list(warnings.filters) == before


@pytest.mark.parametrize("k", [2, 3])
def test_sweep_metrics_equal_classification_metrics(tmp_path, k):
    """The sweep scores splits in NumPy (split_metrics); the numbers are those of
    classification_metrics (scikit-learn), validation of every candidate and test alike."""
    from helpers import make_cache

    from pipeline.cache import load_feature_set
    from pipeline.heads.metrics import classification_metrics
    from pipeline.heads.options import FitOptions
    from pipeline.heads.sweep import prepare, run_sweep

    cache = make_cache(tmp_path / "c.h5", n=150, d=6, k=k, sep=0.8)
    result = run_sweep([cache], [{"kind": "logreg", "C": [0.01, 1.0]}, "knn"],
                       FitOptions(cv=0))
    d = prepare(load_feature_set(cache))
    pairs = [(c.validation, classification_metrics(d.y["validation"], c.proba))
             for c in result.candidates]
    pairs += [(r.test, classification_metrics(d.y["test"], r.predictions["test"].proba))
              for r in result.runs]
    for fast, slow in pairs:
        assert fast["confusion_matrix"] == slow["confusion_matrix"]
        for name in ("n_samples", "accuracy", "balanced_accuracy", "f1_macro", "roc_auc",
                     "log_loss"):
            assert fast[name] == pytest.approx(slow[name], abs=1e-12)


@pytest.mark.parametrize("gamma", ["scale", "auto", 0.05])
def test_ranking_rbf_svms_on_one_kernel_matrix_equal_their_own_fits(gamma):
    """The rbf_svm grid, ranked uncalibrated, shares one precomputed kernel: the decision
    values are those of each SVC fitted on its own."""
    from pipeline.heads.registry import get_head_spec
    from pipeline.heads.sklearn_heads import RBFSVMHead

    spec = get_head_spec("rbf_svm")
    x, y = _blobs(150, 8, 3, seed=3)
    x_val, _ = _blobs(60, 8, 3, seed=4)
    grid = [1.0, 10.0, 0.1]
    path = [spec.make({"C": c, "gamma": gamma}, n_classes=3, calibrate=False) for c in grid]
    RBFSVMHead.fit_path(path, x, y)
    for c, head in zip(grid, path, strict=True):
        alone = spec.make({"C": c, "gamma": gamma}, n_classes=3, calibrate=False).fit(x, y)
        np.testing.assert_allclose(head.pipeline.decision_function(x_val),
                                   alone.pipeline.decision_function(x_val), atol=1e-6)
        np.testing.assert_allclose(head.ranking_scores(x_val), alone.ranking_scores(x_val),
                                   atol=1e-6)
    # Calibrated fits (the chosen one) are the ordinary head, one by one.
    calibrated = [spec.make({"C": c}, n_classes=3) for c in grid[:2]]
    RBFSVMHead.fit_path(calibrated, x, y)
    assert all(h.predict_proba(x_val).shape == (60, 3) for h in calibrated)
