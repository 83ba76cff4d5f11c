""":class:`FoldedHead`: a fitted head as Keras layers from flat feature rows to logits.

Its own module so that :mod:`~pipeline.finetune.fold` (which routes every kind) and
:mod:`~pipeline.finetune.kernel_layers` (RBF SVM and k-NN layers) share it without an import
circle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class FoldedHead:
    """Layers mapping flat feature rows to logits (``log_sigmoid`` for OvR SVMs included)."""

    kind: str
    layers: list[Any]  # keras layers
    how: str  # one line for the run record
    n_classes: int
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: Any) -> Any:
        for layer in self.layers:
            x = layer(x)
        return x
