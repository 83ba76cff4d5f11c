"""What training a Keras model needs from both the heads stage and fine-tuning: the optimizer
table and the balanced class-weight formula, kept in one place.

Keras is imported inside :func:`make_optimizer` only, so importing this module (and the heads
layer) does not load TensorFlow.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import PipelineError

#: Optimizer names a stage may accept -> the ``keras.optimizers`` class. Each stage keeps its
#: own allowed subset (fine-tuning: adam, rmsprop, sgd; heads: all four).
OPTIMIZERS: dict[str, str] = {"adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
                              "sgd": "SGD"}


def make_optimizer(name: str, learning_rate: float) -> Any:
    """A fresh Keras optimizer ``name`` (a key of :data:`OPTIMIZERS`)."""
    if name not in OPTIMIZERS:
        raise PipelineError(f"optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")
    import keras

    return getattr(keras.optimizers, OPTIMIZERS[name])(learning_rate=learning_rate)


def balanced_class_weight(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """``n_samples / (n_present_classes * count)`` per class present in ``y``, the formula of
    scikit-learn's ``class_weight="balanced"`` (absent classes get no entry)."""
    y = np.asarray(y)
    counts = np.bincount(y.astype(np.int64), minlength=n_classes)
    present = np.count_nonzero(counts)
    return {c: float(len(y) / (present * n)) for c, n in enumerate(counts) if n > 0}
