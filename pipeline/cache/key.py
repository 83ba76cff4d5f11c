"""Cache keys: hashes of everything that changes the numbers, and nothing else.

The **options key** covers the extractor (base, weights identity, layer, pooling, input size,
preprocessing, resize) plus the stored dtype, the format version and a compute precision
other than float32 (not the runtime: float32 runtimes agree within float tolerance); it names
the file and the resumable work folder, together with the **dataset identity** (a hash of the dataset's
resolved source path and options), so two folders both called ``data`` never share a file.
The **content key** adds the sorted content hashes of the images,
so it changes exactly when the features would. No paths, no mtimes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pipeline.cache.info import FORMAT_VERSION
from pipeline.fileio import json_sha256

# fileio.json_sha256 hashes the same bytes the keys were always made of (sorted-key JSON,
# UTF-8), so every existing cache keeps its name.


def options_key(extractor_options: dict[str, Any], dtype: str,
                precision: str = "float32") -> str:
    """``precision``: the compute precision. float32 runtimes agree within float tolerance,
    so the runtime is not in the key; bfloat16 changes the numbers by a few percent, so it is
    (float32 adds nothing: every float32 cache keeps its name)."""
    key: dict[str, Any] = {"extractor": extractor_options, "dtype": dtype,
                           "format_version": FORMAT_VERSION}
    if precision != "float32":
        key["precision"] = precision
    return json_sha256(key)


def content_key(options: str, sha256s: Iterable[str]) -> str:
    return json_sha256({"options": options, "images": sorted(set(sha256s))})


def dataset_digest(ids: Iterable[str], sha256s: Iterable[str], labels: Iterable[int],
                   splits: Iterable[str], class_names: list[str]) -> str:
    """What a feature set holds besides the numbers: which sample is what, in which split."""
    # Plain str/int (not numpy scalars): the same JSON, without converting value by value.
    rows = sorted(zip(map(str, ids), map(str, sha256s), map(int, labels), map(str, splits),
                      strict=True))
    return json_sha256({"rows": rows, "classes": class_names})


def dataset_identity(source: str, options: dict[str, Any]) -> str:
    """What a dataset is, as a short hash: its resolved source (a folder or a CSV file; a
    builtin's name) and the options that change its rows. Adding images keeps it; another
    folder that happens to have the same name does not share it."""
    return json_sha256({"source": source, "options": options})[:10]


def cache_file_name(dataset: str, base: str, options: str, identity: str) -> str:
    """``<readable dataset name>-<dataset identity>-<base>-<options key>.h5``: the readable
    part alone never decides which file a dataset uses."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", dataset).strip("_") or "data"
    return f"{safe}-{identity}-{base}-{options[:12]}.h5"
