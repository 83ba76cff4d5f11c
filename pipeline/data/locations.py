"""Where image bytes live: a path on this machine, or an fsspec URL (``s3://``, ``gs://``,
``file://``, ...). The dataset listing, the hash cache, and both engines' decoders read
through here, so a file is read the same way wherever it is.

fsspec is imported only for a URL (it comes with the ``ray`` extra; ``s3fs`` or ``gcsfs``
add ``s3://`` and ``gs://``).
"""

from __future__ import annotations

import hashlib
from typing import Any

from pipeline.errors import PipelineError
from pipeline.fileio import file_sha256


def is_data_url(location: object) -> bool:
    """A URL (``file://`` included: it is read through fsspec like any other)."""
    return "://" in str(location)


def url_fs(url: str) -> tuple[Any, str]:
    """fsspec's file system for ``url`` and the path inside it; one line if it cannot be had."""
    try:
        import fsspec
    except ImportError:
        raise PipelineError(f"{url}: a dataset URL needs fsspec (pip install 'pipeline[remote]'; "
                            "s3fs or gcsfs for s3:// and gs://)") from None
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as e:
        raise PipelineError(f"{url}: cannot open this URL ({str(e).splitlines()[0]})") from None


def read_bytes(location: str) -> bytes:
    """The bytes of a file or URL (``OSError`` if they cannot be read)."""
    if not is_data_url(location):
        with open(location, "rb") as f:
            return f.read()
    import fsspec

    with fsspec.open(location, "rb") as f:
        return f.read()


def location_sha256(location: str) -> str:
    """The SHA-256 of a file's or URL's bytes (``OSError`` if they cannot be read)."""
    if not is_data_url(location):
        return file_sha256(location)
    import fsspec

    h = hashlib.sha256()
    with fsspec.open(location, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unreadable(location: str, e: OSError) -> str:
    """The one line for a dataset file that cannot be read."""
    return f"{location}: cannot read ({e.strerror or e})"
