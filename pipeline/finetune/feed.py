"""The training feed: seeded batches with exact (dihedral) augmentation drawn per image.

Each epoch ``e`` draws, from ``numpy.random.default_rng([seed, e])``, an order of the
training rows and one view per row from the augmentation's dihedral views
(:meth:`~pipeline.finetune.augment.Augmentation.views`). A batch is those rows in that view,
read from a *source*: the images (the view computed with :func:`dihedral_view`) or the
cached activations of the views (:mod:`pipeline.finetune.activations`). Both read the same
draws, so both train the same model; and the draws of an epoch depend only on the seed and
the epoch number, so a resumed run replays exactly the epochs it redoes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.finetune.augment import dihedral_view

#: ``source(rows, view) -> arrays``: the model inputs of ``rows`` (sorted indices into the
#: training split) in dihedral view ``view``, one array per model input.
Source = Callable[[np.ndarray, int], list[np.ndarray]]


def image_source(images: np.ndarray) -> Source:
    """Rows of ``images`` (n, h, w, 3) in a dihedral view."""
    def read(rows: np.ndarray, view: int) -> list[np.ndarray]:
        return [dihedral_view(images[rows], view)]
    return read


@dataclass
class Feed:
    """Batches of one split for ``model.fit``: ``(x, one-hot y[, sample weights])``."""

    source: Source
    y: np.ndarray
    n_classes: int
    views: tuple[int, ...]
    batch_size: int
    seed: int
    class_weight: dict[int, float] | None = None

    @property
    def steps(self) -> int:
        return max(1, math.ceil(len(self.y) / self.batch_size))

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """``(order, view per position)`` of epoch ``epoch`` (0-based)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.y))
        views = np.asarray(self.views)[rng.integers(0, len(self.views), len(self.y))]
        return order, views

    def batch(self, rows: np.ndarray, views: np.ndarray) -> tuple[Any, ...]:
        """One batch: rows grouped by view, read from the source, put back in order."""
        parts: list[np.ndarray] | None = None
        for view in np.unique(views):
            at = np.flatnonzero(views == view)
            got = self.source(rows[at], int(view))
            if parts is None:
                parts = [np.empty((len(rows), *a.shape[1:]), a.dtype) for a in got]
            for out, a in zip(parts, got, strict=True):
                out[at] = a
        assert parts is not None
        x: Any = parts[0] if len(parts) == 1 else tuple(parts)
        y = np.eye(self.n_classes, dtype=np.float32)[self.y[rows]]
        if self.class_weight is None:
            return x, y
        w = np.asarray([self.class_weight.get(int(c), 0.0) for c in self.y[rows]], np.float32)
        return x, y, w

    def epoch(self, epoch: int) -> Iterator[tuple[Any, ...]]:
        order, views = self.plan(epoch)
        for start in range(0, len(order), self.batch_size):
            yield self.batch(order[start:start + self.batch_size],
                             views[start:start + self.batch_size])

    def forever(self, first_epoch: int = 0) -> Iterator[tuple[Any, ...]]:
        """Epoch after epoch from ``first_epoch``: ``fit(..., steps_per_epoch=steps)``."""
        epoch = first_epoch
        while True:
            yield from self.epoch(epoch)
            epoch += 1
