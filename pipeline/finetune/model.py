"""Base + head as one Keras model, rebuilt from a head run and its cache's metadata.

The *classifier* takes float32 RGB images in [0, 255] at the cache's input size (what the
extraction reader produced) and returns class probabilities::

    image -> features [preprocess 1x1 conv -> <base>_base (cut at the cache's layer)
             -> pooling] -> [head_flatten] -> head layers -> probabilities (softmax)

It is built with :func:`pipeline.bases.build_extractor` using exactly the cache's base,
weights, layer cut, pooling and input size, and the weights are checked against the cache's
``weights_id``, so before any training its outputs equal the head's ``predict_proba`` on the
cached features. Training wraps it as ``image -> augmentation -> classifier``; export wraps it
as ``uint8 image of any size -> cast -> bilinear resize -> classifier``. Only built-in Keras
layers are used, so every saved model loads with plain ``keras.models.load_model``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np

from pipeline.errors import PipelineError
from pipeline.finetune.augment import Augmentation
from pipeline.finetune.fold import FoldedHead, fold_head
from pipeline.runs.record import CacheRef

CLASSIFIER = "classifier"
FEATURES = "features"
PROBABILITIES = "probabilities"


@dataclass
class Rebuilt:
    """A classifier rebuilt from a head run."""

    classifier: keras.Model
    folded: FoldedHead
    input_size: int
    class_names: list[str]
    base_name: str


def rebuild_features(cache: CacheRef | Mapping[str, Any]) -> Any:
    """The extractor exactly as the run's record of its cache describes it (base, weights,
    layer cut, pooling, input size), its weights checked against the cache's ``weights_id``:
    a :class:`~pipeline.bases.Extractor` whose ``model`` maps float32 images in [0, 255] at
    the input size to the cached feature arrays."""
    from pipeline.bases import build_extractor

    cache = CacheRef.coerce(cache)
    base, size = cache.base, cache.input_size
    if not base or isinstance(size, bool) or not isinstance(size, int):
        raise PipelineError("the run's record lacks the cache's base/input_size; fit the head "
                            "again with this version")
    weights = cache.weights or "imagenet"
    ex = build_extractor(base, weights=weights, input_size=size, layer=cache.layer,
                         pooling=cache.pooling or "avg")
    if cache.weights_id and ex.weights_id != cache.weights_id:
        raise PipelineError(f"the {base} weights {weights!r} built now differ from those the "
                            "cache was extracted with (weights_id mismatch); restore that "
                            "weights file or re-extract")
    return ex


def rebuild_classifier(cache: CacheRef | Mapping[str, Any], loaded: Any,
                       purpose: str = "finetune") -> Rebuilt:
    """Base (as the run's record of its cache describes it) + the run's head
    (:class:`~pipeline.runs.LoadedHead`) folded for ``purpose`` ("finetune" or "export",
    see :func:`~pipeline.finetune.fold.fold_head`), end to end."""
    ex = rebuild_features(cache)
    size = int(CacheRef.coerce(cache).input_size or 0)
    features = keras.Model(ex.model.input, ex.model.output, name=FEATURES)
    n_features = int(np.prod(ex.feature_shape))
    folded = fold_head(loaded, n_features, purpose)
    inp = keras.Input((size, size, 3), name="image")
    x = features(inp)
    if len(ex.feature_shape) > 1:
        x = keras.layers.Flatten(name="head_flatten")(x)
    probs = keras.layers.Softmax(name=PROBABILITIES)(folded(x))
    classifier = keras.Model(inp, probs, name=CLASSIFIER)
    return Rebuilt(classifier=classifier, folded=folded, input_size=size,
                   class_names=list(loaded.class_names), base_name=ex.spec.name)


def training_model(classifier: keras.Model, augmentation: Augmentation,
                   seed: int = 0, exact: bool = True) -> keras.Model:
    """``image -> augmentation (training only) -> classifier`` (``exact=False``: without the
    flips, which the training feed applies)."""
    size = classifier.inputs[0].shape[1:]
    inp = keras.Input(tuple(size), name="image")
    x = inp
    for layer in augmentation.layers(seed, exact=exact):
        x = layer(x)
    return keras.Model(inp, classifier(x), name="finetune")


def export_model(classifier: keras.Model) -> keras.Model:
    """``uint8 RGB image of any size -> float -> bilinear resize -> classifier``.

    ``Resizing(interpolation="bilinear")`` is ``tf.image.resize(..., "bilinear")`` without
    antialiasing, the op the extraction reader uses, so exported outputs match ``predict``.
    """
    size = int(classifier.inputs[0].shape[1])
    inp = keras.Input((None, None, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1.0, name="to_float")(inp)  # a cast to float32, built in
    # Keras 3 image layers default to training=True and would record it in the graph; in a
    # plain ``model(x)`` call that value leaks to the classifier and puts BatchNormalization
    # in training mode (updating its statistics). Record inference explicitly, and freeze
    # everything so BatchNormalization stays in inference mode whatever the caller passes.
    x = keras.layers.Resizing(size, size, interpolation="bilinear", name="resize")(
        x, training=False)
    model = keras.Model(inp, classifier(x, training=False), name="exported")
    model.trainable = False
    return model


def find_classifier(model: keras.Model) -> keras.Model:
    """The classifier inside a training or exported model (or the model itself)."""
    if model.name == CLASSIFIER:
        return model
    try:
        return model.get_layer(CLASSIFIER)
    except ValueError:
        raise PipelineError(f"model {model.name!r} has no {CLASSIFIER!r} part; was it written "
                            "by pipeline finetune/export?") from None


def find_base(model: keras.Model) -> keras.Model:
    """The (cut) pretrained base inside a classifier, training or exported model."""
    features = find_classifier(model).get_layer(FEATURES)
    inner = [lyr for lyr in features.layers if isinstance(lyr, keras.Model)]
    if len(inner) != 1:
        raise PipelineError("cannot find the base inside the model's features part")
    return inner[0]
