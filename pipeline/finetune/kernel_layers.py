"""An RBF SVM or k-NN head as Keras layers that compute its ``predict_proba``.

Unlike the linear heads of :mod:`~pipeline.finetune.fold`, these heads are no chain of dense
layers, so each becomes one small functional ``keras.Model`` (used as a layer) built only from
built-in layers and ``keras.ops``: a ``.keras`` file holding it loads with plain
``keras.models.load_model`` (safe mode on) in a process that never imports this package.

It maps flat *raw* feature rows (the scaler is inside) to the head's class probabilities, or,
with ``output="log_proba"`` (the default, so that it slots into :class:`FoldedHead`, whose
caller adds the softmax), to their logarithms clipped at the smallest normal float32:
``softmax(log p) = p`` because the probabilities sum to one. Everything runs in float32.

* ``rbf_svm`` is ``CalibratedClassifierCV(SVC(rbf), method="sigmoid", ensemble=True)``. For
  each calibrated member: the RBF kernel against its support vectors (with its own fitted
  ``_gamma``: "scale" depends on the fold's rows), ``exp(2g x.s - g|s|^2 - g|x|^2)``; its
  dual coefficients and intercepts give the one-vs-one decisions. Two classes: the one score
  (class 1 positive), Platt's ``sigmoid(-(a z + b))``, ``[1 - p, p]``. More classes: SVC's
  default ``decision_function_shape="ovr"`` (what the calibrators were fitted on): votes
  ``[d_ij >= 0]`` plus the confidence sums ``s / (3 (|s| + 1))``, one Platt sigmoid per class,
  ``p_k / sum p`` (uniform if the sum is 0). The members' probabilities are averaged.
* ``rbf_svm``'s scalable form (past its row threshold) is ``Nystroem(rbf) ->
  LogisticRegression``: the same RBF kernel against the Nystroem components, a fixed ``Dense``
  (the normalisation), the logistic regression's ``Dense`` and a softmax.
* ``knn`` is ``KNeighborsClassifier`` (Euclidean). The scaled training rows live in one
  ``Embedding`` table (the training rows travel inside the model, hence
  :data:`KNN_MAX_ROWS_X_FEATURES`); the k nearest are found with ``keras.ops.top_k`` on
  ``2 x.t - |t|^2`` (the negative squared distance up to a per-row constant), then their exact
  distances are recomputed from the gathered rows (no cancellation: a duplicate of a training
  row is at distance 0 exactly). ``weights="uniform"`` counts the labels / k; ``"distance"``
  weighs by ``1 / d``, and a row at distance 0 of some training rows gets weight 1 for those
  and 0 for the rest, as scikit-learn does. Equal distances may order differently from
  scikit-learn, which changes the vote only when the k-th and (k+1)-th neighbours tie.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops
from sklearn.calibration import CalibratedClassifierCV
from sklearn.kernel_approximation import Nystroem
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from pipeline.errors import PipelineError
from pipeline.finetune.folded import FoldedHead

#: Training rows x features a k-NN export may hold (200 MB of float32): every training row
#: is stored inside the exported model and scanned for every prediction.
KNN_MAX_ROWS_X_FEATURES = 50_000_000
OUTPUTS = ("log_proba", "proba")
KERNEL_KINDS = ("rbf_svm", "knn")
# The smallest normal float32: log-probabilities stay finite (log(0) would be -inf).
_TINY = float(np.finfo(np.float32).tiny)


def kernel_head(kind: str, pipeline: Pipeline, n_classes: int, *,
                output: str = "log_proba") -> FoldedHead:
    """Layers for a fitted ``rbf_svm`` or ``knn`` head's scikit-learn pipeline."""
    if kind == "rbf_svm":
        return rbf_svm_layers(pipeline, n_classes, output=output)
    if kind == "knn":
        return knn_layers(pipeline, n_classes, output=output)
    raise PipelineError(f"expected a head kind with kernel layers ({', '.join(KERNEL_KINDS)}), "
                        f"got {kind!r}")


# ----------------------------------------------------------------------------- rbf_svm


def rbf_svm_layers(pipeline: Pipeline, n_classes: int, *,
                   output: str = "log_proba") -> FoldedHead:
    """One layer (a functional sub-model) computing an ``rbf_svm`` head's probabilities."""
    if isinstance(pipeline.named_steps.get("model"), Pipeline):
        return nystroem_layers(pipeline, n_classes, output=output)
    scaler, model = _steps(pipeline, "rbf_svm", CalibratedClassifierCV)
    classes = np.asarray(model.classes_)
    members = [_svm_member(cal, classes) for cal in model.calibrated_classifiers_]
    inp = keras.Input((int(scaler.n_features_in_),), name="features")
    kernel = _rbf_kernel(_standardise(scaler, "rbf_svm")(inp), members)
    if len(classes) == 2:
        proba = _binary_svm_proba(kernel, members)
    else:
        proba = _multiclass_svm_proba(kernel, members, len(classes))
    model_out = _finish(proba, classes, n_classes, output, "rbf_svm")
    sub = keras.Model(inp, model_out, name="head_rbf_svm")
    n_sv = sum(len(m["vectors"]) for m in members)
    how = (f"rbf_svm: {len(members)} calibrated SVMs ({n_sv} support vectors) as RBF kernel, "
           f"one-vs-one decisions, Platt sigmoids and their average ({output})")
    return FoldedHead("rbf_svm", [sub], how, n_classes, extra={"output": output})


def nystroem_layers(pipeline: Pipeline, n_classes: int, *,
                    output: str = "log_proba") -> FoldedHead:
    """``rbf_svm``'s scalable form (scaler -> Nystroem -> logistic regression) as one layer:
    the RBF kernel against the Nystroem components, its normalisation matrix as a fixed
    ``Dense``, the logistic regression as a ``Dense`` and a softmax (binary: logits
    ``[0, z]``)."""
    scaler, model = _steps(pipeline, "rbf_svm", Pipeline)
    steps = model.named_steps
    nys, linear = steps.get("nystroem"), steps.get("linear")
    if not isinstance(nys, Nystroem) or nys.kernel != "rbf" or not isinstance(
            linear, LogisticRegression):
        raise PipelineError(f"expected rbf_svm's scalable form (Nystroem(rbf) -> "
                            f"LogisticRegression), got {model!r}")
    classes = np.asarray(linear.classes_)
    inp = keras.Input((int(scaler.n_features_in_),), name="features")
    member = {"vectors": np.asarray(nys.components_, np.float64), "gamma": float(nys.gamma)}
    kernel = _rbf_kernel(_standardise(scaler, "rbf_svm")(inp), [member])
    feats = _fixed_dense("head_nystroem", np.asarray(nys.normalization_, np.float64).T,
                         None)(kernel)
    coef = np.asarray(linear.coef_, np.float64)
    bias = np.reshape(np.asarray(linear.intercept_, np.float64), -1)
    if coef.shape[0] == 1:  # binary: one logit for the second class
        coef, bias = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], bias])
    logits = _fixed_dense("head_linear", coef.T, bias)(feats)
    proba = keras.layers.Softmax(name="head_softmax")(logits)
    sub = keras.Model(inp, _finish(proba, classes, n_classes, output, "rbf_svm"),
                      name="head_rbf_svm")
    how = (f"rbf_svm (scalable form): RBF kernel against {len(member['vectors'])} Nystroem "
           f"components, their normalisation, logistic regression ({output})")
    return FoldedHead("rbf_svm", [sub], how, n_classes, extra={"output": output})


def _svm_member(calibrated: Any, classes: np.ndarray) -> dict[str, Any]:
    """One calibrated SVC as arrays: support vectors, gamma, decision weights, Platt maps."""
    svc = calibrated.estimator
    if not isinstance(svc, SVC) or svc.kernel != "rbf":
        raise PipelineError(f"expected RBF SVCs in the rbf_svm head, found {svc!r}")
    if calibrated.method != "sigmoid" or not np.array_equal(svc.classes_, classes):
        raise PipelineError("expected sigmoid-calibrated SVCs that saw every class; this "
                            "rbf_svm head cannot be expressed as layers")
    if len(classes) > 2 and svc.decision_function_shape != "ovr":
        raise PipelineError("expected SVCs with decision_function_shape='ovr'")
    weights, intercept = _ovo_weights(svc)
    return {"vectors": np.asarray(svc.support_vectors_, np.float64),
            "gamma": float(svc._gamma), "weights": weights, "intercept": intercept,
            "a": np.array([c.a_ for c in calibrated.calibrators], np.float64),
            "b": np.array([c.b_ for c in calibrated.calibrators], np.float64)}


def _ovo_weights(svc: SVC) -> tuple[np.ndarray, np.ndarray]:
    """``(W (n_sv, n_pairs), b (n_pairs,))``: ``K @ W + b`` is the SVC's one-vs-one decision.

    Pair ``k = (i, j)``, ``i < j``, in SVC's order; positive means class ``i``, as libsvm has
    it. Two classes: the one score with class 1 positive (the public ``dual_coef_``'s sign).
    libsvm's layout: the coefficient of a class-``i`` support vector in pair ``(i, j)`` sits
    in row ``j - 1`` of ``dual_coef_``, that of a class-``j`` one in row ``i``.
    """
    coef = np.asarray(svc.dual_coef_, np.float64)
    intercept = np.asarray(svc.intercept_, np.float64)
    n_classes = len(svc.classes_)
    if n_classes == 2:
        return coef.T.copy(), intercept
    bounds = np.concatenate([[0], np.cumsum(svc.n_support_)])
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    weights = np.zeros((coef.shape[1], len(pairs)))
    for k, (i, j) in enumerate(pairs):
        rows_i, rows_j = slice(bounds[i], bounds[i + 1]), slice(bounds[j], bounds[j + 1])
        weights[rows_i, k] = coef[j - 1, rows_i]
        weights[rows_j, k] = coef[i, rows_j]
    return weights, intercept


def _rbf_kernel(xs: Any, members: list[dict[str, Any]]) -> Any:
    """``exp(-g |x - s|^2)`` for every member's support vectors, side by side."""
    vectors = np.vstack([m["vectors"] for m in members])
    gammas = np.concatenate([np.full(len(m["vectors"]), m["gamma"]) for m in members])
    cross = _fixed_dense("head_rbf_cross", (2 * gammas * vectors.T),
                         -gammas * np.sum(vectors**2, axis=1))(xs)
    norm = ops.sum(ops.square(xs), axis=-1, keepdims=True)
    own = _fixed_dense("head_rbf_norm", -gammas[None, :], None)(norm)
    return ops.exp(keras.layers.Add(name="head_rbf_exponent")([cross, own]))


def _block_diagonal(blocks: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((sum(b.shape[0] for b in blocks), sum(b.shape[1] for b in blocks)))
    r = c = 0
    for block in blocks:
        out[r:r + block.shape[0], c:c + block.shape[1]] = block
        r, c = r + block.shape[0], c + block.shape[1]
    return out


def _binary_svm_proba(kernel: Any, members: list[dict[str, Any]]) -> Any:
    """Each member's ``sigmoid(-(a z + b))`` is affine in the kernel: one sigmoid ``Dense``."""
    a = np.concatenate([m["a"] for m in members])
    b = np.concatenate([m["b"] for m in members])
    w = _block_diagonal([m["weights"] for m in members]) * -a
    bias = -(a * np.concatenate([m["intercept"] for m in members]) + b)
    p1 = _fixed_dense("head_platt", w, bias, activation="sigmoid")(kernel)
    p1 = ops.mean(p1, axis=-1, keepdims=True)  # the members' average
    return ops.concatenate([1.0 - p1, p1], axis=-1)


def _multiclass_svm_proba(kernel: Any, members: list[dict[str, Any]], n_classes: int) -> Any:
    """SVC's ovr decision from one-vs-one votes and confidences, Platt, normalised, averaged."""
    pairs = [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]
    signs = np.zeros((len(pairs), n_classes))  # +1 for the pair's first class, -1 its second
    for k, (i, j) in enumerate(pairs):
        signs[k, i], signs[k, j] = 1.0, -1.0
    n = len(members)
    decisions = _fixed_dense("head_ovo", _block_diagonal([m["weights"] for m in members]),
                             np.concatenate([m["intercept"] for m in members]))(kernel)
    # votes_c = #pairs won by c: sum_k [d_k >= 0] signs_kc + #pairs where c is second.
    won = ops.cast(ops.greater_equal(decisions, 0.0), "float32")
    second = np.tile(np.sum(signs < 0, axis=0), n)
    votes = _fixed_dense("head_votes", _block_diagonal([signs] * n), second)(won)
    sums = _fixed_dense("head_confidences", _block_diagonal([signs] * n), None)(decisions)
    scores = votes + sums / (3.0 * (ops.abs(sums) + 1.0))
    a = np.concatenate([m["a"] for m in members])
    b = np.concatenate([m["b"] for m in members])
    proba = _fixed_dense("head_platt", np.diag(-a), -b, activation="sigmoid")(scores)
    proba = keras.layers.Reshape((n, n_classes), name="head_members")(proba)
    total = ops.sum(proba, axis=-1, keepdims=True)
    proba = ops.where(ops.equal(total, 0.0), 1.0 / n_classes,
                      proba / ops.maximum(total, _TINY))
    return ops.mean(proba, axis=1)


# ----------------------------------------------------------------------------------- knn


def knn_layers(pipeline: Pipeline, n_classes: int, *,
               output: str = "log_proba") -> FoldedHead:
    """One layer (a functional sub-model) computing a ``knn`` head's probabilities."""
    scaler, model = _steps(pipeline, "knn", KNeighborsClassifier)
    if model.effective_metric_ != "euclidean" or model.weights not in ("uniform", "distance"):
        raise PipelineError("expected a Euclidean k-NN with uniform or distance weights, got "
                            f"metric {model.effective_metric_!r}, weights {model.weights!r}")
    rows = np.asarray(model._fit_X, np.float32)
    n_rows, n_features = rows.shape
    if n_rows * n_features > KNN_MAX_ROWS_X_FEATURES:
        raise PipelineError(
            f"a knn head over {n_rows} training rows x {n_features} features is past the "
            f"export limit KNN_MAX_ROWS_X_FEATURES={KNN_MAX_ROWS_X_FEATURES:,} floats (the "
            "training rows travel inside the model); use another head kind")
    classes = np.asarray(model.classes_)
    k = int(model.n_neighbors)
    table = _fixed_embedding("head_knn_rows", rows)
    labels = _fixed_embedding("head_knn_labels",
                              np.eye(len(classes), dtype=np.float32)[model._y])
    inp = keras.Input((n_features,), name="features")
    xs = _standardise(scaler, "knn")(inp)
    everything = _all_rows(inp, table, n_rows)  # (n_rows, n_features)
    closeness = (2.0 * ops.matmul(xs, ops.transpose(everything))
                 - ops.expand_dims(ops.sum(ops.square(everything), axis=-1), 0))
    _, nearest = ops.top_k(closeness, k)
    distance = ops.sqrt(ops.sum(ops.square(table(nearest) - ops.expand_dims(xs, 1)), axis=-1))
    weight = _knn_weights(distance, model.weights)
    votes = ops.sum(ops.expand_dims(weight, -1) * labels(nearest), axis=1)
    total = ops.sum(votes, axis=-1, keepdims=True)
    proba = votes / ops.where(ops.equal(total, 0.0), 1.0, total)
    sub = keras.Model(inp, _finish(proba, classes, n_classes, output, "knn"), name="head_knn")
    how = (f"knn: {k} nearest of {n_rows} stored training rows, {model.weights} vote "
           f"({output})")
    return FoldedHead("knn", [sub], how, n_classes, extra={"output": output})


def _all_rows(inp: Any, table: keras.layers.Embedding, n_rows: int) -> Any:
    """Every row of ``table`` as a tensor of the graph. The ids 0..n-1 are derived from the
    input (only its shape is used) so that Keras keeps them in the graph instead of storing
    them, or the rows, as a constant in the model's config."""
    one = ops.ones_like(ops.sum(inp, axis=(0, 1), keepdims=True), dtype="int32")  # (1, 1)
    ids = ops.cumsum(ops.tile(one, (1, n_rows)), axis=1) - 1  # (1, n_rows)
    return ops.squeeze(table(ids), axis=0)


def _knn_weights(distance: Any, weights: str) -> Any:
    """scikit-learn's vote weights: 1, or ``1 / d`` with exact matches taking all the vote."""
    if weights == "uniform":
        return ops.ones_like(distance)
    exact = ops.cast(ops.equal(distance, 0.0), "float32")
    any_exact = ops.max(exact, axis=-1, keepdims=True)
    return ops.where(any_exact > 0, exact, 1.0 / ops.maximum(distance, _TINY))


# ------------------------------------------------------------------------------- shared


def _steps(pipeline: Pipeline, kind: str, model_type: type) -> tuple[Any, Any]:
    steps = getattr(pipeline, "named_steps", {})
    scaler, model = steps.get("scale"), steps.get("model")
    if scaler is None or not isinstance(model, model_type):
        raise PipelineError(f"expected a fitted {kind!r} pipeline (scale -> "
                            f"{model_type.__name__}), got {pipeline!r}")
    return scaler, model


def _standardise(scaler: Any, kind: str) -> keras.layers.Layer:
    """The StandardScaler as Keras' ``Normalization`` (mean and variance in its config)."""
    scale = np.asarray(scaler.scale_, np.float64)
    return keras.layers.Normalization(mean=np.asarray(scaler.mean_, np.float64),
                                      variance=scale**2, name=f"head_{kind}_scale")


def _finish(proba: Any, classes: np.ndarray, n_classes: int, output: str, kind: str) -> Any:
    """Columns ``0..n_classes-1`` (a class the head never saw gets 0), then ``output``."""
    if output not in OUTPUTS:
        raise PipelineError(f"expected output one of {', '.join(OUTPUTS)}, got {output!r}")
    if list(classes) != list(range(n_classes)):
        if not set(classes.tolist()) <= set(range(n_classes)):
            raise PipelineError(f"the {kind!r} head's classes {classes.tolist()} are not "
                                f"indices below {n_classes}")
        place = np.zeros((len(classes), n_classes))
        place[np.arange(len(classes)), classes] = 1.0
        proba = _fixed_dense(f"head_{kind}_classes", place, None)(proba)
    if output == "proba":
        return proba
    return ops.log(ops.maximum(proba, _TINY))


def _fixed_dense(name: str, kernel: np.ndarray, bias: np.ndarray | None,
                 activation: str | None = None) -> keras.layers.Dense:
    layer = keras.layers.Dense(kernel.shape[1], activation=activation, use_bias=bias is not None,
                               name=name, trainable=False)
    layer.build((None, kernel.shape[0]))
    weights = [kernel.astype(np.float32)]
    if bias is not None:
        weights.append(np.asarray(bias, np.float32))
    layer.set_weights(weights)
    return layer


def _fixed_embedding(name: str, table: np.ndarray) -> keras.layers.Embedding:
    layer = keras.layers.Embedding(table.shape[0], table.shape[1], name=name, trainable=False)
    layer.build((None,))
    layer.set_weights([table.astype(np.float32)])
    return layer
