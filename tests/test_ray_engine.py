"""`pipeline extract --engine ray` on a real local Ray cluster (2 CPUs, fractional model
workers): the same file as the local engine, a killed model worker, a killed driver.

Skipped only where Ray is absent (install the `ray` extra). One cluster for the session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY, make_class_folder

ray = pytest.importorskip("ray")

from pipeline.cache import load_feature_set, verify_feature_set  # noqa: E402
from pipeline.engines import EngineOptions  # noqa: E402
from pipeline.engines.ray_engine import KILL_HOOK_ENV  # noqa: E402
from pipeline.extract import run_extraction  # noqa: E402

pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def cluster() -> str:
    """One local Ray cluster of 2 CPUs for every test here; its address."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """39 generated images and one broken one, last modified 10 minutes ago (files modified
    just now are not remembered by the hash cache)."""
    root = make_class_folder(tmp_path / "d", {"a": 20, "b": 19})
    (root / "b" / "broken.png").write_bytes(b"not a png at all")
    when = time.time() - 600
    for f in root.rglob("*"):
        os.utime(f, (when, when))
    return root


def same_file(a: Path, b: Path) -> None:
    x, y = load_feature_set(a), load_feature_set(b)
    assert list(x.ids) == list(y.ids) and list(x.sha256) == list(y.sha256)
    assert list(x.labels) == list(y.labels) and list(x.split) == list(y.split)
    assert x.skipped == y.skipped
    np.testing.assert_allclose(x.features, y.features, rtol=1e-5, atol=1e-5)


def ray_options(**kw) -> EngineOptions:
    return EngineOptions(engine="ray", **kw)


def test_ray_engine_writes_the_local_engines_file(cluster, data, tmp_path, capsys):
    local = run_extraction(data, cache_dir=tmp_path / "local", **TINY)[0]
    on_ray = run_extraction(data, cache_dir=tmp_path / "ray", engine=ray_options(workers=2),
                            **dict(TINY, quiet=False))[0]
    assert "ray: hashing 40 files" in capsys.readouterr().err  # hashed by Ray tasks
    assert on_ray.path.name == local.path.name and on_ray.n_new == 39
    assert [i for i, _ in on_ray.skipped] == ["b/broken.png"]
    same_file(local.path, on_ray.path)
    info = load_feature_set(on_ray.path).info
    assert info.engine["name"] == "ray" and info.engine["workers"] == 2
    assert info.engine["cpus_per_worker"] == 0.5 and info.engine["devices"] == "cpu"
    again = run_extraction(data, cache_dir=tmp_path / "ray", engine=ray_options(),
                           **dict(TINY, quiet=False))[0]
    assert again.hit and "hashing" not in capsys.readouterr().err  # the hash cache answered


def test_ray_tasks_hash_as_this_process_does(cluster, data):
    from pipeline.data.hash_cache import hash_files_here
    from pipeline.engines.ray_engine import hash_files
    from pipeline.errors import PipelineError
    from pipeline.progress import Reporter

    files = sorted(str(f) for f in data.rglob("*.png"))
    files += [f"file://{f}" for f in files[:3]]
    quiet = Reporter(quiet=True)
    assert hash_files(files, ray_options(), quiet) == hash_files_here(files)
    missing = [files[0], str(data / "a" / "gone.png")]
    with pytest.raises(PipelineError) as here:
        hash_files_here(missing)
    with pytest.raises(PipelineError) as on_ray:
        hash_files(missing, ray_options(), quiet)
    assert str(on_ray.value) == str(here.value) and "gone.png: cannot read" in str(here.value)


def test_a_file_url_dataset_on_ray_equals_the_local_folder_on_the_local_engine(cluster, data,
                                                                               tmp_path):
    local = run_extraction(data, cache_dir=tmp_path / "local", **TINY)[0]
    on_ray = run_extraction(f"file://{data}", cache_dir=tmp_path / "ray",
                            engine=ray_options(workers=1), **TINY)[0]
    assert [i for i, _ in on_ray.skipped] == ["b/broken.png"]
    same_file(local.path, on_ray.path)
    assert load_feature_set(on_ray.path).info.dataset_source == f"file://{data}"


def test_a_model_worker_killed_after_its_second_batch_is_replaced(cluster, data, tmp_path,
                                                                   monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_HOOK_ENV, f"2:{marker}")
    on_ray = run_extraction(data, cache_dir=tmp_path / "ray", engine=ray_options(workers=1),
                            **TINY)[0]
    assert marker.exists(), "the hook did not kill a worker"
    assert verify_feature_set(on_ray.path) == []  # no duplicate id
    monkeypatch.delenv(KILL_HOOK_ENV)
    local = run_extraction(data, cache_dir=tmp_path / "local", **TINY)[0]
    same_file(local.path, on_ray.path)  # no row missing, none twice


def test_a_killed_driver_leaves_shards_and_the_rerun_extracts_only_the_rest(cluster, data,
                                                                             tmp_path):
    work = tmp_path / "work"
    cmd = [sys.executable, "-m", "pipeline", "extract", str(data), "--base", "mobilenet_v2_0.35",
           "--weights", "none", "--input-size", "32", "--batch-size", "2", "--quiet",
           "--cache-dir", str(tmp_path / "ray"), "--engine", "ray", "--address", cluster,
           "--workers", "1", "--work-dir", f"file://{work}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900  # a loaded 2-core machine takes minutes to start workers
    while time.time() < deadline and proc.poll() is None and not list(work.glob("*/shard-*")):
        time.sleep(0.01)
    assert proc.poll() is None, f"the driver ended before a shard was committed: {proc.stderr}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shards = list(work.glob("*/shard-*.npz"))
    assert shards, "no shard was committed before the deadline"
    assert not list((tmp_path / "ray").glob("*.h5"))
    rerun = run_extraction(data, cache_dir=tmp_path / "ray", **TINY,
                           engine=ray_options(work_dir=f"file://{work}"))[0]
    assert rerun.n_reused >= 2 * len(shards) and rerun.n_new == 39 - rerun.n_reused
    local = run_extraction(data, cache_dir=tmp_path / "local", **TINY)[0]
    same_file(local.path, rerun.path)
    assert not list(work.glob("*/shard-*"))


def test_a_multi_node_cluster_refuses_a_local_work_folder_and_memory_urls():
    from pipeline.engines.ray_engine import (
        BaseJob,
        Sizing,
        refuse_local_data,
        refuse_local_work_dir,
    )
    from pipeline.errors import PipelineError

    def job(shards: str) -> BaseJob:
        return BaseJob("mobilenet_v2_0.35", None, 32, None, "avg", "w", "float32", shards)

    two_nodes, one_node = Sizing(4, 0.5, 0.0, 1, 2), Sizing(1, 0.5, 0.0, 1, 1)
    refuse_local_work_dir(one_node, [job("/tmp/x.work")])  # one machine: its disk is shared
    refuse_local_work_dir(two_nodes, [job("s3://bucket/x.work")])
    with pytest.raises(PipelineError, match="2 nodes but the work folder /tmp/x.work is local"):
        refuse_local_work_dir(two_nodes, [job("/tmp/x.work")])
    with pytest.raises(PipelineError, match="memory:// lives in one process"):
        refuse_local_work_dir(one_node, [job("memory://x.work")])
    refuse_local_data(1, ["/tmp/a.png", "file:///tmp/b.png"])  # one machine reads its files
    refuse_local_data(2, ["s3://bucket/a.png", "gs://bucket/b.png"])
    for local in ("/tmp/a.png", "file:///tmp/a.png"):
        with pytest.raises(PipelineError, match=f"2 nodes but the dataset file {local} is on"):
            refuse_local_data(2, ["s3://bucket/b.png", local])
