"""The reader: decodes each image once, in worker threads, and resizes it for every input
size the bases need, a bounded number of batches ahead of the forward pass.

Batches are ``(index, ok, [images at size 1, images at size 2, ...])``; ``index`` points back
into the path list, so rows stay aligned with their samples by construction, and ``ok`` is
False for a file that could not be decoded (its image is a zero placeholder that gets no
features). Resizing is ``tf.image.resize`` bilinear on float32 values in [0, 255], the same
op an exported model's Resizing layer uses.

Why threads and not ``tf.data``: on 2 cores a ``tf.data`` map (with the PIL decoder behind
``tf.numpy_function``, needed for BMP/GIF/16-bit/palette files and per-file errors) running
beside the forward pass halved extraction to 50 images/s, whatever its parallelism, while
this reader keeps 88 of the 110 images/s of the bare forward pass (EfficientNet-Lite0, ELPV;
benchmarks/run.py measures it side by side). PIL releases the GIL while decoding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import tensorflow as tf

from pipeline.data import decode


def resize(image: np.ndarray | tf.Tensor, size: int) -> tf.Tensor:
    """Bilinear resize to ``size x size``, float32 in [0, 255]."""
    return tf.image.resize(tf.cast(image, tf.float32), (size, size), method="bilinear")


def _load(path: str, sizes: Sequence[int]) -> tuple[bool, list[np.ndarray] | str]:
    try:
        image = decode.decode_file(path)  # looked up on use: one place to count decodes
    except decode.DecodeError as e:
        return False, str(e)
    return True, [resize(image, s).numpy() for s in sizes]


def read_batches(
    paths: Sequence[str],
    sizes: Sequence[int],
    batch_size: int = 32,
    on_error: Callable[[int, str], None] | None = None,
    workers: int = 2,
    prefetch: int = 2,
) -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray]]]:
    """Yield ``(indices, ok, [images per size])`` batches over ``paths`` in order.

    At most ``prefetch + 1`` batches are decoded or waiting at a time, so memory stays flat
    however large the dataset.
    """
    n = len(paths)
    starts = iter(range(0, n, batch_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pipeline-reader") as pool:
        pending: deque[tuple[range, list[Future]]] = deque()

        def submit_next() -> None:
            start = next(starts, None)
            if start is not None:
                rows = range(start, min(n, start + batch_size))
                pending.append((rows, [pool.submit(_load, paths[i], sizes) for i in rows]))

        for _ in range(prefetch + 1):
            submit_next()
        while pending:
            rows, futures = pending.popleft()
            submit_next()
            results = [f.result() for f in futures]
            ok = np.array([good for good, _ in results], dtype=bool)
            images = []
            for k, s in enumerate(sizes):
                batch = np.zeros((len(rows), s, s, 3), dtype=np.float32)
                for j, (good, value) in enumerate(results):
                    if good:
                        batch[j] = value[k]
                images.append(batch)
            if on_error is not None:
                for j, (good, value) in enumerate(results):
                    if not good:
                        on_error(rows[j], value)
            yield np.arange(rows.start, rows.stop, dtype=np.int64), ok, images
