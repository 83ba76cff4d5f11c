"""Speed-related behaviour of the heads stage: the thread budget of a sweep, the in-memory
dense-head training, the scalable forms of the superlinear kinds (small generated data)."""

from __future__ import annotations

import numpy as np
from joblib import Parallel, delayed

from pipeline.heads import threads
from pipeline.heads.registry import make_head


def test_plan_never_gives_more_busy_threads_than_cores(monkeypatch):
    for cores in (1, 2, 3, 8):
        monkeypatch.setattr(threads, "cpu_count", lambda c=cores: c)
        for jobs in (None, -1, 1, 2, 5, 64):
            for n_tasks in (1, 3, 20):
                for main_busy in (False, True):
                    workers, per = threads.plan(n_tasks, jobs, main_busy=main_busy)
                    assert 1 <= workers <= n_tasks and per >= 1
                    if cores > 1:
                        assert workers * per + int(main_busy) <= cores
                    else:
                        assert workers * per <= cores


def test_the_budget_holds_inside_each_worker():
    workers, per = threads.plan(4, None)
    probes = Parallel(n_jobs=workers, backend="loky")(
        delayed(threads.run_budgeted)(per, threads.probe) for _ in range(4))
    assert len({p["pid"] for p in probes}) <= workers
    for p in probes:
        assert p["budget"] == per
        assert p["pool_threads"] <= per
    assert workers * per <= threads.cpu_count()


def test_limited_threads_sets_estimator_jobs_and_restores():
    outside = threads.thread_budget()
    head = make_head("random_forest", {"n_estimators": 3}, n_classes=2)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.arange(40) % 2
    with threads.limited_threads(1):
        head.fit(x, y)
        assert head.pipeline.named_steps["model"].n_jobs == 1
        assert threads.probe()["pool_threads"] == 1
    assert threads.thread_budget() == outside


def test_a_sweep_worker_fits_within_its_share(tmp_path):
    """A random forest fitted by a sweep worker gets the worker's share as n_jobs."""
    from pipeline.heads.options import FitOptions
    from pipeline.heads.sweep import run_sweep
    from tests.helpers import make_cache

    cache = make_cache(tmp_path / "c.h5", n=60, d=6)
    result = run_sweep([cache], [{"kind": "random_forest", "n_estimators": [3, 4]},
                                 {"kind": "logreg"}], FitOptions())
    workers, per = threads.plan(3, None)
    for c in result.candidates:
        if c.config.kind == "random_forest":
            assert c.head.pipeline.named_steps["model"].n_jobs == per
    assert workers * per <= threads.cpu_count()
