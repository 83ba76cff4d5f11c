"""Fitted scikit-learn heads saved and loaded without pickle, so loading runs no code.

A joblib/pickle file runs whatever its ``__reduce__`` says when it is loaded, and a run folder
can come from anyone. Heads are therefore stored in ``skops``' format (a zip of a JSON schema
and ``.npy`` arrays) and loaded only after every type the schema names has been checked against
:data:`ALLOWED_TYPES`, the types our head kinds are made of. skops trusts every scikit-learn
estimator by default; the list here is narrower and explicit. A file naming anything else (a
custom class, ``posix.system``) is refused with one line before skops builds a single object.

The lists were found by dumping every ``sklearn`` head kind (binary and 3-class, few and many
features, class weights on and off, both kNN weightings) and reading every type and loader its
schema names; tests/test_safe_store.py re-checks them for every registered kind.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fileio import atomic_write_bytes

#: Every type (``module.Class`` as skops writes it) a stored head may contain.
ALLOWED_TYPES: frozenset[str] = frozenset({
    # containers and values
    "builtins.dict", "builtins.list", "builtins.tuple", "builtins.str", "builtins.int",
    "builtins.float", "builtins.bool",
    "numpy.ndarray", "numpy.float64", "numpy.float32", "numpy.int64", "numpy.int32",
    "numpy.uint64", "numpy.bool_",
    "numpy.random._generator.Generator", "numpy.random.mtrand.RandomState",
    # the pipeline and its scaler
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._label.LabelBinarizer",
    "sklearn.preprocessing._label.LabelEncoder",
    # logreg, linear_svm, rbf_svm
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.kernel_approximation.Nystroem",  # rbf_svm's scalable form
    "sklearn.svm._classes.LinearSVC",
    "sklearn.svm._classes.SVC",
    "sklearn.calibration.CalibratedClassifierCV",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.model_selection._split.StratifiedKFold",
    # knn (the tree index it builds on few features, and its metric)
    "sklearn.neighbors._classification.KNeighborsClassifier",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    # random_forest
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    # gradient_boosting (HistGradientBoostingClassifier) with its loss, link and binning
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn._loss.loss.HalfBinomialLoss", "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn._loss._loss.CyHalfBinomialLoss", "sklearn._loss._loss.CyHalfMultinomialLoss",
    "sklearn._loss.link.Interval", "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    # mlp
    "sklearn.neural_network._multilayer_perceptron.MLPClassifier",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
})

#: skops node kinds our heads use. Functions, methods, ``functools.partial`` and operator
#: nodes are left out: no head needs them, and they are how a file would reach callables.
ALLOWED_LOADERS: frozenset[str] = frozenset({
    "DictNode", "JsonNode", "ListNode", "TupleNode", "NdArrayNode", "ObjectNode", "TypeNode",
    "TreeNode", "LossNode", "RandomStateNode", "RandomGeneratorNode",
})


def save_estimator(estimator: Any, path: str | Path) -> Path:
    """Write ``estimator`` (a fitted Pipeline) to ``path`` in skops' format, atomically.

    Refuses to write what :func:`load_estimator` would refuse to read.
    """
    import skops.io  # here, not at load: skops imports pandas (`pipeline runs` starts fast)

    path = Path(path)
    data = skops.io.dumps(estimator, compression=zipfile.ZIP_DEFLATED)
    _audit(data, f"the {type(estimator).__name__} to save to {path.name}")
    return atomic_write_bytes(path, data)


def load_estimator(path: str | Path) -> Any:
    """The estimator stored at ``path`` by :func:`save_estimator`.

    Raises :class:`PipelineError` (one line) for a file that is not a skops file (a joblib or
    pickle file is never unpickled) or that names a type outside :data:`ALLOWED_TYPES`.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PipelineError(f"cannot read the head file {path}: {e.strerror}") from None
    trusted = _audit(data, f"the head file {path}")
    import skops.io

    return skops.io.loads(data, trusted=trusted)


def _audit(data: bytes, what: str) -> list[str]:
    """Checks the schema of a skops file; returns the types to pass to skops as trusted."""
    schema = _schema(data, what)
    types: set[str] = set()
    loaders: set[str] = set()
    _collect(schema, types, loaders)
    bad_loaders = sorted(loaders - ALLOWED_LOADERS)
    if bad_loaders:
        raise PipelineError(f"{what} holds a {bad_loaders[0]} entry, which no head needs; "
                            "refused without loading it")
    _refuse_outside(types, what)
    # skops' own audit, a second check: it knows node kinds whose types this walk may miss.
    import skops.io

    untrusted = set(skops.io.get_untrusted_types(data=data))
    _refuse_outside(untrusted, what)
    return sorted(untrusted)


def _refuse_outside(types: set[str], what: str) -> None:
    bad = sorted(types - ALLOWED_TYPES)
    if bad:
        raise PipelineError(f"{what} holds the type {bad[0]!r}, which is not one of the "
                            "types a head is made of; refused without loading it")


def _schema(data: bytes, what: str) -> Any:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        hint = " (it looks like a pickle/joblib file)" if data[:1] == b"\x80" else ""
        raise PipelineError(f"{what} is not a skops file{hint}; pickles are never loaded, "
                            "refit the head to store it safely")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return json.loads(archive.read("schema.json"))
    except (KeyError, ValueError, zipfile.BadZipFile) as e:
        raise PipelineError(f"{what} is not a readable skops file ({e})") from None


def _collect(node: Any, types: set[str], loaders: set[str]) -> None:
    """Every ``module.Class`` and every ``__loader__`` named anywhere in a skops schema."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "__module__" in item or "__class__" in item:
                types.add(f"{item.get('__module__')}.{item.get('__class__')}")
            if "__loader__" in item:
                loaders.add(str(item["__loader__"]))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
