"""The local engine: decode each needed image once, run every base that needs it, and feed
the finished batches to the bases' writers."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.data.samples import Sample
from pipeline.extract.plan import BasePlan
from pipeline.progress import Reporter

Forward = Callable[[np.ndarray], np.ndarray]


@dataclass
class FeedRun:
    """What feeding found: undecodable files (by content hash) and the wall time."""

    skipped: dict[str, str] = field(default_factory=dict)  # sha256 -> reason
    seconds: float = 0.0


def decode_order(samples: Sequence[Sample], plans: Sequence[BasePlan]) -> list[int]:
    """Sample indices to decode: one per distinct content some base still needs."""
    needed: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.sha256 not in needed and any(s.sha256 in p.todo for p in plans):
            needed[s.sha256] = i
    return sorted(needed.values())


def feed_missing(samples: Sequence[Sample], plans: Sequence[BasePlan], batch_size: int,
                 report: Reporter) -> FeedRun:
    """Extract every row some base still needs and add it to that base's writer."""
    run = FeedRun()
    start = time.perf_counter()
    order = decode_order(samples, plans)
    if order:
        from pipeline.data.reader import read_batches

        busy = [(p, _open_runtime(p, report)) for p in plans if p.todo]
        sizes = sorted({p.extractor.input_size for p in plans})
        report.line(f"extracting {len(order)} images with "
                    f"{', '.join(f'{p.extractor.spec.name} ({p.runtime})' for p, _ in busy)}")

        def on_error(j: int, reason: str) -> None:
            run.skipped[samples[order[j]].sha256] = reason

        paths = [str(samples[i].path) for i in order]
        with report.progress(len(order)) as bar:
            for index, ok, images in read_batches(paths, sizes, batch_size, on_error):
                shas = [samples[order[j]].sha256 for j in index]
                for plan, fn in busy:
                    at_size = images[sizes.index(plan.extractor.input_size)]
                    _feed(plan, fn, shas, ok, at_size)
                bar.advance(len(index))
    run.seconds = time.perf_counter() - start
    return run


def _open_runtime(plan: BasePlan, report: Reporter) -> Forward:
    """The forward pass of the plan's runtime (TensorFlow, ONNX Runtime or OpenVINO; auto
    picks one), its name kept on the plan for the feature set's record."""
    from pipeline.bases.runtimes import open_runtime  # frameworks: loaded only to compute

    request = dataclasses.replace(plan.request, n_images=len(plan.todo))
    runtime = open_runtime(plan.extractor, request, report)
    plan.runtime = runtime.name
    return runtime.forward


def _feed(plan: BasePlan, fn: Forward, shas: list[str], ok: np.ndarray,
          images: np.ndarray) -> None:
    want = np.array([bool(ok[k]) and shas[k] in plan.todo for k in range(len(shas))])
    if not want.any():
        return
    t0 = time.perf_counter()
    features = np.asarray(fn(images[want]))
    plan.forward_seconds += time.perf_counter() - t0
    # The writer saves the shard in the background, overlapping the next batch's compute.
    plan.writer.add([s for s, w in zip(shas, want, strict=True) if w], features)
