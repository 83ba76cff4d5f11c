"""Heads: every kind fits and predicts; grids; selection on validation only; saved heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_cache

from pipeline.cache import load_feature_set
from pipeline.errors import PipelineError
from pipeline.heads import (
    Head,
    HeadSpec,
    default_sweep,
    expand_grids,
    list_heads,
    make_grid,
    make_head,
    parse_head_args,
    register_head,
    unregister_head,
)
from pipeline.heads.params import P
from pipeline.runs import fit_heads, load_head

FAST = {"dense": {"epochs": 20, "learning_rate": 0.01},
        "dense_mlp": {"epochs": 20, "learning_rate": 0.01, "units": 32},
        "random_forest": {"n_estimators": 30}, "gradient_boosting": {"max_iter": 20},
        "mlp": {"hidden_layer_sizes": (32,), "max_iter": 100}}
ALL_KINDS = ["dense", "dense_mlp", "logreg", "linear_svm", "rbf_svm", "knn", "random_forest",
             "gradient_boosting", "mlp"]


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("caches")
    return {k: load_feature_set(make_cache(root / f"synth{k}.h5", k=k, seed=k)) for k in (2, 3)}


def test_registry_has_every_kind():
    assert {s.kind for s in list_heads()} >= set(ALL_KINDS)


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("kind", ALL_KINDS)
def test_each_head_fits_and_predicts(caches, kind, k):
    fs = caches[k]
    x, y = fs.xy("train")
    xv, yv = fs.xy("validation")
    xt, yt = fs.xy("test")
    head = make_head(kind, FAST.get(kind), n_classes=k)
    assert head.fit(x, y, xv, yv) is head
    proba = head.predict_proba(xt)
    assert proba.shape == (len(xt), k)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert (proba >= 0).all()
    assert np.mean(head.predict(xt) == yt) > 0.75  # well separated blobs; chance is <= 0.5
    if kind.startswith("dense"):
        assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(head.history)


@pytest.mark.parametrize("kind", ["logreg", "linear_svm"])
@pytest.mark.parametrize("k", [2, 3])
def test_linear_heads_export_an_equivalent_dense_layer(caches, kind, k):
    fs = caches[k]
    x, y = fs.xy("train")
    head = make_head(kind, n_classes=k).fit(x, y)
    kernel, bias = head.dense_weights()
    assert kernel.shape == (x.shape[1], k) and bias.shape == (k,)
    logits = x @ kernel + bias
    model = head.export()["pipeline"].named_steps["model"]
    if kind == "logreg":  # softmax of the folded logits reproduces the probabilities
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(z / z.sum(axis=1, keepdims=True), head.predict_proba(x),
                                   atol=1e-4)
    else:
        assert np.array_equal(np.argmax(logits, axis=1),
                              model.calibrated_classifiers_[0].estimator.predict(
                                  head.export()["pipeline"].named_steps["scale"].transform(x)))
    exp = head.export()
    assert exp["scaler_mean"].shape == (x.shape[1],) and "coef" in exp and "intercept" in exp


# -- grids --------------------------------------------------------------------------------


def test_grid_parsing_makes_every_combination_with_typed_values():
    grids = parse_head_args([("head", "logreg"), ("param", "C=0.01,0.1,1"),
                             ("head", "rbf_svm"), ("param", "C=1,10"),
                             ("param", "gamma=scale,0.001"),
                             ("head", "random_forest"), ("param", "max_depth=none,4"),
                             ("head", "mlp"), ("param", "hidden_layer_sizes=64,64x32")])
    configs = expand_grids(grids)
    assert len(configs) == 3 + 4 + 2 + 2
    cs = sorted(c.params["C"] for c in configs if c.kind == "logreg")
    assert cs == [0.01, 0.1, 1.0] and all(isinstance(c, float) for c in cs)
    gammas = {c.params["gamma"] for c in configs if c.kind == "rbf_svm"}
    assert gammas == {"scale", 0.001}
    assert {c.params["max_depth"] for c in configs if c.kind == "random_forest"} == {None, 4}
    assert {c.params["hidden_layer_sizes"] for c in configs if c.kind == "mlp"} == {
        (64,), (64, 32)}
    # unspecified parameters take the defaults
    assert all(c.params["max_iter"] == 1000 for c in configs if c.kind == "logreg")


@pytest.mark.parametrize("tokens, fragment", [
    ([("head", "nope")], "unknown head"),
    ([("head", "logreg"), ("param", "D=1")], "no parameter 'D'"),
    ([("head", "logreg"), ("param", "C=abc")], "expected a number"),
    ([("head", "logreg"), ("param", "C=-1")], "expected a number > 0"),
    ([("head", "knn"), ("param", "n_neighbors=2.5")], "expected an integer"),
    ([("head", "knn"), ("param", "weights=heavy")], "one of uniform, distance"),
    ([("param", "C=1")], "must follow"),
    ([("head", "logreg"), ("param", "C")], "name=value"),
    ([("head", "logreg"), ("param", "C=1"), ("param", "C=2")], "given twice"),
])
def test_grid_errors_are_one_line_pipeline_errors(tokens, fragment):
    with pytest.raises(PipelineError) as e:
        parse_head_args(tokens)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_make_grid_checks_python_values():
    assert make_grid("logreg", {"C": [1, 0.5]}).values["C"] == (1.0, 0.5)
    with pytest.raises(PipelineError, match="expected a number"):
        make_grid("logreg", {"C": ["big"]})
    with pytest.raises(PipelineError, match="expected an integer"):
        make_grid("knn", {"n_neighbors": True})


def test_default_sweep_has_at_least_ten_configurations():
    configs = expand_grids(default_sweep())
    assert len(configs) >= 10
    assert {"logreg", "linear_svm", "rbf_svm", "knn", "random_forest", "dense"} <= {
        c.kind for c in configs}


# -- selection ------------------------------------------------------------------------------

_SEEN: list[tuple[str, frozenset]] = []


class _CheatHead(Head):
    """Perfect on the rows of one split and wrong elsewhere; logs which splits it predicts.

    Column 0 of the features holds the row index, so the head can look rows up.
    """

    family = "sklearn"
    filename = "head.joblib"
    labels: np.ndarray = np.array([])
    splits: np.ndarray = np.array([])

    def fit(self, x, y, x_val=None, y_val=None):
        return self

    def predict_proba(self, x):
        rows = x[:, 0].astype(int)
        _SEEN.append((self.params["good_on"], frozenset(self.splits[rows])))
        truth = self.labels[rows]
        pred = np.where(self.splits[rows] == self.params["good_on"], truth, 1 - truth)
        return np.eye(self.n_classes)[pred]

    def save(self, folder):
        path = folder / self.filename
        path.write_bytes(b"cheat")
        return path

    @classmethod
    def load(cls, path, kind, params, *, n_classes):
        return cls(kind, params, n_classes=n_classes)


@pytest.fixture
def cheat_cache(tmp_path):
    path = make_cache(tmp_path / "cheat.h5", n=120, d=3)
    fs = load_feature_set(path)
    from pipeline.cache import write_feature_set

    x = fs.features.copy()
    x[:, 0] = np.arange(len(x))
    write_feature_set(path, features=x, labels=fs.labels, ids=list(fs.ids),
                      sha256=list(fs.sha256), split=list(fs.split), meta=fs.meta)
    _CheatHead.labels, _CheatHead.splits = fs.labels, fs.split
    register_head(HeadSpec("cheat", "test head", _CheatHead, (
        P("good_on", "str", "validation", choices=("validation", "test")),), family="sklearn"),
        replace=True)
    _SEEN.clear()
    yield path
    unregister_head("cheat")


def test_selection_uses_validation_and_tests_only_the_chosen(cheat_cache, tmp_path):
    result = fit_heads([cheat_cache], [make_grid("cheat", {"good_on": ["test", "validation"]})],
                       jobs=1, reports_dir=tmp_path / "reports", quiet=True, cv=0)
    (run,) = result.runs
    assert run.config.params["good_on"] == "validation"  # the validation-best ...
    assert run.validation["accuracy"] == 1.0
    assert run.test["accuracy"] == 0.0  # ... although the other config would win on test
    test_calls = [who for who, splits in _SEEN if "test" in splits]
    assert test_calls == ["validation"]  # test predicted once, by the chosen config only
    assert all(splits == {"validation"} for who, splits in _SEEN if who == "test")
    cfg = json.loads((run.run_dir / "config.json").read_text())
    assert cfg["selection"]["on"] == "validation"
    assert len(cfg["selection"]["candidates"]) == 2


def test_refit_trains_on_train_and_validation_before_testing(tmp_path, monkeypatch):
    from pipeline.heads.sklearn_heads import LogRegHead

    sizes = []
    orig = LogRegHead.fit

    def spy(self, x, y, x_val=None, y_val=None):
        sizes.append(len(y))
        return orig(self, x, y, x_val, y_val)

    monkeypatch.setattr(LogRegHead, "fit", spy)
    cache = make_cache(tmp_path / "c.h5", n=200)
    result = fit_heads(cache, [make_grid("logreg", {"C": [0.1, 1.0]})], refit=True, jobs=1,
                       reports_dir=tmp_path / "r", quiet=True, cv=0)
    assert sizes == [120, 120, 160]  # two train-only fits, then one refit on train+validation
    cfg = json.loads((result.best.run_dir / "config.json").read_text())
    assert cfg["selection"]["refit"] is True


# -- fit_heads end to end, saving and loading -----------------------------------------------


@pytest.mark.parametrize("k", [2, 3])
def test_fit_heads_writes_runs_that_load_back(tmp_path, k):
    cache = make_cache(tmp_path / "c.h5", k=k)
    reports = tmp_path / "reports"
    result = fit_heads([cache], [make_grid("logreg", {"C": [0.1, 1.0]}),
                                 make_grid("dense", {"epochs": 5})],
                       jobs=2, reports_dir=reports, quiet=True)
    assert {r.config.kind for r in result.runs} == {"logreg", "dense"}
    assert sum(r.best_overall for r in result.runs) == 1
    fs = load_feature_set(cache)
    xt, _ = fs.xy("test")
    for r in result.runs:
        files = {p.name for p in r.run_dir.iterdir()}
        assert {"config.json", "metrics.json", "confusion_matrix.png"} <= files
        assert ("learning_curve.png" in files) == (r.config.kind == "dense")
        metrics = json.loads((r.run_dir / "metrics.json").read_text())
        for split in ("validation", "test"):
            m = metrics[split]
            assert {"accuracy", "balanced_accuracy", "f1_macro", "roc_auc", "log_loss",
                    "confusion_matrix"} <= set(m)
            assert np.array(m["confusion_matrix"]).shape == (k, k)
        assert metrics["validation"]["fit_seconds"] > 0
        assert "predict_seconds" in metrics["test"]
        loaded = load_head(r.run_dir)
        assert loaded.class_names == fs.class_names
        np.testing.assert_allclose(loaded.predict_proba(xt), r.head.predict_proba(xt),
                                   atol=1e-5)
    dense = load_head(next(r.run_dir for r in result.runs if r.config.kind == "dense"))
    assert dense.export()["model"].output_shape == (None, k)
    logreg = load_head(next(r.run_dir for r in result.runs if r.config.kind == "logreg"))
    assert "coef" in logreg.export() and "scaler_scale" in logreg.export()


@pytest.mark.parametrize("kind", ["logreg", "dense"])
def test_tampered_head_is_refused(tmp_path, kind):
    cache = make_cache(tmp_path / "c.h5")
    result = fit_heads(cache, [make_grid(kind, FAST.get(kind))], jobs=1,
                       reports_dir=tmp_path / "r", quiet=True)
    run_dir = result.runs[0].run_dir
    load_head(run_dir)  # intact: loads
    cfg = json.loads((run_dir / "config.json").read_text())
    path = run_dir / cfg["head"]["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PipelineError, match="does not match"):
        load_head(run_dir)


def test_empty_split_is_an_error(tmp_path):
    cache = make_cache(tmp_path / "c.h5", fractions=(0.8, 0.2, 0.0))
    with pytest.raises(PipelineError, match="'test' split has no samples"):
        fit_heads(cache, ["logreg"], jobs=1, reports_dir=tmp_path / "r", quiet=True)


def test_bad_cache_and_options_are_errors(tmp_path):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(PipelineError, match="not a readable HDF5"):
        fit_heads(bad, ["logreg"], quiet=True, reports_dir=tmp_path)
    cache = make_cache(tmp_path / "c.h5")
    with pytest.raises(PipelineError, match="unknown selection metric"):
        fit_heads(cache, ["logreg"], metric="speed", quiet=True, reports_dir=tmp_path)
    with pytest.raises(PipelineError, match="class_weight"):
        fit_heads(cache, ["logreg"], class_weight="heavy", quiet=True, reports_dir=tmp_path)


def test_class_weight_reaches_heads_that_support_it(tmp_path):
    cache = make_cache(tmp_path / "c.h5")
    result = fit_heads(cache, ["logreg", "knn"], class_weight="balanced", jobs=1,
                       reports_dir=tmp_path / "r", quiet=True)
    params = {r.config.kind: r.config.params for r in result.runs}
    assert params["logreg"]["class_weight"] == "balanced"
    assert "class_weight" not in params["knn"]
