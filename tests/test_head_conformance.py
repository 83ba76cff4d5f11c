"""Every registered head kind honours the head contract, in the spirit of scikit-learn's
``parametrize_with_checks``.

The cases are generated from :func:`pipeline.heads.list_heads` at collection time, so a kind
added to the registry is checked without being named here. :func:`checks_for` picks the checks
that apply to a kind from its declared capabilities (as scikit-learn does from estimator tags):
a ``finetunable`` kind must fold into Keras layers that compute its probabilities (any other
kind is refused by the fine-tuning fold); a kind with "keras" in ``export_formats`` must
export to such layers (any other kind is refused by the export fold, naming its formats).
Parameters that set the amount of work (epochs, trees, iterations, widths) are turned down so
the suite stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.finetune.fold import fold_head
from pipeline.heads import (
    Head,
    HeadSpec,
    export_kinds,
    finetunable_kinds,
    get_head_spec,
    layer_kinds,
    list_heads,
    make_head,
)
from pipeline.heads.spec import EXPORT_FORMATS, SCALINGS
from pipeline.runs.store import LoadedHead

#: Small values for the parameters that set how much work a fit does (by parameter name).
CHEAP = {"epochs": 5, "n_estimators": 10, "max_iter": 50, "units": 16,
         "hidden_layer_sizes": (16,)}
N_FEATURES = 6


def cheap_params(spec: HeadSpec) -> dict:
    return {p.name: CHEAP[p.name] for p in spec.params if p.name in CHEAP}


def new_head(spec: HeadSpec, n_classes: int, seed: int = 0) -> Head:
    return make_head(spec.kind, cheap_params(spec), n_classes=n_classes, seed=seed)


def blobs(k: int, n: int = 60, seed: int = 0, classes: tuple[int, ...] | None = None
          ) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled Gaussian blobs, one per class in ``classes`` (default: all ``k``)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (k, N_FEATURES))
    labels = np.asarray(classes if classes is not None else range(k))
    y = labels[np.arange(n) % len(labels)]
    rng.shuffle(y)
    x = (centres[y] + rng.normal(size=(n, N_FEATURES))) * 4 + 3
    return x.astype(np.float32), y


def assert_distribution(proba: np.ndarray, n: int, k: int) -> None:
    assert proba.shape == (n, k)
    assert np.isfinite(proba).all() and (proba >= 0).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)


# -- the checks ------------------------------------------------------------------------------

def check_fit_predict_proba_and_predict(spec: HeadSpec, tmp_path: Path) -> None:
    """fit returns the head; predict_proba is a distribution over every class; predict is its
    argmax; for two and three classes."""
    for k in (2, 3):
        x, y = blobs(k)
        x_test, _ = blobs(k, n=20, seed=1)
        head = new_head(spec, k)
        assert head.fit(x, y) is head
        proba = head.predict_proba(x_test)
        assert_distribution(proba, len(x_test), k)
        np.testing.assert_array_equal(head.predict(x_test), np.argmax(proba, axis=1))


def check_training_rows_missing_a_class(spec: HeadSpec, tmp_path: Path) -> None:
    """A class absent from the training rows still gets its column of ``n_classes`` (scikit-learn
    models spread their columns with ``full_proba``)."""
    x, y = blobs(3, classes=(0, 2))
    head = new_head(spec, 3).fit(x, y)
    assert_distribution(head.predict_proba(x[:10]), 10, 3)


def check_save_load_round_trip(spec: HeadSpec, tmp_path: Path) -> None:
    x, y = blobs(3)
    head = new_head(spec, 3).fit(x, y)
    path = head.save(tmp_path)
    assert path.is_file() and path.parent == tmp_path and path.name == spec.cls.filename
    again = spec.cls.load(path, spec.kind, head.params, n_classes=3)
    np.testing.assert_allclose(again.predict_proba(x), head.predict_proba(x), atol=1e-6)


def check_parameters_are_validated(spec: HeadSpec, tmp_path: Path) -> None:
    """An unknown name, a value of the wrong type for any declared parameter and fewer than
    two classes are one-line PipelineErrors, raised before anything is fitted."""
    with pytest.raises(PipelineError, match="has no parameter 'no_such_param'"):
        make_head(spec.kind, {"no_such_param": 1}, n_classes=2)
    for p in spec.params:
        with pytest.raises(PipelineError, match=f"parameter {p.name}=") as e:
            make_head(spec.kind, {p.name: {"not": "a value"}}, n_classes=2)
        assert "\n" not in str(e.value)
    with pytest.raises(PipelineError, match="at least 2 classes"):
        make_head(spec.kind, n_classes=1)


def check_same_seed_same_predictions(spec: HeadSpec, tmp_path: Path) -> None:
    x, y = blobs(3)
    a = new_head(spec, 3, seed=7).fit(x, y).predict_proba(x)
    b = new_head(spec, 3, seed=7).fit(x, y).predict_proba(x)
    np.testing.assert_allclose(a, b, atol=1e-6)


def check_capabilities_are_consistent(spec: HeadSpec, tmp_path: Path) -> None:
    assert spec.scaling in SCALINGS
    assert spec.features in ("pooled", "flattened", "any")
    assert spec.family == spec.cls.family
    assert spec.layers or not spec.finetunable  # fine-tuning stacks the folded layers
    assert (spec.kind in layer_kinds()) == spec.layers
    assert (spec.kind in finetunable_kinds()) == spec.finetunable
    assert "onnx" in spec.export_formats  # ONNX carries every kind
    assert set(spec.export_formats) <= set(EXPORT_FORMATS)
    assert not spec.finetunable or "keras" in spec.export_formats
    for fmt in EXPORT_FORMATS:
        assert (spec.kind in export_kinds(fmt)) == (fmt in spec.export_formats)
    assert get_head_spec(spec.kind) is spec


def _loaded(head: Head) -> LoadedHead:
    return LoadedHead(run_dir=Path("."), head=head,
                      class_names=[f"c{i}" for i in range(head.n_classes)],
                      config={"cache": {"feature_shape": [N_FEATURES]}})


def _assert_layers_equal(spec: HeadSpec, purpose: str, atol: float) -> None:
    """The fold for ``purpose`` rebuilds the fitted head as Keras layers whose softmax equals
    predict_proba on a few rows (two and three classes)."""
    for k in (2, 3):
        x, y = blobs(k)
        head = new_head(spec, k).fit(x, y)
        folded = fold_head(_loaded(head), N_FEATURES, purpose)
        inp = keras.Input((N_FEATURES,))
        model = keras.Model(inp, keras.layers.Softmax()(folded(inp)))
        np.testing.assert_allclose(model.predict(x[:8], verbose=0), head.predict_proba(x[:8]),
                                   atol=atol)


def check_folds_into_equal_layers(spec: HeadSpec, tmp_path: Path) -> None:
    """``finetunable``: the fine-tuning fold gives layers equal to predict_proba."""
    _assert_layers_equal(spec, "finetune", 1e-5)


def check_fold_refuses(spec: HeadSpec, tmp_path: Path) -> None:
    """Not ``finetunable``: the fine-tuning fold refuses the head with a message naming the
    request (fine-tuning) and the kinds that can be fine-tuned instead."""
    x, y = blobs(2)
    head = new_head(spec, 2).fit(x, y)
    with pytest.raises(PipelineError, match="cannot be fine-tuned") as e:
        fold_head(_loaded(head), N_FEATURES, "finetune")
    assert ", ".join(finetunable_kinds()) in str(e.value)
    assert "export" not in str(e.value)


def check_exports_to_equal_layers(spec: HeadSpec, tmp_path: Path) -> None:
    """"keras" in ``export_formats``: the export fold gives layers equal to predict_proba
    (float32 kernels against stored rows: within 1e-4)."""
    _assert_layers_equal(spec, "export", 1e-4)


def check_keras_export_refuses(spec: HeadSpec, tmp_path: Path) -> None:
    """No "keras" in ``export_formats``: the export fold refuses, naming the request
    (exporting) and the formats the kind can be exported in."""
    x, y = blobs(2)
    head = new_head(spec, 2).fit(x, y)
    with pytest.raises(PipelineError, match="cannot be exported as Keras layers") as e:
        fold_head(_loaded(head), N_FEATURES, "export")
    assert "--format onnx" in str(e.value) and "fine-tun" not in str(e.value)


Check = Callable[[HeadSpec, Path], None]
COMMON_CHECKS: tuple[Check, ...] = (
    check_fit_predict_proba_and_predict, check_training_rows_missing_a_class,
    check_save_load_round_trip, check_parameters_are_validated,
    check_same_seed_same_predictions, check_capabilities_are_consistent,
)


def checks_for(spec: HeadSpec) -> Iterator[Check]:
    """The checks that apply to a kind, chosen by its declared capabilities."""
    yield from COMMON_CHECKS
    yield check_folds_into_equal_layers if spec.finetunable else check_fold_refuses
    yield (check_exports_to_equal_layers if "keras" in spec.export_formats
           else check_keras_export_refuses)


CASES = [pytest.param(spec.kind, check, id=f"{spec.kind}-{check.__name__[len('check_'):]}")
         for spec in list_heads() for check in checks_for(spec)]


@pytest.mark.parametrize("kind, check", CASES)
def test_head_kind_conforms(kind: str, check: Check, tmp_path: Path) -> None:
    check(get_head_spec(kind), tmp_path)


def test_every_registered_kind_is_checked():
    """Guards the parametrisation: every kind of the registry has cases, folding ones fold."""
    kinds = {spec.kind for spec in list_heads()}
    assert kinds == {kind for kind, _ in (c.values for c in CASES)}
    assert len(kinds) >= 9
    folds = {kind for kind, check in (c.values for c in CASES)
             if check is check_folds_into_equal_layers}
    assert folds == set(finetunable_kinds())
    exports = {kind for kind, check in (c.values for c in CASES)
               if check is check_exports_to_equal_layers}
    assert exports == set(export_kinds("keras"))


def test_capabilities_are_what_the_specs_declare():
    """Which kinds fold and fine-tune is declared on the specs, nowhere else."""
    assert layer_kinds() == ["dense", "dense_mlp", "logreg", "linear_svm", "mlp"]
    assert finetunable_kinds() == layer_kinds()
    assert export_kinds("keras") == [*layer_kinds()[:4], "rbf_svm", "knn", "mlp"]
    assert export_kinds("onnx") == [s.kind for s in list_heads()]
    assert {s.kind for s in list_heads() if s.scaling == "superlinear"} == {
        "rbf_svm", "knn", "random_forest", "gradient_boosting"}
