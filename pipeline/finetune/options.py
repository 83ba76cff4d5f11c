"""The fine-tuning stage's options: one schema for the Python API, the CLI and the TOML.

:class:`FinetuneOptions` declares each option once (default, help text, validation). Where a
value comes from, first match wins: given explicitly (keyword argument, command-line flag)
> the ``[finetune]`` table of the experiment that made the head run > the default here
(:meth:`FinetuneOptions.resolve`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import PipelineError
from pipeline.finetune.augment import Augmentation, parse_augment
from pipeline.finetune.unfreeze import DEFAULT_UNFREEZE, parse_unfreeze
from pipeline.options import Options, option

#: The optimizers fine-tuning accepts: names in :data:`pipeline.heads.training.OPTIMIZERS`
#: (the heads stage also allows adamw). A literal, so the schema loads without the heads layer.
OPTIMIZERS: tuple[str, ...] = ("adam", "rmsprop", "sgd")
DEFAULT_LEARNING_RATE = 1e-5
CLASS_WEIGHTS = ("none", "balanced")


def _problem(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A ``check=`` hook from a parser that raises :class:`PipelineError`; the parser's own
    ``--flag value:`` prefix is dropped (the schema names the option already)."""
    def check(value: Any) -> str | None:
        try:
            parse(value)
        except PipelineError as e:
            text = str(e)
            return text.partition(": ")[2] if text.startswith("--") else text
        return None
    return check


@dataclass(frozen=True)
class FinetuneOptions(Options):
    """How a head run is fine-tuned end to end (see :func:`pipeline.finetune.finetune`)."""

    SECTION = "finetune"

    epochs: int = option(
        10, "Epoch budget. Training stops earlier when validation loss has not improved for "
        "--patience epochs; the best epoch's weights are kept.", minimum=1)
    learning_rate: float = option(
        DEFAULT_LEARNING_RATE, "Step size; keep it small so the pretrained weights are "
        "adjusted, not overwritten.", minimum=0, exclusive_minimum=True, aliases=("lr",))
    optimizer: str = option("adam", " | ".join(OPTIMIZERS) + ".", choices=OPTIMIZERS)
    unfreeze_from: str | int | float = option(
        DEFAULT_UNFREEZE, "Where training starts in the base's layers: a layer name (e.g. "
        "block6a_expand_conv), an index (100, or -20 for the last 20 layers), a fraction (0.3 "
        "= top 30%), 'all', or 'none' (head only). BatchNormalization always stays frozen, in "
        "inference mode.", check=_problem(parse_unfreeze))
    augment: str | dict | Augmentation = option(
        "default", "Training-only augmentation before the base: 'none', 'default', or options "
        "flip=horizontal|vertical|horizontal_and_vertical|none, rotation=F (fraction of a "
        "turn), zoom=F, translation=F, contrast=F joined by commas; unnamed options keep their "
        "defaults.", check=_problem(parse_augment))
    batch_size: int = option(32, "Images per training step.", minimum=1)
    patience: int = option(
        3, "Epochs without a better validation loss before stopping (0: never).", minimum=0)
    class_weight: str | None = option(
        None, "balanced | none (not given: the head's own setting).", choices=CLASS_WEIGHTS,
        deprecated_values=((True, "balanced"), (False, "none")))
    seed: int = option(0, "Seed for augmentation and shuffling.")

    @classmethod
    def _where(cls, name: str) -> str:
        # One message for both audiences: the TOML key and the command-line flag.
        return f"{cls.SECTION}: {name} (--{name.replace('_', '-')})"

    @property
    def augmentation(self) -> Augmentation:
        """``augment`` parsed into an :class:`Augmentation`."""
        return parse_augment(dict(self.augment) if isinstance(self.augment, Mapping)
                             else self.augment)

    @property
    def unfreeze_spec(self) -> str | int | float | None:
        """``unfreeze_from`` normalised (``None``: base frozen; int index; float fraction)."""
        return parse_unfreeze(self.unfreeze_from)

    def with_given(self, given: Mapping[str, Any]) -> FinetuneOptions:
        """A copy with the values in ``given`` that are not ``None`` (aliases such as ``lr``
        accepted); an unknown name is an error naming the expected ones."""
        aliases = {a: n for n in self.names() for a in self.spec(n).aliases}
        explicit = {aliases.get(k, k): v for k, v in given.items() if v is not None}
        unknown = [k for k in explicit if k not in self.names()]
        if unknown:
            raise PipelineError(f"unknown fine-tuning option(s) {', '.join(unknown)}; "
                                f"expected {', '.join(self.names())}")
        return self.replace(**explicit)

    @classmethod
    def resolve(cls, given: Mapping[str, Any] | None = None,
                table: Mapping[str, Any] | None = None, where: str | None = None
                ) -> FinetuneOptions:
        """Each option: the value in ``given`` (``None`` = not given), else ``table`` (an
        experiment's ``[finetune]``, named by ``where`` in its errors), else the default."""
        return cls.from_mapping(table, where).with_given(given or {})
