"""Data augmentation as Keras layers placed in the model before the base.

Keras' random preprocessing layers are active only when the model is called with
``training=True`` (``fit``) and are the identity otherwise, so they cost nothing at
prediction time and the fine-tuned model stays one self-contained model.

The defaults follow the TensorFlow/Keras tutorials (``RandomFlip("horizontal")``,
``RandomRotation(0.1)``, ``RandomZoom(0.1)``); translation and contrast are off unless asked.
On the command line the options are written ``--augment flip=horizontal,rotation=0.1,zoom=0.1``
(or ``--augment none``); values given replace the defaults one by one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

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

    def __post_init__(self) -> None:
        if self.flip not in FLIPS:
            raise PipelineError(f"augment flip={self.flip!r}: expected one of {', '.join(FLIPS)}")
        for name in ("rotation", "zoom", "translation", "contrast"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
                raise PipelineError(f"augment {name}={v!r}: expected a number from 0 to 1")

    @property
    def active(self) -> bool:
        return self.flip != "none" or any(
            getattr(self, n) > 0 for n in ("rotation", "zoom", "translation", "contrast"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """``flip=horizontal,rotation=0.1`` (only what is on), or ``none``."""
        parts = [f"flip={self.flip}"] if self.flip != "none" else []
        parts += [f"{n}={getattr(self, n):g}" for n in ("rotation", "zoom", "translation",
                                                          "contrast") if getattr(self, n) > 0]
        return ",".join(parts) or "none"

    def layers(self, seed: int = 0) -> list[Any]:
        """The Keras random layers (fresh, seeded), in the order they are applied."""
        import keras

        out: list[Any] = []
        if self.flip != "none":
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


NO_AUGMENTATION = Augmentation(flip="none", rotation=0.0, zoom=0.0)


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
