"""The thread budget of a sweep: never more busy threads than cores.

A sweep runs its configurations in ``W`` workers (threads of one process inside one
:func:`limited_threads` block; worker processes use :func:`run_budgeted`). Each fit may start its
own threads: BLAS (OpenBLAS/MKL) in matrix products, OpenMP in histogram gradient boosting,
joblib threads in a random forest. Unchecked, two workers each running a two-thread BLAS on
two cores keep four threads busy, and every one of them slows down (worse than running fewer:
spinning BLAS threads wait on each other).

:func:`plan` splits the cores: ``workers * threads`` never exceeds :func:`cpu_count`. Inside
each worker :func:`limited_threads` caps the BLAS/OpenMP pools with ``threadpoolctl`` and
records the budget, which estimators with an ``n_jobs`` read through :func:`thread_budget`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_BUDGET: list[int] = []


def cpu_count() -> int:
    """Cores this process may run on (its CPU affinity where the OS reports it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_budget() -> int:
    """Threads one fit may use here: the innermost :func:`limited_threads`, else every core."""
    return _BUDGET[-1] if _BUDGET else cpu_count()


@contextmanager
def limited_threads(n: int) -> Iterator[None]:
    """Cap BLAS and OpenMP thread pools at ``n`` threads and make ``n`` the budget that
    :func:`thread_budget` reports (for estimators' ``n_jobs``), for the ``with`` block.

    The pools already loaded are capped with ``threadpoolctl``; the environment
    (:data:`THREAD_ENV`) is set too, so a library first loaded inside the block (scikit-learn
    imports its estimators, and their OpenMP runtime, on first use) starts within the budget.
    Both are restored afterwards.
    """
    from threadpoolctl import threadpool_limits

    n = max(1, int(n))
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update(dict.fromkeys(THREAD_ENV, str(n)))
    _BUDGET.append(n)
    try:
        with threadpool_limits(limits=n):
            yield
    finally:
        _BUDGET.pop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def plan(n_tasks: int, jobs: int | None) -> tuple[int, int]:
    """``(workers, threads per worker)`` for ``n_tasks`` parallel fits, with
    ``workers * threads <= cpu_count()``.

    ``jobs``: the requested workers (``None`` or ``-1``: one per core), capped at the cores
    and at ``n_tasks``; the cores are shared out evenly among the workers.
    """
    cores = cpu_count()
    want = cores if jobs is None or jobs < 0 else int(jobs)
    workers = max(1, min(want, cores, n_tasks))
    return workers, max(1, cores // workers)


#: Read by BLAS/OpenMP libraries when they load: a library a worker loads during a fit
#: (scikit-learn's OpenMP runtime, SciPy's BLAS) starts within the budget too.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def run_budgeted(threads: int, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` inside :func:`limited_threads` (what each sweep worker runs; the
    worker's environment is set to the budget for libraries it loads later)."""
    for name in THREAD_ENV:
        os.environ[name] = str(max(1, int(threads)))
    with limited_threads(threads):
        return fn(*args)


def probe() -> dict[str, int]:
    """The budget and the largest BLAS/OpenMP pool as this process sees them (diagnostics,
    and the tests' way to look inside a worker)."""
    from threadpoolctl import threadpool_info

    pools = [int(p.get("num_threads", 1)) for p in threadpool_info()]
    return {"budget": thread_budget(), "pool_threads": max(pools, default=1), "pid": os.getpid()}
