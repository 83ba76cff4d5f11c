"""What ``fit`` trains and from what: the whole model on images, or the top on cached
activations (:mod:`pipeline.finetune.activations`); and how it is compiled.

Both paths read the same :class:`~pipeline.finetune.feed.Feed` draws, so from the same seed
they train the same weights (up to float rounding); the cached one skips the frozen bottom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.finetune.activations import ActivationStore, Split, split_classifier
from pipeline.finetune.evaluate import predict_proba
from pipeline.finetune.feed import Feed, image_source
from pipeline.finetune.model import training_model
from pipeline.heads.training import OPTIMIZERS as KERAS_OPTIMIZERS
from pipeline.heads.training import balanced_class_weight

if TYPE_CHECKING:
    from pipeline.context import Context
    from pipeline.finetune.options import FinetuneOptions
    from pipeline.finetune.prepare import Prepared


@dataclass
class Setup:
    """The model ``fit`` trains, its training feed and its validation predictions."""

    model: Any
    feed: Feed
    predict_validation: Callable[[], np.ndarray]
    cached: bool
    split: Split | None = None


def setup(prepared: Prepared, ctx: Context) -> Setup:
    """The cached path when allowed and possible (``cached=auto``, exact augmentation, a
    frozen bottom), else the whole model on images."""
    opts, aug = prepared.options, prepared.augmentation
    train, val = prepared.splits["train"], prepared.splits["validation"]
    weights = balanced_class_weight(train.y, prepared.n_classes) \
        if opts.class_weight == "balanced" else None
    split = None
    if opts.cached == "auto" and aug.exact:
        split = split_classifier(prepared.classifier, prepared.unfrozen.start)
    if split is None:
        model = training_model(prepared.classifier, aug, seed=opts.seed, exact=False)
        feed = Feed(image_source(train.x), train.y, prepared.n_classes, aug.views(),
                    opts.batch_size, opts.seed, weights)
        return Setup(model, feed, lambda: predict_proba(prepared.classifier, val.x), False)
    store = ActivationStore.beside(prepared.cache_info.path, activation_key(prepared, split))
    store.load_or_compute(split, train.x, val.x, aug.views(), ctx.report)
    feed = Feed(store.source(), train.y, prepared.n_classes, aug.views(), opts.batch_size,
                opts.seed, weights)
    val_x = store.validation_inputs()
    ctx.report.line(f"training the top from cached activations at {split.cut_layer} "
                    f"({split.floats_per_image:,} floats per image and view)")
    return Setup(split.top, feed, lambda: _predict(split.top, val_x, len(val.y)), True, split)


def _predict(model: Any, x: Any, n: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, int(model.outputs[0].shape[-1])))
    return np.asarray(model.predict(x, batch_size=32, verbose=0), dtype=np.float64)


def activation_key(prepared: Prepared, split: Split) -> dict[str, Any]:
    """What the bottom's activations depend on."""
    c = prepared.cache_info
    return {"cache_key": c.key, "base": c.base, "weights": c.weights,
            "weights_id": c.weights_id, "layer": c.layer, "input_size": c.input_size,
            "cut": split.cut, "cut_layer": split.cut_layer, "shapes": split.shapes,
            "views": list(prepared.augmentation.views())}


def compile_model(model: Any, opts: FinetuneOptions, learning_rate: float,
                  steps_per_epoch: int, schedule: str | None = None) -> None:
    """Compile ``model`` with the options' optimizer (AdamW for adam with weight decay),
    schedule (``schedule`` overrides), label smoothing and a one-hot loss."""
    import keras

    rate: Any = learning_rate
    if (schedule or opts.schedule) == "cosine":
        total = max(1, opts.epochs * steps_per_epoch)
        warm = min(int(round(opts.warmup * steps_per_epoch)), total - 1)
        rate = keras.optimizers.schedules.CosineDecay(
            learning_rate / 100, decay_steps=max(1, total - warm), alpha=0.01,
            warmup_target=learning_rate, warmup_steps=warm)
    kwargs: dict[str, Any] = {"learning_rate": rate}
    name = KERAS_OPTIMIZERS[opts.optimizer]
    if opts.weight_decay > 0:
        name = "AdamW" if opts.optimizer == "adam" else name
        kwargs["weight_decay"] = opts.weight_decay
    model.compile(optimizer=getattr(keras.optimizers, name)(**kwargs),
                  loss=keras.losses.CategoricalCrossentropy(
                      label_smoothing=opts.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                  jit_compile=False)
