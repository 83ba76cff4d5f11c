"""Keras callbacks of the fine-tuning stage whose state lives in the run folder, so a run
killed mid-way and started again carries on where it stopped (Keras' own ``History``,
``ModelCheckpoint`` and ``EarlyStopping`` start from scratch at every ``fit``)."""

from pipeline.finetune.callbacks.epoch_log import EpochLog
from pipeline.finetune.callbacks.keep_best import KeepBest
from pipeline.finetune.callbacks.validate import Validate, validation_logs

__all__ = ["EpochLog", "KeepBest", "Validate", "validation_logs"]
