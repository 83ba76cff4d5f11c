"""A fitted head as Keras layers that compute exactly its ``predict_proba``.

* ``dense`` / ``dense_mlp`` (Keras): their layers are copied with their weights.
* ``logreg``: ``StandardScaler -> LogisticRegression`` is affine then softmax, so the scaler is
  folded into one ``Dense`` layer on the raw features: ``W' = W / scale``,
  ``b' = b - W @ (mean / scale)``. Binary logistic regression has one logit ``z`` for class 1;
  a 2-unit softmax over ``[0, z]`` gives ``sigmoid(z)``, so the kernel gets a zero column.
* ``linear_svm``: the heads stage calibrates a LinearSVC with Platt's sigmoid
  (``CalibratedClassifierCV(method="sigmoid", ensemble=False)``), ``p_k = sigmoid(-(a_k z_k +
  b_k))`` per one-vs-rest score ``z_k``. That is still exact as layers: binary -> ``[0,
  -(a z + b)]`` and softmax; several classes -> ``log_sigmoid`` then softmax, which is
  ``p_k / sum_j p_j``, the normalisation scikit-learn applies.
* ``mlp`` (scikit-learn): ReLU ``Dense`` layers, the scaler folded into the first one.

* ``rbf_svm`` / ``knn`` (export only): :mod:`~pipeline.finetune.kernel_layers` (kernels
  against the stored support vectors / training rows, ending in log-probabilities).

What each kind can become is declared on its :class:`~pipeline.heads.HeadSpec`: ``finetunable``
(fine-tuning folds it and trains through it) and ``"keras" in export_formats`` (``pipeline
export`` writes it as layers). :func:`fold_head` is asked for one ``purpose`` and refuses a
kind that cannot serve it with one line naming the request and the kinds that can. The
layers end in logits; the caller adds the softmax.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from pipeline.errors import PipelineError
from pipeline.finetune.folded import FoldedHead
from pipeline.finetune.kernel_layers import KERNEL_KINDS, kernel_head
from pipeline.heads.registry import export_kinds, finetunable_kinds, get_head_spec
from pipeline.heads.sklearn_heads import fold_scaler

__all__ = ["PURPOSES", "FoldedHead", "fold_head"]

#: What the layers are for: training through them, or a ``.keras`` export.
PURPOSES = ("finetune", "export")


def fold_head(loaded: Any, n_features: int, purpose: str = "finetune") -> FoldedHead:
    """Keras layers equivalent to the fitted head of a run (a :class:`LoadedHead`).

    ``n_features`` is the length of a flattened feature row; the layers are built for it.
    ``purpose="finetune"`` accepts the ``finetunable`` kinds; ``"export"`` every kind with
    "keras" in its ``export_formats`` (``rbf_svm`` and ``knn`` through
    :func:`~pipeline.finetune.kernel_layers.kernel_head`, for export only).
    """
    kind = loaded.kind
    spec = get_head_spec(kind)
    if purpose == "finetune" and not spec.finetunable:
        raise PipelineError(
            f"a {kind!r} head cannot be trained through as Keras layers, so it cannot be "
            f"fine-tuned; fine-tune a run of one of: {', '.join(finetunable_kinds())} "
            "(e.g. `pipeline fit-head CACHE --head logreg`)")
    if purpose == "export" and "keras" not in spec.export_formats:
        raise PipelineError(
            f"a {kind!r} head cannot be exported as Keras layers exactly; export it with "
            f"--format {' or '.join(f for f in spec.export_formats)}, or export a run of one "
            f"of: {', '.join(export_kinds('keras'))}")
    if purpose not in PURPOSES:
        raise PipelineError(f"fold_head: purpose must be one of {PURPOSES}, not {purpose!r}")
    if kind in KERNEL_KINDS and purpose == "export":
        pipe = loaded.export()["pipeline"]
        if int(pipe.n_features_in_) != n_features:
            raise PipelineError(f"the {kind!r} head expects {pipe.n_features_in_} features, "
                                f"the base gives {n_features}")
        return kernel_head(kind, pipe, len(loaded.class_names))
    exported = loaded.export()
    form = exported.get("layer_form")
    if form not in _FOLDS:
        raise PipelineError(f"the {kind!r} head declares layers but exports layer_form "
                            f"{form!r}; expected one of: {', '.join(_FOLDS)}")
    folded = _FOLDS[form](kind, exported, len(loaded.class_names), n_features)
    for layer in folded.layers:
        if not layer.built:
            raise AssertionError(f"{layer.name} not built")  # pragma: no cover
    return folded


def _copy_keras(kind: str, exported: dict[str, Any], n_classes: int,
                n_features: int) -> FoldedHead:
    """Fresh copies of the head model's layers (names prefixed ``head_``) with its weights."""
    model: keras.Model = exported["model"]
    layers = [lyr for lyr in model.layers if not isinstance(lyr, keras.layers.InputLayer)]
    if len(model.inputs) != 1 or int(model.inputs[0].shape[-1]) != n_features:
        raise PipelineError(f"the {kind!r} head expects {tuple(model.inputs[0].shape[1:])} "
                            f"inputs, the base gives {n_features} features")
    out: list[keras.layers.Layer] = []
    shape: tuple[int | None, ...] = (None, n_features)
    for lyr in layers:
        cfg = lyr.get_config()
        cfg["name"] = f"head_{lyr.name}"
        new = lyr.__class__.from_config(cfg)
        new.build(shape)
        new.set_weights(lyr.get_weights())
        shape = tuple(new.compute_output_shape(shape))
        out.append(new)
    return FoldedHead(kind, out, f"{kind} head: its Keras layers, weights copied",
                      int(shape[-1]))


def _dense(name: str, kernel: np.ndarray, bias: np.ndarray,
           activation: str | None = None) -> keras.layers.Dense:
    layer = keras.layers.Dense(kernel.shape[1], activation=activation, name=name)
    layer.build((None, kernel.shape[0]))
    layer.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return layer


def _check_classes(kind: str, classes: Any, n_classes: int) -> None:
    if list(classes) != list(range(n_classes)):
        raise PipelineError(f"the {kind!r} head was fitted without every class (it saw "
                            f"{list(classes)} of {n_classes}); it cannot become a dense layer")


def _linear(kind: str, exported: dict[str, Any], n_classes: int,
            n_features: int) -> FoldedHead:
    """A (scaled) linear model, Platt-calibrated when the export has ``calibration_a/_b``."""
    _check_classes(kind, exported["classes"], n_classes)
    w, b = fold_scaler(exported["coef"], np.reshape(exported["intercept"], -1),
                       exported["scaler_mean"], exported["scaler_scale"])
    how = f"{kind}: StandardScaler folded into Dense"
    calibration = None
    if "calibration_a" in exported:
        calibration = a, c = (np.asarray(exported["calibration_a"], dtype=np.float64),
                              np.asarray(exported["calibration_b"], dtype=np.float64))
        if len(a) != w.shape[0]:
            raise PipelineError(f"the {kind!r} head's calibration has {len(a)} maps for "
                                f"{w.shape[0]} scores; cannot fold it")
        # Platt: p = sigmoid(-(a z + c)) -> logit -(a z + c), affine in z, so in x.
        w, b = -a[:, None] * w, -(a * b + c)
        how += " with the Platt sigmoid calibration"
    layers: list[keras.layers.Layer] = []
    if w.shape[0] == 1:  # binary: logits [0, z] -> softmax = [1 - sigmoid(z), sigmoid(z)]
        w = np.vstack([np.zeros_like(w), w])
        b = np.concatenate([[0.0], b])
        how += "; binary as 2-unit softmax over logits [0, z]"
        layers.append(_dense("head_logits", w.T, b))
    else:
        layers.append(_dense("head_logits", w.T, b))
        if calibration is not None:  # normalised one-vs-rest sigmoids
            layers.append(keras.layers.Activation("log_sigmoid", name="head_log_sigmoid"))
            how += "; one-vs-rest sigmoids normalised by log_sigmoid + softmax"
    return FoldedHead(kind, layers, how, n_classes)


def _sk_mlp(kind: str, exported: dict[str, Any], n_classes: int,
            n_features: int) -> FoldedHead:
    _check_classes(kind, exported["classes"], n_classes)
    model = exported["pipeline"].named_steps["model"]
    if model.activation != "relu":
        raise PipelineError(f"the {kind!r} head uses activation {model.activation!r}; only "
                            "relu networks are folded")
    coefs = [np.asarray(c, dtype=np.float64) for c in model.coefs_]
    intercepts = [np.asarray(b, dtype=np.float64) for b in model.intercepts_]
    w0, b0 = fold_scaler(coefs[0].T, intercepts[0], exported["scaler_mean"],
                         exported["scaler_scale"])
    coefs[0], intercepts[0] = w0.T, b0
    layers: list[keras.layers.Layer] = []
    for i, (w, b) in enumerate(zip(coefs[:-1], intercepts[:-1], strict=True)):
        layers.append(_dense(f"head_hidden{i + 1}", w, b, activation="relu"))
    w, b = coefs[-1], intercepts[-1]
    if w.shape[1] == 1:  # logistic output
        w = np.hstack([np.zeros_like(w), w])
        b = np.concatenate([[0.0], b])
    layers.append(_dense("head_logits", w, b))
    return FoldedHead(kind, layers, "mlp: StandardScaler folded into the first Dense, ReLU "
                      "layers copied", n_classes)


#: One folding rule per ``layer_form`` a head's export may name (see ``LAYER_FORMS``).
_FOLDS = {"keras_model": _copy_keras, "linear": _linear, "relu_mlp": _sk_mlp}
