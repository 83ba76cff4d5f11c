"""The TensorFlow runtime: the Keras extractor as one compiled function (the reference the
other runtimes are checked against, and the fallback when they cannot run)."""

from __future__ import annotations

import numpy as np

from pipeline.bases.extractor import Extractor
from pipeline.bases.runtimes.base import FLOAT32, TENSORFLOW


class TensorFlowRuntime:
    name = TENSORFLOW
    precision = FLOAT32

    def __init__(self, extractor: Extractor):
        from pipeline.bases.forward import forward_fn  # TensorFlow: loaded only to compute

        self._fn = forward_fn(extractor)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self._fn(batch)
