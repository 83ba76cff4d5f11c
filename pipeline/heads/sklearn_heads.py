"""scikit-learn heads: each is ``StandardScaler -> estimator`` in one ``Pipeline``.

The scaler is part of the fitted pipeline, so it only ever sees the rows the head is fitted
on (the training split, or train+validation when refitting) – never validation or test rows
during selection. ``class_weight="balanced"`` reweights classes inversely to their frequency;
estimators without a ``class_weight`` option get the same weights as ``sample_weight``, and
``knn`` (which has neither) does not declare the parameter.

Probabilities: SVMs have no native probabilities, so ``linear_svm`` and ``rbf_svm`` are
calibrated with a sigmoid (Platt) fitted by 3-fold cross-validation *inside the training rows*.
``linear_svm`` then refits one SVM on all of them (``ensemble=False``, so its coefficients can
be exported); ``rbf_svm`` averages the three fold models (``ensemble=True``, much faster).
A sweep ranking by labels or scores fits their grids without calibration (``calibrate=False``:
the bare SVM, :meth:`SklearnHead.ranking_scores`) and calibrates only the chosen one.

scikit-learn is imported where an estimator is built, not with this module: the registry
(needed for run labels by ``pipeline runs``) lists the kinds without loading it.
"""

from __future__ import annotations

import copy
import importlib
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.heads.params import P
from pipeline.heads.safe_store import load_estimator, save_estimator
from pipeline.heads.spec import Head, HeadSpec, full_proba
from pipeline.heads.threads import thread_budget

if TYPE_CHECKING:  # imported where estimators are built: listing the kinds stays fast
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import Pipeline

#: The scikit-learn modules the heads build estimators from, imported on first use.
ESTIMATOR_MODULES = ("sklearn.calibration", "sklearn.ensemble", "sklearn.exceptions",
                     "sklearn.kernel_approximation", "sklearn.linear_model",
                     "sklearn.model_selection", "sklearn.neighbors", "sklearn.neural_network",
                     "sklearn.pipeline", "sklearn.preprocessing", "sklearn.svm",
                     "sklearn.utils.class_weight")


def import_estimators() -> None:
    """Import :data:`ESTIMATOR_MODULES` now (a benchmark does, before it times a sweep)."""
    for name in ESTIMATOR_MODULES:
        importlib.import_module(name)


#: Training rows past which rbf_svm, knn and random_forest fit their scalable forms.
SCALE_ROWS = 5_000
#: Nystroem features approximating the RBF kernel in rbf_svm's scalable form.
NYSTROEM_COMPONENTS = 1_000
FORM = P("form", "str", "auto", "'exact', 'scalable', or 'auto' (scalable past "
         f"{SCALE_ROWS:,} training rows)", choices=("auto", "exact", "scalable"))
CLASS_WEIGHT = P("class_weight", "str", "none", "'balanced' reweights classes by inverse "
                 "frequency", choices=("none", "balanced"))


class SklearnHead(Head):
    """Base of the scikit-learn heads: subclasses only build the final estimator."""

    family = "sklearn"
    filename = "head.skops"
    #: Whether the estimator takes ``class_weight`` itself (else sample weights are passed).
    native_class_weight = True

    def __init__(self, kind: str, params: Mapping[str, Any], *, n_classes: int, seed: int = 0):
        super().__init__(kind, params, n_classes=n_classes, seed=seed)
        self.pipeline: Pipeline | None = None
        self.n_features: int | None = None

    def _class_weight(self) -> str | None:
        return "balanced" if self.params.get("class_weight") == "balanced" else None

    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        raise NotImplementedError

    def fit_rows(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows the estimator is fitted on (all of them; a scalable form may cap them)."""
        return x, y

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> SklearnHead:
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.utils.class_weight import compute_sample_weight

        x, y, est = self._start(x, y)
        self.pipeline = Pipeline([("scale", StandardScaler()), ("model", est)])
        fit_kw: dict[str, Any] = {}
        if self._class_weight() and not self.native_class_weight:
            fit_kw["model__sample_weight"] = compute_sample_weight("balanced", y)
        with _quiet_convergence():
            self.pipeline.fit(np.asarray(x, dtype=np.float32), y, **fit_kw)
        return self

    def _start(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, Any]:
        """Check the labels, resolve the form; the rows to fit and the unfitted estimator."""
        y = np.asarray(y, dtype=int)
        counts = np.bincount(y, minlength=self.n_classes)
        present = counts[counts > 0]
        if len(present) < 2:
            raise PipelineError(f"head {self.kind!r}: the training rows hold only one class")
        self.resolve_form(len(y))
        self.n_features = int(np.shape(x)[1])
        x, y = self.fit_rows(np.asarray(x), y)
        counts = np.bincount(y)
        return x, y, self.build_estimator(len(y), int(counts[counts > 0].min()))

    def _fitted(self) -> Pipeline:
        if self.pipeline is None:
            raise PipelineError(f"head {self.kind!r} is not fitted")
        return self.pipeline

    def _calibrated(self) -> Pipeline:
        if not self.calibrate:
            raise PipelineError(f"head {self.kind!r} was fitted for ranking only, without "
                                "its probability calibration; fit it with calibrate=True")
        return self._fitted()

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        pipe = self._calibrated()
        proba = pipe.predict_proba(np.asarray(x, dtype=np.float32))
        return full_proba(proba, pipe.classes_, self.n_classes)

    def ranking_scores(self, x: np.ndarray) -> np.ndarray:
        """Uncalibrated: a sigmoid (two classes) or softmax of the decision values, so the
        argmax is the model's prediction and ranks follow the decision values."""
        if self.calibrate:
            return self.predict_proba(x)
        pipe = self._fitted()
        z = np.asarray(pipe.decision_function(np.asarray(x, dtype=np.float64)), np.float64)
        z = np.stack([np.zeros_like(z), z], axis=1) if z.ndim == 1 else z
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return full_proba(z / z.sum(axis=1, keepdims=True), pipe.classes_, self.n_classes)

    def save(self, folder: Path) -> Path:
        """Writes ``head.skops`` (no pickle: see :mod:`pipeline.heads.safe_store`)."""
        return save_estimator(self._calibrated(), Path(folder) / self.filename)

    @classmethod
    def load(cls, path: Path, kind: str, params: Mapping[str, Any], *,
             n_classes: int) -> SklearnHead:
        """Reads a ``head.skops`` file, checking every type it names before building any;
        a pickle (``head.joblib`` of older versions) is refused, never unpickled."""
        path = Path(path)
        if path.suffix != ".skops":
            raise PipelineError(f"{path}: {kind!r} heads are stored as head.skops; a "
                                f"{path.suffix or 'suffix-less'} file is never loaded (pickles "
                                "can run code): refit the head with `pipeline fit-head`")
        from sklearn.pipeline import Pipeline

        head = cls(kind, params, n_classes=n_classes)
        head.pipeline = load_estimator(path)
        if not isinstance(head.pipeline, Pipeline):
            raise PipelineError(f"{path}: holds a {type(head.pipeline).__name__}, not a "
                                "fitted head pipeline")
        return head

    def export(self) -> dict[str, Any]:
        """The fitted ``pipeline`` plus the scaler's ``scaler_mean``/``scaler_scale``."""
        pipe = self._calibrated()
        scaler = pipe.named_steps["scale"]
        return dict(super().export(), pipeline=pipe, classes=pipe.classes_.tolist(),
                    scaler_mean=scaler.mean_, scaler_scale=scaler.scale_)


@contextmanager
def _quiet_convergence() -> Iterator[None]:
    """A block in which scikit-learn's ConvergenceWarning is not shown. Only in the main
    thread: ``catch_warnings`` swaps process-wide state, so threads opening it at once could
    leave a filter behind; a sweep's thread pool runs inside :func:`quiet_convergence`
    opened once by the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with quiet_convergence():
        yield


@contextmanager
def quiet_convergence() -> Iterator[None]:
    """``warnings.catch_warnings`` ignoring scikit-learn's ConvergenceWarning."""
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def fold_scaler(coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray,
                scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``coef @ ((x - mean) / scale) + intercept`` as ``W @ x + b`` on raw rows (float64).

    ``coef`` is ``(outputs, d)``; the StandardScaler in front of a linear map disappears into
    it. The one copy of this rule: the heads' export and the fine-tuning fold both use it.
    """
    coef = np.asarray(coef, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    w = coef / scale
    b = np.asarray(intercept, dtype=np.float64) - coef @ (np.asarray(mean, np.float64) / scale)
    return w, b


def stratified_sample(y: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sorted indices of about ``n`` rows of ``y``, each class keeping its share (at least one
    row), chosen with a generator seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    picked = []
    for c in np.unique(y):
        rows = np.flatnonzero(y == c)
        take = max(1, round(n * len(rows) / len(y)))
        picked.append(rng.choice(rows, size=min(take, len(rows)), replace=False))
    return np.sort(np.concatenate(picked))


class LinearHead(SklearnHead):
    """A linear model: exposes ``coef``/``intercept`` and a Keras-ready folded dense layer."""

    def _linear_model(self) -> Any:
        return self._fitted().named_steps["model"]

    def export(self) -> dict[str, Any]:
        model = self._linear_model()
        kernel, bias = self.dense_weights()
        return dict(super().export(), coef=np.asarray(model.coef_),
                    intercept=np.asarray(model.intercept_), dense_kernel=kernel, dense_bias=bias,
                    layer_form="linear")

    def dense_weights(self) -> tuple[np.ndarray, np.ndarray]:
        """``(kernel (d, n_classes), bias (n_classes,))`` of a ``Dense(n_classes)`` on the raw
        (unscaled) features whose logits equal this model's decision function, the scaler folded
        in. For two classes the logits are ``[0, z]`` so that softmax gives ``sigmoid(z)``.
        """
        pipe = self._fitted()
        if list(pipe.classes_) != list(range(self.n_classes)):
            raise PipelineError(f"head {self.kind!r} was fitted without every class; "
                                "its weights cannot be mapped onto a dense layer")
        scaler = pipe.named_steps["scale"]
        model = self._linear_model()
        w, b = fold_scaler(model.coef_, np.reshape(model.intercept_, -1), scaler.mean_,
                           scaler.scale_)
        if w.shape[0] == 1:  # binary: one logit for class 1
            w = np.vstack([np.zeros_like(w), w])
            b = np.concatenate([[0.0], b])
        return w.T.astype(np.float32), b.astype(np.float32)


class LogRegHead(LinearHead):
    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.linear_model import LogisticRegression

        return LogisticRegression(C=self.params["C"], max_iter=self.params["max_iter"],
                                  class_weight=self._class_weight(), random_state=self.seed)

    #: Set by :meth:`fit_path` for the next :meth:`fit`: the scaler fitted on these rows, the
    #: rows it scaled, the estimator of the previous ``C`` (or ``None``).
    _path_start: tuple[Any, np.ndarray, Any] | None = None

    @classmethod
    def fit_path(cls, heads: Sequence[Head], x: np.ndarray, y: np.ndarray,
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None
                 ) -> list[float]:
        """The regularisation path: the rows standardised once (one scaler, as each head's
        own would be: the rows are the same), then each ``C`` in ascending order starting
        from the solution of the previous one (L-BFGS warm start; the objective is strictly
        convex, so each fit reaches its own optimum, in fewer iterations). Each head keeps its
        own copy of the scaler in its pipeline."""
        from sklearn.preprocessing import StandardScaler

        t0 = time.perf_counter()
        x32 = np.asarray(x, dtype=np.float32)
        scaler = StandardScaler().fit(x32)
        xs = scaler.transform(x32)
        seconds = dict.fromkeys(range(len(heads)), 0.0)
        seconds[0] = time.perf_counter() - t0
        previous = None
        for i in sorted(range(len(heads)), key=lambda i: heads[i].params["C"]):
            head = heads[i]
            assert isinstance(head, LogRegHead)
            t0 = time.perf_counter()
            head._path_start = (scaler, xs, previous)
            head.fit(x32, y, x_val, y_val)
            previous = head.pipeline.named_steps["model"] if head.pipeline else None
            seconds[i] += time.perf_counter() - t0
        return list(seconds.values())

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> LogRegHead:
        """Alone: :meth:`SklearnHead.fit`. On a path (:meth:`fit_path`): the shared scaler,
        and the L-BFGS iterations start from the previous ``C``'s solution."""
        start, self._path_start = self._path_start, None
        if start is None:
            super().fit(x, y, x_val, y_val)
            return self
        from sklearn.pipeline import Pipeline

        scaler, xs, previous = start
        _, y, est = self._start(x, y)
        if previous is not None:
            est.set_params(warm_start=True)
            est.coef_, est.intercept_ = previous.coef_.copy(), previous.intercept_.copy()
        with _quiet_convergence():
            est.fit(xs, y)
        est.set_params(warm_start=False)  # what it saves is the plain estimator
        self.pipeline = Pipeline([("scale", copy.deepcopy(scaler)), ("model", est)])
        return self


def _calibration_folds(kind: str, min_class_count: int, seed: int) -> StratifiedKFold:
    """Shuffled stratified folds: datasets often come ordered (ELPV by module type), and
    unshuffled folds then calibrate each model on a different population than it was fitted
    on, which squashes the probabilities towards the prior."""
    if min_class_count < 2:
        raise PipelineError(f"head {kind!r}: every class needs at least 2 training rows to "
                            "calibrate probabilities")
    from sklearn.model_selection import StratifiedKFold

    return StratifiedKFold(min(3, min_class_count), shuffle=True, random_state=seed)


class LinearSVMHead(LinearHead):
    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.svm import LinearSVC

        svm = LinearSVC(C=self.params["C"], class_weight=self._class_weight(),
                        max_iter=self.params["max_iter"], random_state=self.seed)
        folds = _calibration_folds(self.kind, min_class_count, self.seed)
        if not self.calibrate:  # ranking only: the SVM the calibrated head refits on all rows
            return svm
        return CalibratedClassifierCV(svm, method="sigmoid", ensemble=False, cv=folds)

    def _linear_model(self) -> Any:
        return self._fitted().named_steps["model"].calibrated_classifiers_[0].estimator

    def export(self) -> dict[str, Any]:
        """Adds the Platt calibration (``calibration_a``/``_b``, one per one-vs-rest score)."""
        cal = self._fitted().named_steps["model"].calibrated_classifiers_[0]
        return dict(super().export(),
                    calibration_a=np.array([c.a_ for c in cal.calibrators]),
                    calibration_b=np.array([c.b_ for c in cal.calibrators]))


class RBFSVMHead(SklearnHead):
    """Exact: calibrated ``SVC(rbf)``. Scalable (``form``): the RBF kernel approximated by
    :data:`NYSTROEM_COMPONENTS` Nystroem features of the same gamma, then a logistic
    regression of the same ``C`` (fit cost linear in the rows; probabilities native)."""

    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.calibration import CalibratedClassifierCV
        from sklearn.kernel_approximation import Nystroem
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.svm import SVC

        if self.params.get("form") == "scalable":
            gamma = self.params["gamma"]
            if isinstance(gamma, str):  # "scale" and "auto" are 1 / d on standardised rows
                gamma = 1.0 / max(1, self.n_features)
            return Pipeline([
                ("nystroem", Nystroem(kernel="rbf", gamma=float(gamma),
                                      n_components=min(NYSTROEM_COMPONENTS, n_train),
                                      random_state=self.seed)),
                ("linear", LogisticRegression(C=self.params["C"], max_iter=1000,
                                              class_weight=self._class_weight(),
                                              random_state=self.seed))])
        svm = SVC(C=self.params["C"], gamma=self.params["gamma"], kernel="rbf", cache_size=500,
                  class_weight=self._class_weight(), random_state=self.seed)
        folds = _calibration_folds(self.kind, min_class_count, self.seed)
        if not self.calibrate:  # ranking only: one SVM on all the rows, no calibration folds
            return svm
        # ensemble=True: three SVMs on 2/3 of the rows each, averaged – about 4x cheaper than
        # calibrating by cross-validation and then refitting on everything (SVC is ~O(n^2)).
        return CalibratedClassifierCV(svm, method="sigmoid", ensemble=True, cv=folds)

    @classmethod
    def fit_path(cls, heads: Sequence[Head], x: np.ndarray, y: np.ndarray,
                 x_val: np.ndarray | None = None, y_val: np.ndarray | None = None
                 ) -> list[float]:
        """Ranking fits (``calibrate=False``) of the exact form share one kernel matrix: the
        RBF kernel of the standardised training rows, computed once with BLAS, is handed to
        ``SVC(kernel="precomputed")`` for each ``C``. The same problem (decision values
        agree to ~1e-13), without libsvm evaluating every kernel entry again in each fit.
        Calibrated fits and the scalable form fit one by one."""
        x32 = np.asarray(x, dtype=np.float32)
        if any(h.calibrate for h in heads):
            return super().fit_path(heads, x32, y, x_val, y_val)
        t0 = time.perf_counter()
        first = heads[0]
        assert isinstance(first, RBFSVMHead)
        first._start(x32, y)  # resolves the form
        if first.params.get("form") != "exact":
            return super().fit_path(heads, x32, y, x_val, y_val)
        from sklearn.metrics.pairwise import rbf_kernel
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import FunctionTransformer, StandardScaler
        from sklearn.svm import SVC

        scaler = StandardScaler().fit(x32)
        xs = scaler.transform(x32).astype(np.float64)  # as SVC converts its rows
        gamma = _rbf_gamma(first.params["gamma"], xs)
        kernel = rbf_kernel(xs, xs, gamma=gamma)
        to_kernel = FunctionTransformer(rbf_kernel, kw_args={"Y": xs, "gamma": gamma}).fit(xs)
        seconds = [time.perf_counter() - t0] + [0.0] * (len(heads) - 1)
        for i, head in enumerate(heads):
            t0 = time.perf_counter()
            assert isinstance(head, RBFSVMHead)
            _, yy, _ = head._start(x32, y)
            svm = SVC(C=head.params["C"], kernel="precomputed", cache_size=500,
                      class_weight=head._class_weight(), random_state=head.seed)
            svm.fit(kernel, yy)
            head.pipeline = Pipeline([("scale", copy.deepcopy(scaler)), ("kernel", to_kernel),
                                      ("model", svm)])
            seconds[i] += time.perf_counter() - t0
        return seconds


def _rbf_gamma(gamma: float | str, xs: np.ndarray) -> float:
    """The kernel width ``SVC`` uses for ``gamma`` on rows ``xs`` ("scale": 1 / (d var),
    "auto": 1 / d)."""
    if gamma == "scale":
        var = float(xs.var())
        return 1.0 / (xs.shape[1] * var) if var != 0 else 1.0
    if gamma == "auto":
        return 1.0 / xs.shape[1]
    return float(gamma)


class KNNHead(SklearnHead):
    """Scalable (``form``): the reference set is a stratified, seeded sample of
    :attr:`scale_threshold` training rows (each class keeps its share, at least one row)."""

    def fit_rows(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cap = self.scale_threshold
        if self.params.get("form") != "scalable" or cap is None or len(y) <= cap:
            return x, y
        keep = stratified_sample(y, cap, self.seed)
        return x[keep], y[keep]

    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        k = self.params["n_neighbors"]
        if k > n_train:
            raise PipelineError(f"head 'knn': n_neighbors={k} exceeds the {n_train} training rows")
        from sklearn.neighbors import KNeighborsClassifier

        return KNeighborsClassifier(n_neighbors=k, weights=self.params["weights"])


class RandomForestHead(SklearnHead):
    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.ensemble import RandomForestClassifier

        # n_jobs: this process's share of the cores (a sweep worker's budget, else all).
        # Scalable (form): each tree grows on a bootstrap of scale_threshold rows, not n.
        cap = self.scale_threshold if self.params.get("form") == "scalable" else None
        return RandomForestClassifier(
            n_estimators=self.params["n_estimators"], max_depth=self.params["max_depth"],
            min_samples_leaf=self.params["min_samples_leaf"],
            max_features=self.params["max_features"],
            class_weight=self._class_weight(), random_state=self.seed,
            max_samples=cap if cap is not None and cap < n_train else None,
            n_jobs=thread_budget())


class GradientBoostingHead(SklearnHead):
    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier(
            learning_rate=self.params["learning_rate"], max_iter=self.params["max_iter"],
            max_depth=self.params["max_depth"], class_weight=self._class_weight(),
            random_state=self.seed)


class MLPHead(SklearnHead):
    native_class_weight = False

    def build_estimator(self, n_train: int, min_class_count: int) -> Any:
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(
            hidden_layer_sizes=self.params["hidden_layer_sizes"], alpha=self.params["alpha"],
            learning_rate_init=self.params["learning_rate"], max_iter=self.params["max_iter"],
            early_stopping=n_train >= 50, random_state=self.seed)

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> MLPHead:
        super().fit(x, y)
        model = self._fitted().named_steps["model"]
        self.history = {"loss": [float(v) for v in model.loss_curve_]}
        if getattr(model, "validation_scores_", None) is not None:
            self.history["val_accuracy"] = [float(v) for v in model.validation_scores_]
        return self

    def export(self) -> dict[str, Any]:
        """The scaler and the ReLU network (``pipeline``): folded into Dense layers."""
        return dict(super().export(), layer_form="relu_mlp")


_C = dict(minimum=0, exclusive_minimum=True)
#: Exactly Keras layers (the scaler folded in), so fine-tuning can start from them.
_LAYERS = dict(layers=True, finetunable=True, export_formats=("keras", "onnx"))
#: Exactly Keras layers for export only (kernels against stored rows; no training through).
_KERNEL = dict(export_formats=("keras", "onnx"))

#: The scikit-learn kinds, in listing order.
SPECS: tuple[HeadSpec, ...] = (
    HeadSpec(
        "logreg", "L2-regularised logistic regression (smaller C = stronger regularisation)",
        LogRegHead, (P("C", "float", 1.0, "inverse regularisation strength", **_C),
                     P("max_iter", "int", 1000, "solver iterations", minimum=1), CLASS_WEIGHT),
        family="sklearn", memory="chunks", path_param="C", **_LAYERS),
    HeadSpec(
        "linear_svm", "linear SVM (LinearSVC) with Platt-calibrated probabilities",
        LinearSVMHead, (P("C", "float", 1.0, "inverse regularisation strength", **_C),
                        P("max_iter", "int", 2000, "solver iterations", minimum=1),
                        CLASS_WEIGHT),
        family="sklearn", memory="chunks", calibrated=True, **_LAYERS),
    HeadSpec(
        "rbf_svm", "RBF-kernel SVM with Platt-calibrated probabilities",
        RBFSVMHead, (P("C", "float", 1.0, "inverse regularisation strength", **_C),
                     P("gamma", "float_or_str", "scale", "kernel width",
                       choices=("scale", "auto"), **_C), CLASS_WEIGHT, FORM),
        family="sklearn", scaling="superlinear", calibrated=True, path_param="C", **_KERNEL,
        scaling_note="kernel SVM: fit time grows about as n^1.7, times 3 calibration folds",
        scale_threshold=SCALE_ROWS,
        scalable_form=f"{NYSTROEM_COMPONENTS} Nystroem RBF features + logistic regression"),
    HeadSpec(
        "knn", "k-nearest neighbours on standardised features",
        KNNHead, (P("n_neighbors", "int", 5, "neighbours that vote", minimum=1),
                  P("weights", "str", "uniform", "vote weighting",
                    choices=("uniform", "distance")), FORM),
        family="sklearn", scaling="superlinear", **_KERNEL,
        scaling_note="each predicted row is compared with every training row",
        scale_threshold=SCALE_ROWS,
        scalable_form=f"a stratified sample of {SCALE_ROWS:,} reference rows"),
    HeadSpec(
        "random_forest", "random forest of decision trees",
        RandomForestHead, (P("n_estimators", "int", 200, "number of trees", minimum=1),
                           P("max_depth", "int", None, "tree depth limit", minimum=1,
                             nullable=True),
                           P("min_samples_leaf", "int", 1, "rows per leaf", minimum=1),
                           P("max_features", "str", "sqrt", "features tried per split: sqrt "
                             "or log2 of the feature count (log2: fewer, faster trees)",
                             choices=("sqrt", "log2")),
                           CLASS_WEIGHT, FORM),
        family="sklearn", scaling="superlinear",
        scaling_note="each tree sorts its rows at every split (about n log n per tree)",
        scale_threshold=SCALE_ROWS,
        scalable_form=f"each tree on a bootstrap of {SCALE_ROWS:,} rows (max_samples)"),
    HeadSpec(
        "gradient_boosting", "histogram gradient boosting (HistGradientBoostingClassifier)",
        GradientBoostingHead, (P("learning_rate", "float", 0.1, "shrinkage", **_C),
                               P("max_iter", "int", 100, "boosting rounds", minimum=1),
                               P("max_depth", "int", None, "tree depth limit", minimum=1,
                                 nullable=True), CLASS_WEIGHT),
        family="sklearn", scaling="superlinear",
        scaling_note="every boosting round grows trees over all rows; deeper trees as n grows"),
    HeadSpec(
        "mlp", "scikit-learn multi-layer perceptron (adam, early stopping on 10% of train)",
        MLPHead, (P("hidden_layer_sizes", "int_tuple", (256,), "layer sizes, e.g. 256x128"),
                  P("alpha", "float", 1e-4, "L2 penalty", minimum=0),
                  P("learning_rate", "float", 1e-3, "adam step size", **_C),
                  P("max_iter", "int", 200, "epochs at most", minimum=1), CLASS_WEIGHT),
        family="sklearn", **_LAYERS),
)
