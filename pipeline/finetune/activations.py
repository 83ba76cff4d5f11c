"""Epochs at cache speed: the frozen bottom's activations, computed once per view.

When the bottom of the base stays frozen (BatchNorm in inference mode, dropout off) and the
augmentation is exact (flips, quarter turns, or none), the bottom maps each training image
in each view to the same activations every epoch. :func:`split_classifier` cuts the
classifier there into ``bottom`` (image -> the tensors crossing the cut) and ``top`` (those
tensors -> probabilities). Both are built from the classifier's own layers, so training
``top`` trains the classifier's weights in place. :class:`ActivationStore` computes the
bottom's outputs for every training image in every view (and validation, view 0) once, in
an HDF5 file beside the feature cache, shared by every run with the same cache, cut and
views; epochs then cost only the top.

The cut is where training starts, or a few frozen layers earlier when the tensors crossing
there are at most half the size (e.g. before an inverted-residual block's 6x expansion):
the top then recomputes those frozen layers, which is cheap, and the file is much smaller.

Integrity as in the feature cache: the file is written under a temporary name and renamed
when complete; it records the key it was computed for (cache key, base weights, cut, views,
input size) and a SHA-256 per dataset, checked on every read; a file that fails either is
computed again, never used.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.cache.store import features_digest
from pipeline.fileio import atomic_path, json_sha256
from pipeline.finetune.augment import dihedral_view
from pipeline.finetune.model import FEATURES, find_base

if TYPE_CHECKING:
    import keras

    from pipeline.progress import Reporter

#: Look this many layers below the training start for a smaller cut.
CUT_WINDOW = 12
FORMAT = "pipeline-activations/1"


@dataclass
class Split:
    """The classifier cut in two at base layer ``cut`` (see the module docstring)."""

    bottom: Any  # keras.Model: image -> list of crossing tensors
    top: Any  # keras.Model: crossing tensors -> probabilities
    cut: int
    cut_layer: str
    shapes: list[tuple[int, ...]]

    @property
    def floats_per_image(self) -> int:
        return sum(math.prod(s) for s in self.shapes)


def _crossing(base: keras.Model, cut: int) -> list[Any]:
    """The tensors made below layer ``cut`` of ``base`` and used from it on."""
    if cut >= len(base.layers):
        return list(base.outputs)
    below = {id(layer) for layer in base.layers[:cut]}
    out: list[Any] = []
    for layer in base.layers[cut:]:
        for node in _own_nodes(base, layer):
            for t in node.input_tensors:
                if id(t._keras_history.operation) in below and all(t is not o for o in out):
                    out.append(t)
    return out


def _own_nodes(model: keras.Model, layer: Any) -> list[Any]:
    """``layer``'s calls in ``model``'s graph (a layer may also be called in other models;
    Keras keys a graph's nodes as ``{id(layer)}_ib-{index}``)."""
    return [node for i, node in enumerate(layer._inbound_nodes)
            if f"{id(layer)}_ib-{i}" in model._nodes]


def _size(tensors: list[Any]) -> int:
    return sum(math.prod(int(d) for d in t.shape[1:]) for t in tensors)


def choose_cut(base: keras.Model, start: int | None, search: bool = True) -> int | None:
    """Where to cut for training start ``start`` (``None``: the base's output); ``None``
    when nothing below stays frozen. ``search=False``: exactly at ``start``."""
    start = len(base.layers) if start is None else start
    if start < 2:
        return None
    if not search:
        return start
    best, best_size = start, _size(_crossing(base, start))
    for k in range(start - 1, max(1, start - CUT_WINDOW) - 1, -1):
        size = _size(_crossing(base, k))
        if 2 * size <= best_size:
            best, best_size = k, size
    return best


def _chain_after(model: keras.Model, layer: Any) -> list[Any] | None:
    """The layers after ``layer`` in ``model``, if they form a plain chain (else None)."""
    layers = model.layers
    at = next(i for i, lyr in enumerate(layers) if lyr is layer)
    rest = layers[at + 1:]
    for prev, lyr in zip(layers[at:], rest, strict=False):
        nodes = _own_nodes(model, lyr)
        if len(nodes) != 1 or len(nodes[0].input_tensors) != 1 or \
                nodes[0].input_tensors[0]._keras_history.operation is not prev:
            return None
    return rest


def split_classifier(classifier: keras.Model, start: int | None, search: bool = True
                     ) -> Split | None:
    """The classifier as ``bottom`` + ``top`` for training from base layer ``start``
    (``None``: base frozen); ``None`` if it cannot be cut (nothing frozen, or a model that
    is not ``image -> features[pre -> base -> post] -> head chain``)."""
    import keras

    base = find_base(classifier)
    features = classifier.get_layer(FEATURES)
    cut = choose_cut(base, start, search)
    after_base = _chain_after(features, base)
    after_features = _chain_after(classifier, features)
    pre = features.layers[1:next(i for i, lyr in enumerate(features.layers) if lyr is base)]
    if cut is None or after_base is None or after_features is None:
        return None
    crossing = _crossing(base, cut)
    inp = keras.Input(tuple(classifier.inputs[0].shape[1:]), name="image")
    x = inp
    for layer in pre:
        x = layer(x)
    bottom = keras.Model(inp, keras.Model(base.inputs, _one(crossing), name="base_bottom")(x),
                         name="bottom")
    cut_inputs = [keras.Input(tuple(t.shape[1:]), name=f"cut_{i}")
                  for i, t in enumerate(crossing)]
    y = keras.Model(_one(crossing), _one(base.outputs), name="base_top")(_one(cut_inputs))
    for layer in [*after_base, *after_features]:
        y = layer(y)
    top = keras.Model(_one(cut_inputs), y, name="top")
    name = base.layers[cut].name if cut < len(base.layers) else "(base output)"
    return Split(bottom=bottom, top=top, cut=cut, cut_layer=name,
                 shapes=[tuple(int(d) for d in t.shape[1:]) for t in crossing])


def _one(tensors: list[Any]) -> Any:
    """A single tensor as itself (Keras layers do not take a list of one), else the list."""
    return tensors[0] if len(tensors) == 1 else tensors



class ActivationStore:
    """The bottom's activations of the training rows per view and of validation (view 0),
    in memory after :meth:`load_or_compute`, read by :meth:`source`."""

    def __init__(self, path: Path, key: dict[str, Any]):
        self.path = Path(path)
        self.key = key
        self.digest = json_sha256(key)
        self.train: dict[int, list[np.ndarray]] = {}
        self.validation: list[np.ndarray] = []

    @classmethod
    def beside(cls, cache_path: str | Path, key: dict[str, Any]) -> ActivationStore:
        cache_path = Path(cache_path)
        name = f"{cache_path.stem}.activations-{json_sha256(key)[:16]}.h5"
        return cls(cache_path.parent / name, key)

    def load_or_compute(self, split: Split, train_x: np.ndarray, val_x: np.ndarray,
                        views: tuple[int, ...], report: Reporter) -> ActivationStore:
        why = self._read(views) if self.path.is_file() else "not computed yet"
        if why is None:
            report.line(f"activations at {split.cut_layer}: {self.path.name} (reused)")
            return self
        report.line(f"activations at {split.cut_layer} ({why}): {len(views)} view(s) x "
                    f"{len(train_x)} training + {len(val_x)} validation images, once")
        t0 = time.perf_counter()
        self.train = {v: _run(split.bottom, train_x, v) for v in views}
        self.validation = _run(split.bottom, val_x, 0)
        self._write(views, time.perf_counter() - t0)
        report.line(f"activations computed in {time.perf_counter() - t0:.0f} s -> "
                    f"{self.path}")
        return self

    def _write(self, views: tuple[int, ...], seconds: float) -> None:
        import h5py

        with atomic_path(self.path, suffix=".h5") as tmp, h5py.File(tmp, "w") as f:
            f.attrs.update(format=FORMAT, key=json_sha256(self.key), views=list(views),
                           seconds=seconds)
            f.attrs["key_json"] = str(self.key)
            groups = {f"train/view{v}": arrs for v, arrs in self.train.items()}
            groups["validation/view0"] = self.validation
            for name, arrs in groups.items():
                for i, a in enumerate(arrs):
                    ds = f.create_dataset(f"{name}/t{i}", data=a)
                    ds.attrs["sha256"] = features_digest(a)

    def _read(self, views: tuple[int, ...]) -> str | None:
        """Load the file; the reason it cannot be used, or ``None``."""
        import h5py

        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT or f.attrs.get("key") != self.digest:
                    return "the file was computed for other settings"
                def arrays(group: str) -> list[np.ndarray]:
                    g = f[group]
                    return [g[f"t{i}"][()] for i in range(len(g))]
                train = {v: arrays(f"train/view{v}") for v in views}
                val = arrays("validation/view0")
                for name, arrs in [*((f"train/view{v}", a) for v, a in train.items()),
                                   ("validation/view0", val)]:
                    for i, a in enumerate(arrs):
                        if f[f"{name}/t{i}"].attrs.get("sha256") != features_digest(a):
                            return f"{name}/t{i} does not match its SHA-256 (damaged)"
        except (OSError, KeyError) as e:
            return f"unreadable ({type(e).__name__}), computing again"
        self.train, self.validation = train, val
        return None

    def source(self) -> Any:
        """A :data:`pipeline.finetune.feed.Source` over the training activations."""
        def read(rows: np.ndarray, view: int) -> list[np.ndarray]:
            return [a[rows] for a in self.train[view]]
        return read

    def validation_inputs(self) -> Any:
        return self.validation[0] if len(self.validation) == 1 else tuple(self.validation)


def _run(bottom: Any, images: np.ndarray, view: int, batch_size: int = 32
         ) -> list[np.ndarray]:
    """The bottom's outputs for ``images`` in ``view``, as float32 arrays."""
    outs: list[list[np.ndarray]] = []
    for start in range(0, len(images), batch_size):
        got = bottom(dihedral_view(images[start:start + batch_size], view), training=False)
        got = got if isinstance(got, list | tuple) else [got]
        outs.append([np.asarray(g, dtype=np.float32) for g in got])
    n_out = len(bottom.outputs)
    if not outs:
        return [np.zeros((0, *(int(d) for d in t.shape[1:])), np.float32)
                for t in bottom.outputs]
    return [np.concatenate([o[i] for o in outs]) for i in range(n_out)]
