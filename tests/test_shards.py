"""Work shards and the streaming merge, without Ray: one shard format for every engine, the
plan of what is missing, and the final file merged from old rows and shards in bounded
memory (the same file a one-shot write gives)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.cache import FeatureSetInfo, FeatureSetWriter, load_feature_set, store
from pipeline.cache.store import open_feature_rows, verify_feature_set, write_feature_set
from pipeline.cache.work import WorkShards, shard_name

SHAPE = (3, 2, 4)  # a small spatial map


def sha(i: int) -> str:
    return f"{i:064x}"


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, *SHAPE)).astype(np.float32)


INFO = FeatureSetInfo(class_names=["a", "b"], base="fakenet")


@pytest.mark.parametrize("where", ["folder", "memory://bucket/run1/x.work"])
def test_shards_round_trip_and_a_retried_batch_overwrites_its_shard(tmp_path, where):
    shards = WorkShards(tmp_path / "x.work" if where == "folder" else where)
    x = rows(5)
    hashes = [sha(i) for i in (9, 3, 7, 5, 4)]
    name = shards.save(hashes, x)
    assert name == shard_name(hashes) and name.startswith(f"shard-{sha(3)[:16]}-{sha(9)[:16]}-5-")
    shards.save(hashes, x)  # a retried task: same rows, same name
    assert shards.names() == [name]
    got_hashes, got = shards.read(name)
    assert list(got_hashes) == hashes and np.array_equal(got, x) and got.dtype == np.float32
    assert [(n, list(h)) for n, h in shards.index()] == [(name, hashes)]
    shards.clear()
    assert shards.names() == []


def write_old(path: Path, ids: list[int]) -> np.ndarray:
    x = rows(len(ids), seed=1)
    write_feature_set(path, features=x, labels=[i % 2 for i in ids], ids=[f"old/{i}" for i in ids],
                      sha256=[sha(i) for i in ids], split=["train"] * len(ids), info=INFO)
    return x


def test_plan_is_what_neither_the_old_file_nor_committed_shards_hold(tmp_path):
    path = tmp_path / "set.h5"
    write_old(path, [1, 2, 3])
    w = FeatureSetWriter(path, feature_shape=SHAPE, dtype="float32")
    w.shards.save([sha(4), sha(5)], rows(2))
    (w.shards.path / "shard-broken-0-0.npz").write_bytes(b"half a shard")  # ignored
    with w:
        assert w.resume() == 5
        assert w.missing(sha(i) for i in range(1, 8)) == {sha(6), sha(7)}


def test_merge_streams_old_rows_and_shards_with_duplicates_and_skipped_files(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(store, "CHUNK_BYTES", 3 * 4 * int(np.prod(SHAPE)))  # 3 rows a chunk
    path = tmp_path / "set.h5"
    old = write_old(path, [8, 1, 6, 3])
    known = {sha(i): old[k] for k, i in enumerate([8, 1, 6, 3])}
    with FeatureSetWriter(path, feature_shape=SHAPE, dtype="float32") as w:
        w.resume()
        for hashes in ([sha(9), sha(2)], [sha(5), sha(6)], [sha(4), sha(7), sha(0)]):
            x = rows(len(hashes), seed=len(known))
            w.add(hashes, x)  # sha(6) is also in the old file: one of them is kept
            known.update((h, v) for h, v in zip(hashes, x, strict=True) if h not in known)
        # 12 samples in their own order, two with the same content; sha(8) is no longer used
        order = [7, 0, 3, 3, 5, 1, 9, 2, 6, 4, 0, 1]
        w.finalize(ids=[f"s{k}" for k in range(12)], sha256=[sha(i) for i in order],
                   labels=[i % 2 for i in order], split=["train"] * 12, info=INFO,
                   skipped=[("broken.png", "not an image")])
    fs = load_feature_set(path)
    assert list(fs.sha256) == [sha(i) for i in order] and fs.skipped == [("broken.png",
                                                                          "not an image")]
    assert np.array_equal(fs.features, np.stack([known[sha(i)] for i in order]))
    assert verify_feature_set(path) == [] and not w.shards.path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".set.lock", "set.h5"]  # no staging


def test_merged_file_equals_a_one_shot_write_of_the_same_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "CHUNK_BYTES", 5 * 4 * int(np.prod(SHAPE)))
    x, hashes = rows(23, seed=4), [sha(i) for i in range(23)]
    ids, labels, split = [f"i{k}" for k in range(23)], [k % 2 for k in range(23)], \
        ["train", "validation", "test"] * 7 + ["train", "train"]
    one = write_feature_set(tmp_path / "one.h5", features=x, labels=labels, ids=ids,
                            sha256=hashes, split=split, info=INFO)
    merged = tmp_path / "merged.h5"
    with FeatureSetWriter(merged, feature_shape=SHAPE, dtype="float32") as w:
        w.resume()
        for k in (12, 0, 20, 8, 4, 16):  # shards out of order
            w.add(hashes[k:k + 4], x[k:k + 4])
        w.add(hashes[:1], x[:1])
        w.finalize(ids=ids, sha256=hashes, labels=labels, split=split, info=INFO)
    a, b = open_feature_rows(one), open_feature_rows(merged)
    assert a.info.features_sha256 == b.info.features_sha256
    assert a.info.rows_digest == b.info.rows_digest and a.info.n_samples == 23
    assert np.array_equal(load_feature_set(one).features, load_feature_set(merged).features)


def test_chunked_reads_give_the_rows_of_a_split_a_chunk_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "CHUNK_BYTES", 4 * 4 * int(np.prod(SHAPE)))
    x = rows(10)
    split = ["train", "test"] * 5
    write_feature_set(tmp_path / "s.h5", features=x, labels=[0] * 10, split=split,
                      ids=[str(k) for k in range(10)], sha256=[sha(k) for k in range(10)],
                      info=INFO)
    fr = open_feature_rows(tmp_path / "s.h5")
    got = list(fr.chunks(fr.mask("train"), flatten=True))
    assert [len(i) for i, _ in got] == [2, 2, 1]
    assert np.array_equal(np.concatenate([c for _, c in got]), x[::2].reshape(5, -1))


def test_engine_options_come_from_flags_env_and_the_toml_engine_table(monkeypatch):
    from pipeline.engines import EngineOptions
    from pipeline.errors import PipelineError
    from pipeline.experiment import parse_experiment

    monkeypatch.setenv("PIPELINE_ENGINE", "ray")
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert EngineOptions.from_env() == EngineOptions(engine="ray", address="auto")
    assert EngineOptions.from_env({"engine": "local", "workers": None}).engine == "local"
    doc = {"data": "elpv", "bases": ["fakenet"],
           "engine": {"workers": 3, "cpus_per_worker": 0.5, "work_dir": "s3://b/w"}}
    engine = parse_experiment(doc).engine
    assert engine == EngineOptions(engine="ray", address="auto", workers=3,
                                   cpus_per_worker=0.5, work_dir="s3://b/w")
    with pytest.raises(PipelineError, match="workerz"):
        parse_experiment(dict(doc, engine={"workerz": 2}))
    with pytest.raises(PipelineError, match="engine"):
        EngineOptions.from_env({"engine": "spark"})


def test_the_local_engine_keeps_its_shards_under_a_work_dir_url_and_resumes_from_them(
        tmp_path, monkeypatch):
    from helpers import TINY, make_class_folder

    from pipeline.cache.work import WorkShards as Shards
    from pipeline.engines import EngineOptions
    from pipeline.errors import PipelineError
    from pipeline.extract import run_extraction

    data = make_class_folder(tmp_path / "d", {"a": 6, "b": 6})
    work = f"file://{tmp_path / 'work'}"
    saves = []
    original = Shards.save

    def save_twice_then_fail(self, sha256, features):
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        saves.append(original(self, sha256, features))
        return saves[-1]

    monkeypatch.setattr(Shards, "save", save_twice_then_fail)
    opts = dict(TINY, batch_size=4, engine=EngineOptions(work_dir=work))
    with pytest.raises(PipelineError, match="No space left"):
        run_extraction(data, **opts)
    assert len(list((tmp_path / "work").glob("*.work/shard-*.npz"))) == 2
    monkeypatch.setattr(Shards, "save", original)
    resumed = run_extraction(data, **opts)[0]
    assert resumed.n_reused == 8 and resumed.n_new == 4
    assert verify_feature_set(resumed.path) == [] and not list((tmp_path / "work").glob("*/*"))
