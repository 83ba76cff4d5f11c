"""The feature cache on its own: the record, old files, cache keys and the writer."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import pytest

from pipeline.cache import (
    SCHEMA_VERSION,
    ExtractionStats,
    FeatureSetInfo,
    FeatureSetWriter,
    load_feature_set,
    read_info,
    read_meta,
    verify_feature_set,
    write_feature_set,
)
from pipeline.cache.key import content_key, dataset_digest, options_key
from pipeline.errors import PipelineError
from pipeline.fileio import file_lock

SHAS = [f"{i:064x}" for i in range(6)]
IDS = [f"{'ab'[i % 2]}/img{i}.png" for i in range(6)]
LABELS = [i % 2 for i in range(6)]
SPLIT = ["train", "train", "validation", "test", "train", "test"]


def full_info(**changes) -> FeatureSetInfo:
    """A record with every field an extraction fills in."""
    info = FeatureSetInfo(
        class_names=["a", "b"], dataset="toy", dataset_source="/data/toy",
        dataset_root="/data/toy", dataset_options={"elpv_levels": False}, base="fakenet",
        weights="none", weights_id="c" * 64, weights_source="nowhere", layer=None,
        pooling="avg", input_size=32, preprocessing="affine(...)", resize="bilinear",
        dtype="float32", options_key="d" * 64, key="e" * 64, samples_digest="f" * 64,
        split_fractions=[0.7, 0.15, 0.15], split_seed=0, versions={"numpy": "2"},
        extracted_at="2026-11-25T22:00:00Z",
        extraction=ExtractionStats(new_rows=6, seconds=1.5, images_per_s=4.0, batch_size=8),
        n_skipped=1)
    return info.replace(**changes)


def features(n: int = 6, d: int = 4) -> np.ndarray:
    return np.arange(n * d, dtype=np.float32).reshape(n, d)


def write_toy(path: Path, info: FeatureSetInfo | None = None) -> Path:
    return write_feature_set(path, features=features(), labels=LABELS, ids=IDS, sha256=SHAS,
                             split=SPLIT, info=info or full_info(),
                             skipped=[("a/broken.png", "empty file")])


# -- the record ---------------------------------------------------------------------------
def test_record_round_trips_through_the_file(tmp_path):
    info = full_info()
    path = write_toy(tmp_path / "toy.h5", info)
    got = read_info(path)
    filled = info.replace(n_samples=6, feature_shape=[4], dtype="float32",
                          features_sha256=got.features_sha256, rows_digest=got.rows_digest)
    assert got == filled and got.schema_version == SCHEMA_VERSION
    assert FeatureSetInfo.from_dict(json.loads(json.dumps(got.to_dict()))) == got
    fs = load_feature_set(path)
    assert fs.info == got and fs.class_names == ["a", "b"]
    assert read_meta(path) == got.to_dict() == dict(fs.meta)
    assert fs.meta["extraction"]["batch_size"] == 8
    with pytest.raises(TypeError):
        fs.meta["key"] = "changed"  # a view: the record is changed by writing a new one
    assert verify_feature_set(path) == []


def test_meta_dicts_still_write_and_unknown_fields_are_refused(tmp_path):
    path = write_feature_set(tmp_path / "m.h5", features=features(), labels=LABELS, ids=IDS,
                             sha256=SHAS, split=SPLIT, meta={"class_names": ["a", "b"],
                                                             "base": "fakenet"})
    fs = load_feature_set(path)
    assert fs.info.base == "fakenet" and fs.meta["key"] is None
    # what heads tests do: rewrite a set with its own meta
    write_feature_set(path, features=fs.features + 1, labels=fs.labels, ids=list(fs.ids),
                      sha256=list(fs.sha256), split=list(fs.split), meta=fs.meta)
    assert verify_feature_set(path) == []
    with pytest.raises(ValueError, match="unknown feature-set metadata fields"):
        write_feature_set(tmp_path / "x.h5", features=features(), labels=LABELS, ids=IDS,
                          sha256=SHAS, split=SPLIT, meta={"class_names": ["a"], "colour": 1})
    with pytest.raises(ValueError, match="class_names"):
        write_feature_set(tmp_path / "x.h5", features=features(), labels=LABELS, ids=IDS,
                          sha256=SHAS, split=SPLIT, meta={"base": "fakenet"})


def write_previous_format(path: Path, meta: dict) -> Path:
    """A feature set exactly as the writer before the record wrote it (format version 1:
    free ``attrs["meta"]`` JSON)."""
    x = features()
    meta = dict(meta, format_version=1, n_samples=len(x), feature_shape=list(x.shape[1:]),
                dtype=str(x.dtype),
                features_sha256=hashlib.sha256(x.tobytes()).hexdigest())
    with h5py.File(path, "w") as f:
        f.create_dataset("features", data=x)
        strings = h5py.string_dtype("utf-8")
        f.create_dataset("ids", data=np.array(IDS, dtype=object), dtype=strings)
        f.create_dataset("sha256", data=np.array(SHAS, dtype="S64"))
        f.create_dataset("labels", data=np.asarray(LABELS, dtype=np.int32))
        f.create_dataset("split", data=np.array(SPLIT, dtype="S10"))
        g = f.create_group("skipped")
        g.create_dataset("ids", data=np.array([], dtype=object), dtype=strings)
        g.create_dataset("reasons", data=np.array([], dtype=object), dtype=strings)
        f.attrs["meta"] = json.dumps(meta, sort_keys=True)
        for key in ("base", "pooling", "layer", "input_size", "key", "format_version"):
            if meta.get(key) is not None:
                f.attrs[key] = meta[key]
    return path


def test_previous_format_files_are_migrated_on_read(tmp_path):
    old = full_info().to_dict()
    del old["schema_version"]
    old["extracted_at"] = "2026-11-20T10:00:00+00:00"  # the old writer's timestamp
    old["retired_field"] = "ignored"
    path = write_previous_format(tmp_path / "old.h5", old)
    info = read_info(path)
    assert info.schema_version == SCHEMA_VERSION and info.format_version == 1
    assert info.extraction == ExtractionStats(new_rows=6, seconds=1.5, images_per_s=4.0,
                                              batch_size=8)
    assert info.key == "e" * 64 and info.class_names == ["a", "b"]
    fs = load_feature_set(path)
    assert fs.info == info and list(fs.ids) == IDS
    assert verify_feature_set(path) == []


@pytest.mark.parametrize("attrs", [
    {"info": json.dumps({"class_names": ["a"], "schema_version": SCHEMA_VERSION + 1})},
    {"info": "{not json"},
    {"meta": json.dumps({"base": "fakenet"})},  # previous format without class names
])
def test_unreadable_records_are_refused_in_one_line_saying_how_to_rebuild(tmp_path, attrs):
    path = write_toy(tmp_path / "bad.h5")
    with h5py.File(path, "r+") as f:
        del f.attrs["info"]
        for k, v in attrs.items():
            f.attrs[k] = v
    with pytest.raises(PipelineError) as e:
        read_info(path)
    assert "\n" not in str(e.value) and "pipeline extract" in str(e.value)


# -- keys: the same bytes as before the shared helpers -------------------------------------
def test_cache_keys_are_unchanged():
    extractor = {"base": "mobilenet_v2_0.35", "weights_id": "ab" * 32, "layer": None,
                 "pooling": "avg", "input_size": 32, "resize": "bilinear",
                 "preprocessing": "affine(order=0,1,2;scale=0.0078431377,0.0078431377,"
                                  "0.0078431377;offset=-1,-1,-1)"}
    assert options_key(extractor, "float32") == \
        "40249d29497c8419324016a2628553bce0e9d7e855e55f6a9262257b7320ca6a"
    assert content_key("x" * 64, ["b" * 64, "a" * 64]) == \
        "c5cf025942af85b234f626b9a4ead03ae1b468ae749a9cc83db1bc303fb38ee6"
    assert dataset_digest(["c/é.png", "d/1.png"], ["a" * 64, "b" * 64], [0, 1],
                          ["train", "test"], ["c", "d"]) == \
        "6db975d2ecdd000c8cdec845e44cc6fbbc9e5e9c3da1fbb678a10f33d41eb6fa"
    # The arrays a loaded cache holds (numpy strings and integers) digest the same.
    assert dataset_digest(np.array(["c/é.png", "d/1.png"]), np.array(["a" * 64, "b" * 64]),
                          np.array([0, 1], dtype=np.int64), np.array(["train", "test"]),
                          ["c", "d"]) == \
        "6db975d2ecdd000c8cdec845e44cc6fbbc9e5e9c3da1fbb678a10f33d41eb6fa"


# -- the writer ---------------------------------------------------------------------------
def writer(path: Path) -> FeatureSetWriter:
    return FeatureSetWriter(path, feature_shape=(4,), dtype="float32")


def finalize(w: FeatureSetWriter, info: FeatureSetInfo | None = None) -> Path:
    return w.finalize(ids=IDS, sha256=SHAS, labels=LABELS, split=SPLIT,
                      info=info or full_info())


def test_writer_resumes_from_the_shards_of_an_interrupted_run(tmp_path):
    path = tmp_path / "set.h5"
    x = features()
    with pytest.raises(KeyboardInterrupt), writer(path) as w:
        assert w.resume() == 0 and w.missing(SHAS) == set(SHAS)
        w.add(SHAS[:2], x[:2])
        w.add(SHAS[2:4], x[2:4])
        raise KeyboardInterrupt  # killed before the last batch
    assert not path.exists() and len(list(w.shards.path.glob("shard-*.npz"))) == 2
    with writer(path) as w2:
        assert w2.resume() == 4 and w2.missing(SHAS) == set(SHAS[4:])
        w2.add(SHAS[4:], x[4:].astype(np.float64))  # cast to the writer's dtype
        assert w2.n_added == 2
        finalize(w2)
    fs = load_feature_set(path)
    np.testing.assert_array_equal(fs.features, x)
    assert list(fs.sha256) == SHAS and fs.features.dtype == np.float32
    assert not w2.shards.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".set.lock", "set.h5"]
    with writer(path) as w3:  # a finished set: its rows are reused, its record read
        assert w3.existing_info().n_samples == 6 and w3.resume() == 6


class WatchedInfo(FeatureSetInfo):
    """A record that notes, while it is being written, what is under the final name."""

    final: ClassVar[Path]
    seen: ClassVar[list[bool]] = []

    def write(self, f: h5py.File) -> None:
        WatchedInfo.seen.append(WatchedInfo.final.exists())
        super().write(f)


def test_finalize_is_atomic(tmp_path):
    path = tmp_path / "set.h5"
    with writer(path) as w:
        w.add(SHAS[:5], features()[:5])
        with pytest.raises(ValueError, match="1 rows have no features"):
            finalize(w)
        assert not path.exists() and w.shards.path.is_dir()  # nothing lost, nothing shown
        w.add(SHAS[5:], features()[5:])
        WatchedInfo.final, WatchedInfo.seen = path, []
        finalize(w, WatchedInfo(**full_info().__dict__))
    assert WatchedInfo.seen == [False] and path.exists()
    assert not list(tmp_path.glob(".set.h5.*"))  # no temporary file left behind


def test_writer_holds_the_lock_and_checks_its_batches(tmp_path):
    path = tmp_path / "set.h5"
    w = writer(path)
    with pytest.raises(RuntimeError, match="context manager"):
        w.add(SHAS[:1], features()[:1])
    with w:
        with file_lock(w.lock_path, blocking=False) as taken:
            assert not taken  # a second extraction of this cache would wait
        with pytest.raises(ValueError, match="expected rows of shape"):
            w.add(SHAS[:2], np.zeros((2, 5), np.float32))
    with file_lock(w.lock_path, blocking=False) as taken:
        assert taken
