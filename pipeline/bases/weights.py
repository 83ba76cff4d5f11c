"""Which weights a base gets, and what identifies them.

``--weights`` is one of ``imagenet`` (the pretrained weights: a Keras download, or a package
file for the offline bases), ``none`` (random initialisation, seeded, for tests), or a path
to a local Keras weights file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.bases.lazy import lazy_module
from pipeline.errors import PipelineError

keras = lazy_module("keras")  # parsing --weights needs no framework

IMAGENET = "imagenet"
NONE = "none"
# Seed for random initialisation, so that --weights none gives the same numbers every run.
INIT_SEED = 1234


def parse_weights(weights: str | os.PathLike | None) -> str | None:
    """Normalise ``--weights``: ``"imagenet"``, ``None`` (random init) or an existing file."""
    if weights is None or str(weights).lower() == NONE:
        return None
    if str(weights).lower() == IMAGENET:
        return IMAGENET
    path = Path(weights).expanduser()
    if not path.is_file():
        raise PipelineError(
            f"--weights {weights}: no such file; expected 'imagenet', 'none' or a path to a "
            "Keras weights file (.weights.h5 / .h5)"
        )
    return str(path.resolve())


def weights_label(weights: str | None) -> str:
    return NONE if weights is None else weights


def weights_identity(model: keras.Model) -> str:
    """A hash of every weight value: what the features really depend on."""
    h = hashlib.sha256()
    for w in model.weights:
        a = np.ascontiguousarray(keras.ops.convert_to_numpy(w))
        h.update(f"{w.path}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def offline_download_guard(base_name: str, timeout: float = 5.0) -> Iterator[None]:
    """Make a Keras weights download that cannot happen fail in seconds with advice.

    Keras only downloads when the file is not in ``~/.keras/models``; we check the host is
    reachable first, so an offline machine gets a clear message instead of a long hang.
    """
    from keras.src.utils import file_utils

    original = file_utils.urlretrieve

    def guarded(url, filename, *args, **kwargs):
        host = urllib.parse.urlparse(url).hostname or url
        port = 443 if url.startswith("https") else 80
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            raise PipelineError(
                f"cannot download ImageNet weights for {base_name}: {Path(filename).name} is "
                f"not in ~/.keras/models and {host} is unreachable. Copy that file there from "
                "an online machine, or pass --weights PATH to a local weights file "
                "(efficientnet_lite0/1/2 work offline)."
            ) from None
        return original(url, filename, *args, **kwargs)

    file_utils.urlretrieve = guarded
    try:
        yield
    finally:
        file_utils.urlretrieve = original
