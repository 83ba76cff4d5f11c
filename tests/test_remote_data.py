"""Datasets under an fsspec URL (``file://`` here: no network): the same layout rules,
refusals and warnings as a local folder, the hash cache keyed on the listing, and both
engines' decoders reading through fsspec."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, make_class_folder, make_image

from pipeline.cache import load_feature_set
from pipeline.data.hash_cache import HashCache, Hasher
from pipeline.data.remote import stamp_of
from pipeline.data.sources import load_dataset
from pipeline.errors import PipelineError
from pipeline.extract import run_extraction

pytest.importorskip("fsspec")


def url(root: Path) -> str:
    return f"file://{root.resolve()}"


def rows(ds) -> list[tuple]:
    return [(s.id, s.label, s.sha256, s.split) for s in ds.samples]


def backdate(root: Path) -> None:
    when = time.time() - 600
    for f in root.rglob("*"):
        os.utime(f, (when, when))


def test_a_file_url_reads_as_the_local_folder(tmp_path):
    root = tmp_path / "d"
    make_class_folder(root / "train", {"a": 6, "b": 5})
    make_class_folder(root / "Test", {"a": 3, "b": 3}, start_seed=50)
    make_class_folder(root / "extra", {"a": 2}, start_seed=90)  # stray: warned, ignored
    (root / "train" / "a" / ".hidden.png").write_bytes(b"x")
    (root / "train" / "b" / "notes.txt").write_text("x")
    (root / "train" / "b" / "broken.png").write_bytes(b"not an image")
    local, remote = load_dataset(root), load_dataset(url(root))
    assert rows(remote) == rows(local) and len(local.samples) == 18
    assert remote.class_names == local.class_names and remote.split_origin == local.split_origin
    assert [w.replace(url(root), str(root.resolve())) for w in remote.warnings] == \
        local.warnings
    assert "ignored folder(s) extra/" in local.warnings[0]
    assert remote.source == url(root) and str(remote.samples[0].path).startswith("file:///")


def _nested(root: Path) -> None:
    make_image(root / "a" / "sub" / "x.png", 1)
    make_image(root / "b" / "y.png", 2)


def _loose_in_split(root: Path) -> None:
    make_class_folder(root / "train", {"a": 2, "b": 2})
    make_image(root / "test" / "x.png", 3)


def _no_train(root: Path) -> None:
    make_class_folder(root / "val", {"a": 2, "b": 2})
    make_class_folder(root / "test", {"a": 2, "b": 2}, start_seed=9)


def _two_train(root: Path) -> None:
    make_class_folder(root / "train", {"a": 2, "b": 2})
    make_class_folder(root / "training", {"a": 2, "b": 2}, start_seed=9)


def _link_out(root: Path) -> None:
    make_class_folder(root, {"a": 2, "b": 2})
    outside = make_image(root.parent / "outside.png", 7)
    (root / "a" / "link.png").symlink_to(outside)


def _one_class(root: Path) -> None:
    make_class_folder(root, {"a": 3})


@pytest.mark.parametrize("layout", [_nested, _loose_in_split, _no_train, _two_train, _link_out,
                                    _one_class])
def test_a_file_url_is_refused_as_the_local_folder_is(tmp_path, layout):
    root = tmp_path / "d"
    layout(root)
    with pytest.raises(PipelineError) as local:
        load_dataset(root)
    with pytest.raises(PipelineError) as remote:
        load_dataset(url(root))
    assert str(remote.value).replace(url(root), str(root.resolve())) == str(local.value)


def test_a_missing_url_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="no such folder"):
        load_dataset(url(tmp_path / "nothing"))
    (tmp_path / "d").mkdir()
    with pytest.raises(PipelineError, match="cannot read CSV manifest"):
        load_dataset(url(tmp_path / "d" / "m.csv"))


def test_a_csv_manifest_under_a_url_reads_as_the_local_one(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 5, "b": 5})
    files = sorted(root.rglob("*.png"))
    lines = ["file,class,split"] + [f"{f.relative_to(root).as_posix()},{f.parent.name},"
                                    f"{'test' if i % 4 == 0 else 'train'}"
                                    for i, f in enumerate(files)]
    (root / "m.csv").write_text("\n".join(lines) + "\n")
    local, remote = load_dataset(root / "m.csv"), load_dataset(url(root / "m.csv"))
    assert rows(remote) == rows(local) and len(rows(local)) == 10
    assert remote.split_origin == local.split_origin and remote.source == url(root / "m.csv")
    outside = make_image(tmp_path / "outside.png", 5)
    (root / "a" / "link.png").symlink_to(outside)
    for extra in ("a/gone.png,a", "../outside.png,a", "a/link.png,a"):
        (root / "bad.csv").write_text("\n".join(lines + [extra + ",train"]) + "\n")
        with pytest.raises(PipelineError) as here:
            load_dataset(root / "bad.csv")
        with pytest.raises(PipelineError) as there:
            load_dataset(url(root / "bad.csv"))
        assert str(there.value).replace(url(root), str(root.resolve())) == str(here.value)


def test_the_hash_cache_keys_urls_on_their_listing(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 4, "b": 4})
    backdate(root)

    def hashed() -> tuple[Hasher, list[tuple]]:
        hasher = Hasher(HashCache(tmp_path / "hc"))
        return hasher, rows(load_dataset(url(root), hasher=hasher))

    first, shas = hashed()
    again, same = hashed()
    assert (first.read, again.read, again.remembered) == (8, 0, 8)
    assert same == shas == rows(load_dataset(root))
    make_image(root / "a" / "img000.png", 77)
    backdate(root / "a" / "img000.png")
    changed, now = hashed()
    assert changed.read == 1 and now == rows(load_dataset(root))


def test_stamps_prefer_content_ids_and_distrust_fresh_times():
    now = time.time()
    assert stamp_of({"ETag": '"abc"', "mtime": now}) == ('ETag="abc"', False)
    assert stamp_of({"generation": 7}) == ("generation=7", False)
    assert stamp_of({"mtime": now - 60, "ino": 5}) == (f"mtime={now - 60!r}:ino=5", False)
    assert stamp_of({"mtime": now})[1] is True  # modified just now: not remembered
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert stamp_of({"LastModified": old})[1] is False
    assert stamp_of({"size": 3}) == (None, False)  # nothing to key on: always hashed


def test_the_local_engine_extracts_a_file_url_as_the_local_folder(tmp_path):
    root = make_class_folder(tmp_path / "d", {"a": 6, "b": 6})
    (root / "b" / "broken.png").write_bytes(b"not an image")
    here = run_extraction(root, cache_dir=tmp_path / "c1", **TINY)[0]
    there = run_extraction(url(root), cache_dir=tmp_path / "c2", **TINY)[0]
    assert there.skipped == here.skipped == [("b/broken.png", there.skipped[0][1])]
    a, b = load_feature_set(here.path), load_feature_set(there.path)
    assert list(a.ids) == list(b.ids) and list(a.split) == list(b.split)
    assert list(a.labels) == list(b.labels) and list(a.sha256) == list(b.sha256)
    np.testing.assert_allclose(a.features, b.features, rtol=1e-6, atol=1e-6)
    assert b.info.dataset_root == url(root)
    assert run_extraction(url(root), cache_dir=tmp_path / "c2", **TINY)[0].hit


def test_a_parquet_manifest_reads_as_the_csv_one_here_and_under_a_url(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = make_class_folder(tmp_path / "d", {"a": 4, "b": 4})
    files = sorted(f.relative_to(root).as_posix() for f in root.rglob("*.png"))
    cells = {"image": files, "category": [f.split("/")[0] for f in files],
             "split": ["train", "val", "test", None] * 2}
    pq.write_table(pa.table(cells), root / "m.parquet")
    (root / "m.csv").write_text("\n".join(
        ["image,category,split"] + [",".join(c or "" for c in row) for row in
                                    zip(*cells.values(), strict=True)]) + "\n")
    as_csv = rows(load_dataset(root / "m.csv"))
    assert rows(load_dataset(root / "m.parquet")) == as_csv
    assert rows(load_dataset(url(root / "m.parquet"))) == as_csv
    pq.write_table(pa.table({"image": files, "category": [None] * len(files)}),
                   root / "bad.parquet")
    with pytest.raises(PipelineError, match="row 2 .* has an empty label"):
        load_dataset(root / "bad.parquet")
    (root / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(PipelineError, match="cannot read Parquet manifest"):
        load_dataset(root / "broken.parquet")


def test_fine_tuning_reads_and_verifies_a_url_datasets_images(tmp_path):
    from pipeline.finetune.data import check_dataset, image_paths, load_splits

    root = make_class_folder(tmp_path / "d", {"a": 6, "b": 6})
    fs = load_feature_set(run_extraction(url(root), cache_dir=tmp_path / "c", **TINY)[0].path)
    paths = image_paths(fs)
    assert paths[0] == f"{url(root)}/{fs.ids[0]}"
    splits = load_splits(fs, size=32)
    assert sum(len(s.ids) for s in splits.values()) == len(fs.ids)
    make_image(root / str(fs.ids[0]), seed=99, fmt="PNG")
    with pytest.raises(PipelineError, match="1 of 12 images .*changed"):
        check_dataset(fs, paths)
