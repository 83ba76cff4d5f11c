"""Datasets kept as a CSV manifest: ``path,label[,split]``, paths relative to the CSV.

A Parquet manifest (``.parquet``, read with pyarrow) is read as a CSV whose header is its
column names. Either may sit under an fsspec URL (:func:`pipeline.data.remote.read_url`).

A header row is optional; when present it names the columns (in any order): ``path`` (or
``file``, ``filename``, ``image``), ``label`` (or ``class``, ``category``) and optionally
``split`` (or ``subset``). A row's id is the path as listed (normalised, relative to the CSV's
folder), even when that path is a symlink inside the root; a path that leaves the root, directly
or through a symlink, is refused, as in a folder dataset.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path, PurePath

from pipeline.data.folder import LocalTree, Tree, split_of_name
from pipeline.data.hash_cache import Hasher
from pipeline.data.samples import IMAGE_SUFFIXES, Dataset, Sample
from pipeline.errors import PipelineError

EXPECTED = "path,label[,split]"
HEADER_NAMES = {
    **dict.fromkeys(("path", "file", "filename", "file_name", "image", "filepath"), "path"),
    **dict.fromkeys(("label", "class", "category", "target"), "label"),
    **dict.fromkeys(("split", "subset"), "split"),
}


MANIFEST_SUFFIXES = (".csv", ".parquet")


def _read_rows(manifest: Path) -> list[list[str]]:
    return manifest_rows(manifest, manifest.read_bytes)


def manifest_rows(manifest: object, read: Callable[[], bytes]) -> list[list[str]]:
    """The non-empty rows of a CSV or Parquet manifest (its column names first), as text."""
    kind = "Parquet" if str(manifest).lower().endswith(".parquet") else "CSV"
    try:
        data = read()
        rows = _parquet_rows(manifest, data) if kind == "Parquet" else \
            list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PipelineError(f"{manifest}: cannot read {kind} manifest ({why})") from None
    return [r for r in rows if r and any(c.strip() for c in r)]


def _parquet_rows(manifest: object, data: bytes) -> list[list[str]]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise PipelineError(f"{manifest}: a Parquet manifest needs pyarrow (pip install "
                            "pyarrow; the ray extra has it)") from None
    try:
        table = pq.read_table(pa.BufferReader(data))
    except pa.ArrowException as e:
        raise ValueError(str(e)) from None
    columns = [["" if v is None else str(v) for v in table.column(i).to_pylist()]
               for i in range(table.num_columns)]
    return [list(table.column_names)] + [list(row) for row in zip(*columns, strict=True)]


def _columns(manifest: object, rows: list[list[str]]) -> tuple[dict[str, int], bool]:
    """Column positions, and whether the first row is a header."""
    first = [c.strip().lower() for c in rows[0]]
    named = [HEADER_NAMES.get(c) for c in first]
    if all(named) and len(set(named)) == len(named) and {"path", "label"} <= set(named):
        return {n: i for i, n in enumerate(named) if n}, True
    looks_like_header = not any(Path(c).suffix.lower() in IMAGE_SUFFIXES for c in first)
    if looks_like_header:
        raise PipelineError(f"{manifest}: unrecognised header {','.join(rows[0])!r}; expected "
                            f"columns {EXPECTED} (a header is optional)")
    return {"path": 0, "label": 1, "split": 2}, False


def _resolve(manifest: object, tree: Tree, n: int, rel: str) -> tuple[str, PurePath]:
    """The row's id (as listed, normalised) and its file; leaving the root is an error."""
    root = tree.root
    listed = type(root)(os.path.normpath(root / rel))
    if not listed.is_relative_to(root) or not tree.inside(listed):
        how = "leaves the dataset root through a symlink" if listed.is_relative_to(root) \
            else "escapes the dataset root"
        raise PipelineError(f"{manifest}: row {n}: path {rel!r} {how} ({tree})")
    return listed.relative_to(root).as_posix(), listed


def _parse_row(manifest: object, n: int, row: list[str], cols: dict[str, int]
               ) -> tuple[str, str, str | None]:
    width = max(cols.values()) + 1
    if len(row) not in (2, 3) and len(row) != width:
        raise PipelineError(f"{manifest}: row {n} has {len(row)} columns; expected {EXPECTED}")
    cell = {k: (row[i].strip() if i < len(row) else "") for k, i in cols.items()}
    if not cell["path"]:
        raise PipelineError(f"{manifest}: row {n} has an empty path")
    if not cell["label"]:
        raise PipelineError(f"{manifest}: row {n} ({cell['path']}) has an empty label")
    raw = cell.get("split") or ""
    split = split_of_name(raw) if raw else None
    if raw and split is None:
        raise PipelineError(f"{manifest}: row {n}: unknown split {raw!r}; expected train, "
                            "validation (val, dev) or test")
    return cell["path"], cell["label"], split


def read_manifest(manifest: Path, hasher: Hasher | None = None) -> Dataset:
    """A dataset from a CSV manifest (see the module docstring); its files hashed by
    ``hasher`` (default: read here, nothing remembered)."""
    source = str(manifest.resolve())
    return read_rows(LocalTree(manifest.resolve().parent), source, manifest.stem,
                     _read_rows(manifest), hasher)


def read_rows(tree: Tree, manifest: str, name: str, rows: list[list[str]],
              hasher: Hasher | None = None) -> Dataset:
    """A dataset from the rows of the manifest ``manifest``, paths relative to ``tree``
    (the manifest's folder, here or under a URL)."""
    if not rows:
        raise PipelineError(f"{manifest}: empty manifest; expected rows {EXPECTED}")
    cols, header = _columns(manifest, rows)
    parsed, missing, seen = [], [], set()
    for n, row in enumerate(rows[1:] if header else rows, start=2 if header else 1):
        rel, label, split = _parse_row(manifest, n, row, cols)
        sid, path = _resolve(manifest, tree, n, rel)
        if sid in seen:
            raise PipelineError(f"{manifest}: {sid} is listed twice")
        seen.add(sid)
        if not tree.is_file(path):
            missing.append(rel)
            continue
        parsed.append((sid, path, label, split))
    if missing:
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        raise PipelineError(f"{manifest}: {len(missing)} listed files do not exist: "
                            f"{', '.join(missing[:3])}{more}")
    class_names = sorted({label for _, _, label, _ in parsed})
    shas = (hasher or Hasher()).hashes(manifest, [tree.stat(p) for _, p, _, _ in parsed])
    samples = [Sample(id=sid, path=tree.location(path), label=class_names.index(label),
                      sha256=sha, split=split)
               for (sid, path, label, split), sha in zip(parsed, shas, strict=True)]
    return Dataset(name=name, source=manifest, root=tree.location(tree.root),
                   class_names=class_names, samples=samples)
