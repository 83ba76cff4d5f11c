"""Keras dense heads, trained on cached features by epochs (in memory, see ``dense_train``).

* ``dense`` – the transfer-learning tutorials' head on pooled features:
  ``Dropout(0.2) -> Dense(n_classes)``.
* ``dense_mlp`` – for flattened spatial features: ``Dense(256, relu) -> Dropout(0.5) ->
  Dense(n_classes)``.

The model outputs logits (the softmax is applied in :meth:`predict_proba`), which is what the
fine-tuning stage wants to stack on the base. Training stops early when the validation loss
has not improved for ``patience`` epochs and keeps the best epoch's weights; the per-epoch
``history`` (loss/accuracy, train and validation) drives the learning-curve plot. Training is
a seeded NumPy loop (:mod:`pipeline.heads.dense_train`), so a configuration trains the same
way twice; the Keras model is built from its weights when the head is saved or exported.

TensorFlow is imported only when a Keras model is built or loaded, so a sweep (and its
worker processes) pays for it only when a chosen dense head is saved.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.heads.dense_train import DenseWeights, train_dense
from pipeline.heads.params import P
from pipeline.heads.spec import Head, HeadSpec
from pipeline.heads.training import OPTIMIZERS as TRAINING_OPTIMIZERS
from pipeline.heads.training import balanced_class_weight

OPTIMIZERS = tuple(TRAINING_OPTIMIZERS)


def _keras() -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def load_keras_safely(path: str | os.PathLike, what: str = "model file") -> Any:
    """A ``.keras`` model loaded with ``safe_mode=True`` (no Lambda, no code, only Keras'
    own modules), or one line saying why not.

    Only the ``.keras`` zip format is read: a legacy HDF5/SavedModel file, or anything else
    under that name, is refused before Keras looks at it.
    """
    import zipfile

    path = Path(path)
    if path.suffix != ".keras" or not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: the {what} is not a .keras (zip) model; only .keras "
                            "models are loaded, in Keras' safe mode")
    keras = _keras()
    try:
        return keras.models.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # a foreign, corrupt or unsafe model: one line, nothing run
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PipelineError(f"{path}: refused to load the {what} ({msg[:300]})") from None


class KerasDenseHead(Head):
    """``[Dense(units, relu) ->] Dropout(dropout) -> Dense(n_classes)`` on feature rows.

    Trained in memory by :func:`pipeline.heads.dense_train.train_dense` (NumPy, no framework
    overhead); the Keras model (the saved, exported and fine-tuned form) is built from the
    trained weights the first time it is asked for (:attr:`model`), so a sweep that only
    scores a configuration never builds one.
    """

    family = "keras"
    filename = "head.keras"
    hidden_units: bool = False

    def __init__(self, kind: str, params: Mapping[str, Any], *, n_classes: int, seed: int = 0):
        super().__init__(kind, params, n_classes=n_classes, seed=seed)
        self._model: Any = None
        self.weights: DenseWeights | None = None
        self.n_features: int | None = None
        self.best_epoch: int | None = None

    @property
    def model(self) -> Any:
        """The Keras model (outputs logits): loaded, or built from the trained weights."""
        if self._model is None and self.weights is not None:
            assert self.n_features is not None
            self._model = self.build(self.n_features)
            self._model.set_weights(self.weights.arrays)
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        """A model given (loaded, or wrapped) is the head from now on: predictions use it."""
        self._model = value
        self.weights = None

    def build(self, n_features: int) -> Any:
        """The head's Keras model (uncompiled), freshly initialised."""
        keras = _keras()
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input(shape=(n_features,), name="features")
        x = inputs
        if self.hidden_units:
            x = keras.layers.Dense(self.params["units"], activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(self.params["dropout"], name="dropout")(x)
        logits = keras.layers.Dense(self.n_classes, name="logits")(x)
        return keras.Model(inputs, logits, name=self.kind)

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> KerasDenseHead:
        y = np.asarray(y, dtype=np.int64)
        if len(np.unique(y)) < 2:
            raise PipelineError(f"head {self.kind!r}: the training rows hold only one class")
        class_weight = None
        if self.params.get("class_weight") == "balanced":
            class_weight = balanced_class_weight(y, self.n_classes)
        params = dict(self.params)
        if not self.hidden_units:
            params.pop("units", None)
        self.weights, self.history, self.best_epoch = train_dense(
            x, y, x_val, y_val, params, n_classes=self.n_classes, seed=self.seed,
            class_weight=class_weight)
        self.n_features = int(np.shape(x)[1])
        self._model = None
        return self

    def refit_params(self) -> dict[str, Any]:
        """Train+validation leaves nothing to stop on: train for the epochs chosen on val."""
        params = dict(self.params)
        if self.best_epoch:
            params["epochs"] = self.best_epoch
        return params

    def _fitted(self) -> Any:
        if self.model is None:
            raise PipelineError(f"head {self.kind!r} is not fitted")
        return self.model

    def logits(self, x: np.ndarray) -> np.ndarray:
        if self.weights is not None:  # trained here: the same arithmetic, without Keras
            return self.weights.logits(x).astype(np.float64)
        return np.asarray(self._fitted().predict(np.asarray(x, dtype=np.float32),
                                                 batch_size=1024, verbose=0), dtype=np.float64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.logits(x)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, folder: Path) -> Path:
        path = Path(folder) / self.filename
        self._fitted().save(path)
        return path

    @classmethod
    def load(cls, path: Path, kind: str, params: Mapping[str, Any], *,
             n_classes: int) -> KerasDenseHead:
        head = cls(kind, params, n_classes=n_classes)
        head.model = load_keras_safely(path, "head file")
        return head

    def export(self) -> dict[str, Any]:
        """Adds ``model`` (the Keras model; outputs logits) for stacking on the base."""
        return dict(super().export(), model=self._fitted(), outputs="logits",
                    best_epoch=self.best_epoch, layer_form="keras_model")

    def __getstate__(self) -> dict[str, Any]:
        # Keras models do not pickle portably (the trained weights do: the model is rebuilt).
        state = dict(self.__dict__)
        state["_model"] = None
        return state


class KerasMLPHead(KerasDenseHead):
    hidden_units = True


def _common(dropout: float, epochs: int) -> tuple:
    return (
        P("optimizer", "str", "adam", "optimizer", choices=OPTIMIZERS),
        P("learning_rate", "float", 1e-3, "optimizer step size", minimum=0,
          exclusive_minimum=True),
        P("epochs", "int", epochs, "epochs at most", minimum=1),
        P("batch_size", "int", 32, "rows per step", minimum=1),
        P("patience", "int", 5, "epochs without val_loss improvement before stopping "
          "(0 = never stop early)", minimum=0),
        P("dropout", "float", dropout, "dropout rate", minimum=0, maximum=0.95),
        P("class_weight", "str", "none", "'balanced' reweights classes by inverse frequency",
          choices=("none", "balanced")),
    )


#: The Keras kinds; their layers are copied onto the base when fine-tuning.
SPECS: tuple[HeadSpec, ...] = (
    HeadSpec("dense", "Keras Dropout -> Dense(n) on pooled features (the tutorials' head)",
             KerasDenseHead, _common(0.2, 50), family="keras", features="pooled",
             layers=True, finetunable=True, export_formats=("keras", "onnx")),
    HeadSpec("dense_mlp",
             "Keras Dense(units, relu) -> Dropout -> Dense(n), for flattened features",
             KerasMLPHead, (*_common(0.5, 50), P("units", "int", 256, "hidden units", minimum=1)),
             family="keras", features="flattened", layers=True, finetunable=True,
             export_formats=("keras", "onnx")),
)
