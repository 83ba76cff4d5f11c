"""Which layers of the base are trained, and keeping the base in inference mode.

``--unfreeze-from`` names where training starts in the base's layer list (``base.layers``, as
in the Keras fine-tuning guide's ``base_model.layers[fine_tune_at:]``):

* a layer name, e.g. ``block6a_expand_conv``: that layer and everything after it;
* an index, e.g. ``100`` (or ``-20``: the last 20 layers);
* a fraction, e.g. ``0.3``: the top 30% of the layers;
* ``all`` (the whole base) or ``none`` (base frozen: only the head is trained).

BatchNormalization layers are never unfrozen. The guide keeps them in inference mode by
calling the base with ``training=False``; in Keras 3 an outer ``fit`` passes
``training=True`` down through nested functional models regardless, so here inference mode
is made structural instead: frozen BatchNormalization layers always normalise with their
moving statistics (and never update them), and the base's dropout layers (e.g.
EfficientNet's stochastic depth) get rate 0. At prediction time both are unchanged, so the
model computes exactly what it did before.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import PipelineError, did_you_mean

if TYPE_CHECKING:
    import keras

DEFAULT_UNFREEZE = "0.3"


@dataclass(frozen=True)
class Unfrozen:
    """What :func:`unfreeze` did."""

    spec: str
    start: int | None  # first trainable index in base.layers; None = base frozen
    first_layer: str | None
    n_layers: int
    n_trainable_layers: int  # layers with trainable weights that are trainable now
    n_trainable_params: int  # of the base

    def describe(self) -> str:
        if self.start is None:
            return "base frozen (head only)"
        return (f"base layers {self.start}..{self.n_layers - 1} from {self.first_layer!r} "
                f"({self.n_trainable_layers} with weights, {self.n_trainable_params:,} "
                "parameters; BatchNormalization kept frozen)")


def parse_unfreeze(spec: str | int | float | None) -> str | int | float | None:
    """Normalise a spec: ``None`` (frozen), an int index, a float fraction or a layer name."""
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise PipelineError(f"--unfreeze-from {spec!r}: expected a layer name, an index, a "
                            "fraction like 0.3, 'all' or 'none'")
    if isinstance(spec, int):
        return spec
    if isinstance(spec, float):
        return _fraction(spec, str(spec))
    text = str(spec).strip()
    if text.lower() in ("", "none", "head", "frozen"):
        return None
    if text.lower() == "all":
        return 0
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return _fraction(float(text), text)
    except ValueError:
        return text  # a layer name, checked against the base


def _fraction(value: float, text: str) -> float:
    if not 0 < value <= 1 or math.isnan(value):
        raise PipelineError(f"--unfreeze-from {text}: a fraction must be in (0, 1] (0.3 = the "
                            "top 30% of the base's layers); use 'none' to keep the base frozen")
    return value


def start_index(base: keras.Model, spec: str | int | float | None) -> int | None:
    """The index in ``base.layers`` where training starts (``None``: base stays frozen)."""
    spec = parse_unfreeze(spec)
    layers = base.layers
    n = len(layers)
    if spec is None:
        return None
    if isinstance(spec, int):
        if not -n <= spec < n:
            raise PipelineError(f"--unfreeze-from {spec}: the base has {n} layers; expected an "
                                f"index from {-n} to {n - 1}")
        return spec % n
    if isinstance(spec, float):
        return max(0, n - math.ceil(spec * n))
    names = [lyr.name for lyr in layers]
    if spec in names:
        return names.index(spec)
    hint = did_you_mean(spec, names, n=3)
    raise PipelineError(f"--unfreeze-from {spec!r}: the base {base.name} has no such layer"
                        f"{hint}; give a layer name, an index, a fraction like 0.3, 'all' or "
                        "'none'")


def _walk(model: keras.Model) -> Iterator[keras.layers.Layer]:
    import keras  # here, so that parse_unfreeze (and the options schema) need no TensorFlow

    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer)


def keep_inference_mode(base: keras.Model) -> None:
    """Freeze every BatchNormalization layer and zero every dropout rate inside ``base``."""
    import keras

    for layer in _walk(base):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
        elif isinstance(layer, keras.layers.Dropout):
            layer.rate = 0.0


def unfreeze(base: keras.Model, spec: str | int | float | None) -> Unfrozen:
    """Set ``trainable`` on the base's layers for ``spec`` (recompile the model afterwards)."""
    import keras

    start = start_index(base, spec)
    if start is None:
        base.trainable = False
    else:
        base.trainable = True  # sets every inner layer; then freeze below the start
        for i, layer in enumerate(base.layers):
            layer.trainable = i >= start
    keep_inference_mode(base)
    trainable = [lyr for lyr in base.layers if lyr.trainable and lyr.weights
                 and not isinstance(lyr, keras.layers.InputLayer)]
    n_params = sum(int(math.prod(w.shape)) for w in base.trainable_weights)
    return Unfrozen(spec=str(spec), start=start,
                    first_layer=None if start is None else base.layers[start].name,
                    n_layers=len(base.layers), n_trainable_layers=len(trainable),
                    n_trainable_params=n_params)
