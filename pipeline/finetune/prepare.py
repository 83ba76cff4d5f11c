"""Preparing a fine-tuning run: everything decided and loaded before the first epoch.

:func:`prepare` loads the head run's head (hash-verified; it must fold into Keras layers),
opens its feature cache, rebuilds base + head as one Keras model, unfreezes the requested top
of the base, checks every image against the cache's hashes, reads the cache's splits, and
compares the rebuilt model with the head on validation before any training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.fileio import json_sha256
from pipeline.finetune.augment import Augmentation
from pipeline.finetune.data import (
    SplitData,
    check_dataset,
    image_paths,
    load_run_cache,
    load_splits,
)
from pipeline.finetune.evaluate import predict_proba
from pipeline.finetune.model import Rebuilt, find_base, rebuild_classifier
from pipeline.finetune.options import FinetuneOptions
from pipeline.finetune.source import RunRef
from pipeline.finetune.unfreeze import Unfrozen, unfreeze
from pipeline.heads.metrics import classification_metrics
from pipeline.heads.registry import finetunable_kinds
from pipeline.runs.record import CacheRef
from pipeline.runs.store import LoadedHead, load_head

if TYPE_CHECKING:
    from pipeline.cache import FeatureSet
    from pipeline.context import Context
    from pipeline.progress import Reporter

#: Largest difference on validation between the rebuilt model and the head that passes
#: without a warning (it is ~1e-6 when the rebuild is right).
MAX_INITIAL_DIFF = 1e-3


@dataclass
class Prepared:
    """A fine-tuning run ready to train: the source run, resolved options, the rebuilt model
    and the data, and the rebuilt model's validation scores before training."""

    src: RunRef
    options: FinetuneOptions  # class_weight resolved (the head's own when not given)
    augmentation: Augmentation
    loaded: LoadedHead
    features: FeatureSet
    rebuilt: Rebuilt
    unfrozen: Unfrozen
    settings: dict[str, Any]  # what makes two runs the same run (``digest``); recorded
    digest: str
    splits: dict[str, SplitData]
    initial: dict[str, Any]  # validation metrics before training
    initial_max_abs_diff: float

    @property
    def classifier(self) -> Any:
        return self.rebuilt.classifier

    @property
    def cache_info(self) -> CacheRef:
        return self.src.record.cache

    @property
    def n_classes(self) -> int:
        return len(self.rebuilt.class_names)


def prepare(src: RunRef, options: FinetuneOptions, ctx: Context) -> Prepared:
    """Load, rebuild, unfreeze, verify and read everything a run of ``src`` needs."""
    loaded = load_foldable_head(src)
    if options.class_weight is None:
        options = options.replace(class_weight=loaded.params.get("class_weight", "none"))
    fs = load_run_cache(src.record.cache)
    rebuilt = rebuild_classifier(src.record.cache, loaded)
    unfrozen = unfreeze(find_base(rebuilt.classifier), options.unfreeze_spec)
    aug = options.augmentation
    settings = run_settings(src, fs.info.key, options)
    ctx.report.line(f"fine-tuning {src.run_id}: {rebuilt.base_name} + {loaded.kind} head "
                    f"({rebuilt.folded.how}); {unfrozen.describe()}; augmentation "
                    f"{aug.describe()}")
    check_dataset(fs, image_paths(fs))
    ctx.report.line(f"reading {len(fs)} images at {rebuilt.input_size} px "
                    f"(train/validation/test as in the cache)")
    splits = load_splits(fs, rebuilt.input_size, batch_size=32, verify=False)
    initial, diff = _initial_validation(loaded, fs, rebuilt.classifier, splits, ctx.report)
    return Prepared(src=src, options=options, augmentation=aug, loaded=loaded, features=fs,
                    rebuilt=rebuilt, unfrozen=unfrozen, settings=settings,
                    digest=json_sha256(settings), splits=splits, initial=initial,
                    initial_max_abs_diff=diff)


def load_foldable_head(src: RunRef) -> LoadedHead:
    """The run's head, refused unless its kind can be fine-tuned (trained through as Keras
    layers; declared on its HeadSpec)."""
    loaded = load_head(src.run_dir)
    finetunable = finetunable_kinds()
    if loaded.kind not in finetunable:
        raise PipelineError(
            f"fine-tuning run {src.run_id}: a {loaded.kind!r} head cannot be trained through as "
            f"Keras layers, so it cannot be fine-tuned; fine-tune a run of one of: "
            f"{', '.join(finetunable)} (e.g. `pipeline fit-head CACHE --head logreg`)")
    return loaded


def run_settings(src: RunRef, cache_key: str | None, options: FinetuneOptions
                 ) -> dict[str, Any]:
    """The settings that identify a run (``epochs`` is a budget, not part of them)."""
    return {
        "source_run": src.run_id, "source_head_sha256": src.record.head.sha256,
        "cache_key": cache_key, "unfreeze_from": str(options.unfreeze_spec),
        "learning_rate": options.learning_rate if options.learning_rate == "auto"
        else float(options.learning_rate), "optimizer": options.optimizer,
        "augment": options.augmentation.as_dict(), "batch_size": options.batch_size,
        "patience": options.patience, "class_weight": options.class_weight,
        "seed": options.seed, "metric": options.metric, "schedule": options.schedule,
        "warmup": options.warmup, "weight_decay": options.weight_decay,
        "label_smoothing": options.label_smoothing, "cached": options.cached,
    }


def _initial_validation(loaded: LoadedHead, fs: FeatureSet, classifier: Any,
                        splits: dict[str, SplitData], report: Reporter
                        ) -> tuple[dict[str, Any], float]:
    """The end-to-end model before any training must compute what the head computed."""
    proba = predict_proba(classifier, splits["validation"].x)
    head_proba = loaded.predict_proba(fs.features[fs.mask("validation")])
    diff = float(np.max(np.abs(proba - head_proba))) if len(head_proba) else 0.0
    if diff > MAX_INITIAL_DIFF:
        report.warn(f"the rebuilt model differs from the head on validation by up to "
                    f"{diff:.2g} before training (expected ~1e-6)")
    return classification_metrics(splits["validation"].y, proba), diff
