"""Planning an extraction: one writer per base, and which rows each base still needs."""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.bases import Extractor, build_extractor, get_base
from pipeline.bases.runtimes import TENSORFLOW, RuntimeRequest, check_request
from pipeline.bases.weights import parse_weights
from pipeline.cache.info import ExtractionStats, FeatureSetInfo
from pipeline.cache.key import (
    cache_file_name,
    content_key,
    dataset_digest,
    dataset_identity,
    options_key,
)
from pipeline.cache.writer import FeatureSetWriter
from pipeline.context import Context
from pipeline.data.samples import Dataset, Sample
from pipeline.data.splits import per_class_counts
from pipeline.errors import PipelineError
from pipeline.extract.options import ExtractOptions
from pipeline.extract.result import ExtractResult
from pipeline.fileio import utc_timestamp


@dataclass
class BasePlan:
    """One base's part of an extraction: its extractor, its writer, what it still needs."""

    extractor: Extractor
    options_key: str
    writer: FeatureSetWriter
    #: The runtime asked for, and the one that ran (set when the feed opens it).
    request: RuntimeRequest = field(default_factory=RuntimeRequest)
    runtime: str = TENSORFLOW
    hit: bool = False
    #: Content hashes this base has no features for yet.
    todo: set[str] = field(default_factory=set)
    forward_seconds: float = 0.0

    @property
    def path(self) -> Path:
        return self.writer.path

    def prepare(self, samples: Sequence[Sample], digest: str) -> None:
        """A hit when the existing file holds these samples and passes its integrity checks
        (a file that fails is rebuilt, reusing nothing from it); otherwise load the rows
        already computed and list the missing ones. Call with the writer open (locked)."""
        info = self.writer.existing_info()
        if info is not None and info.samples_digest == digest and \
                self.writer.existing_is_whole():
            self.hit = True
            self.writer.clear_shards()  # a finished run's leftover work folder
            return
        self.writer.require_writable()
        self.writer.resume()
        self.todo = self.writer.missing(s.sha256 for s in samples)


def check_bases(bases: Sequence[str]) -> list[str]:
    """The base names, checked before any dataset is hashed (a typo costs nothing)."""
    bases = list(bases)
    if not bases:
        raise PipelineError("no base given; e.g. --base efficientnet_lite0")
    if len(set(bases)) != len(bases):
        raise PipelineError(f"a base is named twice in {bases}")
    for b in bases:
        get_base(b)
    return bases


def check_runtime(options: ExtractOptions) -> None:
    """A precision the runtime or this CPU cannot run, refused before any dataset is hashed."""
    check_request(options.runtime, options.precision)


def plan_bases(dataset: Dataset, bases: Sequence[str], options: ExtractOptions,
               ctx: Context) -> list[BasePlan]:
    """Build each base's extractor and the writer of its feature set."""
    weights = parse_weights(options.weights)
    identity = dataset_identity(dataset.source, dataset.options)
    plans = []
    for name in bases:
        ex = build_extractor(name, weights=weights, input_size=options.input_size,
                             layer=options.layer, pooling=options.pooling)
        okey = options_key(ex.key_options(), options.dtype, options.precision)
        path = ctx.cache_dir / cache_file_name(dataset.name, ex.spec.name, okey, identity)
        writer = FeatureSetWriter(path, feature_shape=ex.feature_shape, dtype=options.dtype,
                                  compression=options.compression, report=ctx.report)
        request = RuntimeRequest(runtime=options.runtime, precision=options.precision,
                                 batch_size=options.batch_size)
        plans.append(BasePlan(ex, okey, writer, request))
    return plans


def samples_digest(ds: Dataset) -> str:
    s = ds.samples
    return dataset_digest([x.id for x in s], [x.sha256 for x in s], [x.label for x in s],
                          [x.split for x in s], ds.class_names)


def feature_set_info(plan: BasePlan, ds: Dataset, rows: Sequence[Sample], digest: str,
                     result: ExtractResult, options: ExtractOptions) -> FeatureSetInfo:
    """The record of the feature set ``plan`` writes with ``rows``."""
    stats = ExtractionStats(
        new_rows=plan.writer.n_added, reused_rows=result.n_reused,
        seconds=round(result.seconds, 3), images_per_s=round(result.images_per_s, 2),
        forward_seconds=round(plan.forward_seconds, 3), batch_size=options.batch_size)
    return FeatureSetInfo.from_dict(dict(
        plan.extractor.describe(),
        class_names=list(ds.class_names), dataset=ds.name, dataset_source=ds.source,
        dataset_root=str(ds.root), dataset_options=dict(ds.options),
        dataset_identity=dataset_identity(ds.source, ds.options), dtype=options.dtype,
        runtime=plan.runtime, precision=options.precision,
        options_key=plan.options_key, key=content_key(plan.options_key, (s.sha256 for s in rows)),
        samples_digest=digest, split_fractions=list(options.split), split_seed=options.seed,
        split_origin=dict(ds.split_origin),
        split_class_counts=per_class_counts(rows, ds.class_names),
        versions=versions(), extracted_at=utc_timestamp(), extraction=stats,
        n_skipped=len(result.skipped)), strict=True)


def versions() -> dict[str, str]:
    out = {}
    for pkg in ("pipeline", "tensorflow-cpu", "tensorflow", "keras", "numpy", "h5py",
                "onnxruntime", "openvino", "tf2onnx"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[pkg] = importlib.metadata.version(pkg)
    return out
