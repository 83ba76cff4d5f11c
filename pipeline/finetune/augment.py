"""Data augmentation as Keras layers placed in the model before the base.

Keras' random preprocessing layers are active only when the model is called with
``training=True`` (``fit``) and are the identity otherwise, so they cost nothing at
prediction time and the fine-tuned model stays one self-contained model.

The defaults follow the TensorFlow/Keras tutorials (``RandomFlip("horizontal")``,
``RandomRotation(0.1)``, ``RandomZoom(0.1)``); translation and contrast are off unless asked.
On the command line the options are written ``--augment flip=horizontal,rotation=0.1,zoom=0.1``
(or ``--augment none``); values given replace the defaults one by one.

Flips and quarter turns (``rot90=true``) are *exact*: each image is one of the 8 views of
the dihedral group, computed without interpolation. They are applied to each batch by the
training feed (:mod:`pipeline.finetune.feed`) from seeded draws of a view per image and
epoch, not by Keras layers, so the same draws can be replayed on cached activations of the
views (:mod:`pipeline.finetune.activations`). ``--augment dihedral`` is both flips and
quarter turns, nothing else (for cells, tiles, micrographs: no canonical orientation).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from pipeline.errors import PipelineError

FLIPS = ("none", "horizontal", "vertical", "horizontal_and_vertical")


@dataclass(frozen=True)
class Augmentation:
    """Which random transforms training applies; factors as in the Keras layers.

    ``rotation``: fraction of a full turn (0.1 = up to +-36 degrees); ``zoom``,
    ``translation``: fraction of the image size; ``contrast``: factor of ``RandomContrast``.
    """

    flip: str = "horizontal"
    rotation: float = 0.1
    zoom: float = 0.1
    translation: float = 0.0
    contrast: float = 0.0
    rot90: bool = False

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise PipelineError(f"augment flip={self.flip!r}: expected one of {', '.join(FLIPS)}")
        for name in ("rotation", "zoom", "translation", "contrast"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise PipelineError(f"augment {name}={v!r}: expected a number from 0 to 1")
        if not isinstance(self.rot90, bool):
            raise PipelineError(f"augment rot90={self.rot90!r}: expected true or false")

    @property
    def exact(self) -> bool:
        """Only flips and quarter turns (or nothing): every training image is one of
        :meth:`views`, computed exactly, so activations of the views can be cached."""
        return not any(getattr(self, n) > 0 for n in CONTINUOUS)

    def views(self) -> tuple[int, ...]:
        """The dihedral views (see :func:`dihedral_view`) training draws from, uniformly:
        the group the flips and quarter turns generate (``(0,)``: no exact transform)."""
        flips = {"none": (0,), "horizontal": (0, 4), "vertical": (0, 6),
                 "horizontal_and_vertical": (0, 2, 4, 6)}[self.flip]
        if self.rot90:
            return (0, 1, 2, 3) if self.flip == "none" else tuple(range(8))
        return flips

    @property
    def active(self) -> bool:
        return self.flip != "none" or self.rot90 or any(
            getattr(self, n) > 0 for n in ("rotation", "zoom", "translation", "contrast"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``flip=horizontal,rotation=0.1`` (only what is on), or ``none``."""
        parts = [f"flip={self.flip}"] if self.flip != "none" else []
        parts += ["rot90=true"] if self.rot90 else []
        parts += [f"{n}={getattr(self, n):g}" for n in ("rotation", "zoom", "translation",
                                                          "contrast") if getattr(self, n) > 0]
        return ",".join(parts) or "none"

    def layers(self, seed: int = 0, exact: bool = True) -> list[Any]:
        """The Keras random layers (fresh, seeded), in the order they are applied
        (``exact=False``: without the flip, which the training feed applies instead; quarter
        turns have no layer and are always the feed's)."""
        import keras

        out: list[Any] = []
        if self.flip != "none" and exact:
            out.append(keras.layers.RandomFlip(self.flip, seed=seed, name="aug_flip"))
        if self.rotation > 0:
            out.append(keras.layers.RandomRotation(self.rotation, fill_mode="reflect",
                                                   seed=seed + 1, name="aug_rotation"))
        if self.zoom > 0:
            out.append(keras.layers.RandomZoom(self.zoom, fill_mode="reflect", seed=seed + 2,
                                               name="aug_zoom"))
        if self.translation > 0:
            out.append(keras.layers.RandomTranslation(self.translation, self.translation,
                                                      fill_mode="reflect", seed=seed + 3,
                                                      name="aug_translation"))
        if self.contrast > 0:
            out.append(keras.layers.RandomContrast(self.contrast, value_range=(0, 255),
                                                   seed=seed + 4, name="aug_contrast"))
        return out


CONTINUOUS = ("rotation", "zoom", "translation", "contrast")
NO_AUGMENTATION = Augmentation(flip="none", rotation=0.0, zoom=0.0)
DIHEDRAL = Augmentation(flip="horizontal_and_vertical", rotation=0.0, zoom=0.0, rot90=True)
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def dihedral_view(images: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` (0-7) of a batch ``(n, h, w, c)`` of square images: ``view % 4``
    quarter turns counter-clockwise, then (``view >= 4``) a left-right mirror. 0 is the
    identity, 2 the half turn (= both flips), 4 the horizontal flip, 6 the vertical flip."""
    out = np.rot90(images, view % 4, axes=(1, 2))
    if view >= 4:
        out = out[:, :, ::-1]
    return np.ascontiguousarray(out)


def parse_augment(spec: str | dict[str, Any] | Augmentation | None) -> Augmentation:
    """An :class:`Augmentation` from ``"none"``, ``"default"``, ``"flip=vertical,zoom=0.2"``
    (unnamed options keep their defaults) or a dict of the same."""
    if spec is None:
        return Augmentation()
    if isinstance(spec, Augmentation):
        return spec
    if isinstance(spec, dict):
        values: dict[str, Any] = dict(spec)
    else:
        text = str(spec).strip()
        if text.lower() in ("none", "off", "no", "false"):
            return NO_AUGMENTATION
        if text.lower() in ("", "default", "on"):
            return Augmentation()
        if text.lower() == "dihedral":
            return DIHEDRAL
        values = {}
        for part in text.split(","):
            name, sep, raw = part.partition("=")
            name, raw = name.strip(), raw.strip()
            if not sep or not name or not raw:
                raise PipelineError(f"--augment {text!r}: expected name=value pairs joined by "
                                    "commas, e.g. flip=horizontal,rotation=0.1,zoom=0.1 (or none)")
            if name == "flip":
                values[name] = raw
                continue
            if name == "rot90":
                if raw.lower() not in _TRUE + _FALSE:
                    raise PipelineError(f"--augment rot90={raw!r}: expected true or false")
                values[name] = raw.lower() in _TRUE
                continue
            try:
                values[name] = float(raw)
            except ValueError:
                raise PipelineError(f"--augment {name}={raw!r}: expected a number") from None
    known = {f.name for f in fields(Augmentation)}
    bad = sorted(set(values) - known)
    if bad:
        raise PipelineError(f"unknown augmentation option(s) {', '.join(bad)}; expected "
                            f"{', '.join(sorted(known))}")
    return replace(Augmentation(), **values)
