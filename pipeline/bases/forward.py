"""The forward pass of an extractor as one compiled function (traced once per input size)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

from pipeline.bases.extractor import Extractor


def forward_fn(extractor: Extractor) -> Callable[[np.ndarray], np.ndarray]:
    s = extractor.input_size
    model = extractor.model

    @tf.function(input_signature=[tf.TensorSpec([None, s, s, 3], tf.float32)])
    def run(x):
        return model(x, training=False)

    return lambda x: run(tf.convert_to_tensor(x, tf.float32)).numpy()
