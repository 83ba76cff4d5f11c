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
:mod:`~pipeline.finetune.unfreeze`, :mod:`~pipeline.finetune.train`,
:mod:`~pipeline.finetune.predict`, :mod:`~pipeline.finetune.export`.
"""

from pipeline.finetune.augment import NO_AUGMENTATION, Augmentation, parse_augment
from pipeline.finetune.export import Exported, export
from pipeline.finetune.fold import FOLDABLE, FoldedHead, fold_head
from pipeline.finetune.model import export_model, rebuild_classifier, training_model
from pipeline.finetune.predict import Classifier, Prediction, load_classifier, predict
from pipeline.finetune.source import RunRef, resolve_run
from pipeline.finetune.train import DEFAULT_LEARNING_RATE, OPTIMIZERS, FinetuneResult, finetune
from pipeline.finetune.unfreeze import DEFAULT_UNFREEZE, Unfrozen, parse_unfreeze, unfreeze

__all__ = [
    "DEFAULT_LEARNING_RATE", "DEFAULT_UNFREEZE", "FOLDABLE", "NO_AUGMENTATION", "OPTIMIZERS",
    "Augmentation", "Classifier", "Exported", "FinetuneResult", "FoldedHead", "Prediction",
    "RunRef", "Unfrozen", "export", "export_model", "finetune", "fold_head", "load_classifier",
    "parse_augment", "parse_unfreeze", "predict", "rebuild_classifier", "resolve_run",
    "training_model", "unfreeze",
]
