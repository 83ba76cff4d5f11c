"""Keras dense heads, trained on cached features by epochs.

* ``dense`` – the transfer-learning tutorials' head on pooled features:
  ``Dropout(0.2) -> Dense(n_classes)``.
* ``dense_mlp`` – for flattened spatial features: ``Dense(256, relu) -> Dropout(0.5) ->
  Dense(n_classes)``.

The model outputs logits (the softmax is applied in :meth:`predict_proba`), which is what the
fine-tuning stage wants to stack on the base. Training stops early when the validation loss
has not improved for ``patience`` epochs and keeps the best epoch's weights; the per-epoch
``history`` (loss/accuracy, train and validation) drives the learning-curve plot. Seeds are set
before building and fitting, so a configuration trains the same way twice on the same machine.

TensorFlow is imported only when a Keras head is built, so the scikit-learn part of a sweep
(and its worker processes) never pays for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.heads.params import P
from pipeline.heads.spec import Head, HeadSpec
from pipeline.heads.training import OPTIMIZERS as TRAINING_OPTIMIZERS
from pipeline.heads.training import balanced_class_weight, make_optimizer

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
    """``[Dense(units, relu) ->] Dropout(dropout) -> Dense(n_classes)`` on feature rows."""

    family = "keras"
    filename = "head.keras"
    hidden_units: bool = False

    def __init__(self, kind: str, params: Mapping[str, Any], *, n_classes: int, seed: int = 0):
        super().__init__(kind, params, n_classes=n_classes, seed=seed)
        self.model: Any = None
        self.best_epoch: int | None = None

    def build(self, n_features: int) -> Any:
        keras = _keras()
        keras.utils.set_random_seed(self.seed)
        inputs = keras.Input(shape=(n_features,), name="features")
        x = inputs
        if self.hidden_units:
            x = keras.layers.Dense(self.params["units"], activation="relu", name="hidden")(x)
        x = keras.layers.Dropout(self.params["dropout"], name="dropout")(x)
        logits = keras.layers.Dense(self.n_classes, name="logits")(x)
        model = keras.Model(inputs, logits, name=self.kind)
        model.compile(
            optimizer=make_optimizer(self.params["optimizer"], self.params["learning_rate"]),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            # Tiny models: XLA compilation costs more than it saves, and running several steps
            # per call cuts Python overhead (same numbers, epoch-level callbacks unaffected).
            jit_compile=False, steps_per_execution=16)
        return model

    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> KerasDenseHead:
        keras = _keras()
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(y, dtype=np.int32)
        if len(np.unique(y)) < 2:
            raise PipelineError(f"head {self.kind!r}: the training rows hold only one class")
        self.model = self.build(x.shape[1])
        callbacks = []
        validation = None
        if x_val is not None and y_val is not None and len(y_val):
            validation = (np.asarray(x_val, dtype=np.float32), np.asarray(y_val, dtype=np.int32))
            if self.params["patience"] > 0:
                callbacks.append(keras.callbacks.EarlyStopping(
                    monitor="val_loss", patience=self.params["patience"],
                    restore_best_weights=True))
        class_weight = None
        if self.params.get("class_weight") == "balanced":
            class_weight = balanced_class_weight(y, self.n_classes)
        keras.utils.set_random_seed(self.seed)
        hist = self.model.fit(x, y, validation_data=validation, epochs=self.params["epochs"],
                              batch_size=self.params["batch_size"], callbacks=callbacks,
                              class_weight=class_weight, shuffle=True, verbose=0)
        self.history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
        if validation is not None and self.history.get("val_loss"):
            self.best_epoch = int(np.argmin(self.history["val_loss"])) + 1
        else:
            self.best_epoch = len(self.history.get("loss", [])) or self.params["epochs"]
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
        # Keras models do not pickle portably; a sweep never ships these across processes.
        state = dict(self.__dict__)
        state["model"] = None
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
