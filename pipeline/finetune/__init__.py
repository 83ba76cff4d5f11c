"""Stage 3: fine-tune a head run end to end, predict with any run, export a run.

Typical use from Python or a notebook::

    from pipeline.finetune import finetune, predict, export
    result = finetune("best", epochs=5, unfreeze_from=0.3)     # a new run folder
    result.test["accuracy"], result.run_dir

    for p in predict(result.run_id, ["photos/"]):            # head or fine-tuned runs
        print(p.path, p.label, p.probability, p.error)

    exported = export(result.run_id, "model.keras")          # uint8 images of any size in,
    keras.models.load_model(exported.path)                   # probabilities out

Modules: :mod:`~pipeline.finetune.source` (which run), :mod:`~pipeline.finetune.data` (the
cache's images, verified), :mod:`~pipeline.finetune.fold` (heads as Keras layers),
:mod:`~pipeline.finetune.model` (base + head), :mod:`~pipeline.finetune.augment`,
:mod:`~pipeline.finetune.unfreeze`, :mod:`~pipeline.finetune.options` (the stage's options),
:mod:`~pipeline.finetune.train` (the orchestrator: :mod:`~pipeline.finetune.prepare` ->
train -> :mod:`~pipeline.finetune.evaluate` -> :mod:`~pipeline.finetune.record`, in a
resumable :mod:`~pipeline.finetune.run_folder`), :mod:`~pipeline.finetune.callbacks`
(``EpochLog``, ``KeepBest``), :mod:`~pipeline.finetune.predict`,
:mod:`~pipeline.finetune.export`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

# Loaded on first use (PEP 562): the options schema and ``parse_*`` must be importable without
# TensorFlow (the command line builds its flags from FinetuneOptions before TensorFlow loads).
_EXPORTS: dict[str, str] = {
    "NO_AUGMENTATION": "augment", "Augmentation": "augment", "parse_augment": "augment",
    "EpochLog": "callbacks", "KeepBest": "callbacks",
    "Exported": "export", "export": "export",
    "FoldedHead": "fold", "fold_head": "fold",
    "export_model": "model", "rebuild_classifier": "model", "training_model": "model",
    "DEFAULT_LEARNING_RATE": "options", "OPTIMIZERS": "options", "FinetuneOptions": "options",
    "Classifier": "predict", "Prediction": "predict", "load_classifier": "predict",
    "predict": "predict",
    "RunRef": "source", "resolve_run": "source",
    "FinetuneResult": "train", "finetune": "train", "find_learning_rate": "train",
    "DEFAULT_UNFREEZE": "unfreeze", "Unfrozen": "unfreeze", "parse_unfreeze": "unfreeze",
    "unfreeze": "unfreeze",
}

__all__ = [
    "DEFAULT_LEARNING_RATE", "DEFAULT_UNFREEZE", "NO_AUGMENTATION", "OPTIMIZERS",
    "Augmentation", "Classifier", "EpochLog", "Exported", "FinetuneOptions", "FinetuneResult",
    "FoldedHead", "KeepBest", "Prediction", "RunRef", "Unfrozen", "export", "export_model",
    "finetune", "find_learning_rate", "fold_head", "load_classifier", "parse_augment",
    "parse_unfreeze", "predict", "rebuild_classifier", "resolve_run", "training_model", "unfreeze",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """Keeps ``pipeline.finetune.export``/``.predict``/``.unfreeze`` the functions: the import
    system binds a submodule as an attribute of its package when it loads, which would hide
    the function of the same name."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from pipeline.finetune.augment import NO_AUGMENTATION, Augmentation, parse_augment
    from pipeline.finetune.callbacks import EpochLog, KeepBest
    from pipeline.finetune.export import Exported, export
    from pipeline.finetune.fold import FoldedHead, fold_head
    from pipeline.finetune.model import export_model, rebuild_classifier, training_model
    from pipeline.finetune.options import DEFAULT_LEARNING_RATE, OPTIMIZERS, FinetuneOptions
    from pipeline.finetune.predict import Classifier, Prediction, load_classifier, predict
    from pipeline.finetune.source import RunRef, resolve_run
    from pipeline.finetune.train import FinetuneResult, find_learning_rate, finetune
    from pipeline.finetune.unfreeze import DEFAULT_UNFREEZE, Unfrozen, parse_unfreeze, unfreeze
