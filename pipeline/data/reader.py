"""The reader: a ``tf.data`` pipeline that decodes each image once and resizes it for every
input size the bases need, in parallel, with prefetch.

Elements are batches of ``(index, ok, image_at_size_1, image_at_size_2, ...)``; ``index``
points back into the sample list, so rows stay aligned with their samples by construction,
and ``ok`` is False for a file that could not be decoded (its image is a placeholder that
gets no features). Resizing is bilinear on float32 values in [0, 255], the same op an
exported model uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import tensorflow as tf

from pipeline.data.decode import DecodeError, decode_file


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to ``size x size``, float32 in [0, 255]."""
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")


def read_batches(
    paths: Sequence[str],
    sizes: Sequence[int],
    batch_size: int = 32,
    on_error: Callable[[int, str], None] | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """Yield ``(indices, ok, [images per size])`` batches over ``paths`` in order."""
    errors: dict[int, str] = {}

    def _decode(index: np.int64, path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return decode_file(path.decode()), True
        except DecodeError as e:
            errors[int(index)] = str(e)
            return np.zeros((1, 1, 3), np.uint8), False

    def load(index, path):
        image, ok = tf.numpy_function(_decode, [index, path], [tf.uint8, tf.bool],
                                      stateful=False)
        image.set_shape([None, None, 3])
        ok.set_shape([])
        return (index, ok, *[resize(image, s) for s in sizes])

    indices = np.arange(len(paths), dtype=np.int64)
    ds = (tf.data.Dataset.from_tensor_slices((indices, np.asarray(paths, dtype=object)))
          .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size)
          .prefetch(2))
    for index, ok, *images in ds.as_numpy_iterator():
        if on_error is not None:
            for i in index[~ok]:
                on_error(int(i), errors.pop(int(i), "cannot decode"))
        yield index, ok, images
