"""Cross-validated selection of head configurations, for datasets too small to choose on
validation alone.

When: ``FitOptions.cv`` = K folds, or ``auto`` (the default): 5 folds when the validation split
holds fewer than :data:`AUTO_MIN_PER_CLASS` rows of one of its classes - a validation score on a
few dozen rows cannot tell configurations apart, and CV uses every train+validation row.

How (per cache): the train and validation rows are pooled and cut into K stratified folds
(shuffled, seeded by ``FitOptions.seed``). Every configuration is fitted on each fold's training
part and scored on its held-out part; its score is the mean over the folds (the spread and the
per-fold scores are kept). The folds go through the sweep's own fitting path
(``sweep._fit_all``: the same worker pool and thread budget), each fold standing in for a cache
whose "train" is the fold's training part and whose "validation" is its held-out part.

Heads that stop early on validation (the Keras dense heads, which have ``patience``) never see
the held-out part while training: a stratified :data:`STOP_FRACTION` of the fold's training part
is set aside for early stopping, and the held-out part only scores. The chosen configuration is
then refitted on all of train+validation for the median of the folds' chosen epochs (the median
of any refit parameter the folds disagree on), and the test split is evaluated once.

Nothing here looks at test rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.errors import PipelineError
from pipeline.heads.metrics import classification_metrics
from pipeline.heads.registry import get_head_spec

if TYPE_CHECKING:
    from pipeline.heads.results import Candidate, Split

#: ``cv = "auto"`` cross-validates when validation has fewer rows than this of some class.
AUTO_MIN_PER_CLASS = 50
#: Folds of ``cv = "auto"``.
AUTO_FOLDS = 5
#: Share of a fold's training part set aside for early stopping (heads that stop early).
STOP_FRACTION = 0.2


def _smallest(y: np.ndarray) -> int:
    return int(np.unique(y, return_counts=True)[1].min()) if len(y) else 0


def choose_folds(d: Split, asked: int | None) -> tuple[int, str | None]:
    """The folds to use on one cache (0: select on validation) and the line that says so.

    ``asked``: ``None`` = auto, 0 = off, K. K larger than the rows of the smallest class in
    train+validation is refused (a stratified fold would miss that class)."""
    if asked == 0:
        return 0, None
    name = d.path.name
    pooled = _smallest(np.concatenate([d.y["train"], d.y["validation"]]))
    if asked is None:
        val = np.bincount(d.y["validation"], minlength=len(d.class_names))
        val_min = int(val[val > 0].min()) if np.any(val) else 0
        present = np.unique(np.concatenate([d.y["train"], d.y["validation"]]))
        if val_min >= AUTO_MIN_PER_CLASS and np.all(val[present] > 0):
            return 0, None
        k = min(AUTO_FOLDS, pooled)
        why = (f"validation has only {val_min} rows of its smallest class, fewer than "
               f"{AUTO_MIN_PER_CLASS}")
        if k < 2:
            return 0, (f"{name}: {why}, but a class has {pooled} row in train+validation: "
                       "selecting on validation")
        return k, (f"{name}: selecting by {k}-fold cross-validation on train+validation "
                   f"(cv=auto: {why}; --cv 0 selects on validation alone)")
    if asked > pooled:
        fewer = f"use --cv {pooled} or fewer" if pooled >= 2 else "use --cv 0"
        raise PipelineError(f"{name}: --cv {asked} needs {asked} train+validation rows of "
                            f"every class, the smallest class has {pooled}; {fewer}")
    return asked, f"{name}: selecting by {asked}-fold cross-validation on train+validation"


def stops_early(kind: str) -> bool:
    """Heads that use the validation rows they are given for early stopping."""
    spec = get_head_spec(kind)
    return spec.family == "keras" or "patience" in spec.param_names


def _stop_split(y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions to train on and to stop early on (stratified when every class has 2+
    rows, else a plain shuffled cut)."""
    from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit

    n_stop = max(1, round(STOP_FRACTION * len(y)))
    n_classes = len(np.unique(y))
    if _smallest(y) >= 2 and n_classes <= n_stop <= len(y) - n_classes:
        cut = StratifiedShuffleSplit(1, test_size=n_stop, random_state=seed)
    else:
        cut = ShuffleSplit(1, test_size=n_stop, random_state=seed)
    fit, stop = next(cut.split(np.zeros(len(y)), y))
    return np.sort(fit), np.sort(stop)


@dataclass
class _Fold:
    """One fold of one cache: which pooled rows it scores, and the stand-in cache it is
    fitted on (``stop``: the stand-in's validation is an early-stopping cut, not the fold)."""

    cache_index: int
    held: np.ndarray
    split: Split
    stop: bool


def _folds(i: int, d: Split, k: int, seed: int, stop: bool) -> list[_Fold]:
    from sklearn.model_selection import StratifiedKFold

    x = np.concatenate([d.x["train"], d.x["validation"]])
    y = np.concatenate([d.y["train"], d.y["validation"]])
    out = []
    for tr, held in StratifiedKFold(k, shuffle=True, random_state=seed).split(x, y):
        fit, val = tr, held
        if stop:
            a, b = _stop_split(y[tr], seed)
            fit, val = tr[a], tr[b]
        split = dataclasses.replace(d, x={"train": x[fit], "validation": x[val]},
                                    y={"train": y[fit], "validation": y[val]}, ids={})
        out.append(_Fold(i, held, split, stop))
    return out


def cross_validate(data: Sequence[Split], candidates: Sequence[Candidate],
                   folds: Sequence[int], metric: str, seed: int,
                   fit_all: Callable[[list[Split], list[Candidate]], None]) -> None:
    """Score every candidate of a cache with ``folds[cache_index] > 0`` by cross-validation
    (filled in place: ``validation`` = the mean over folds, ``cv``, ``refit_params``, and
    ``proba`` = out-of-fold probabilities of the validation rows); ``fit_all`` fits
    stand-in caches (the sweep's parallel fitting path)."""
    plan: dict[tuple[int, bool], list[_Fold]] = {}
    for c in candidates:
        key = (c.cache_index, stops_early(c.config.kind))
        if key not in plan:
            plan[key] = _folds(key[0], data[key[0]], folds[key[0]], seed, key[1])
    stand_ins: list[Split] = []
    where: dict[tuple[int, bool], int] = {}
    for key, fs in plan.items():
        where[key] = len(stand_ins)
        stand_ins.extend(f.split for f in fs)
    jobs: list[tuple[Candidate, _Fold, Candidate]] = []
    for c in candidates:
        key = (c.cache_index, stops_early(c.config.kind))
        for n, f in enumerate(plan[key]):
            jobs.append((c, f, dataclasses.replace(c, cache_index=where[key] + n)))
    fit_all(stand_ins, [fc for _, _, fc in jobs])
    for c in candidates:
        _aggregate(c, data[c.cache_index], [(f, fc) for cc, f, fc in jobs if cc is c],
                   metric)


def _held_out(d: Split, f: _Fold, fc: Candidate) -> tuple[np.ndarray, dict[str, Any]]:
    """The fold's held-out probabilities and metrics."""
    if not f.stop:
        assert fc.proba is not None and fc.validation is not None
        return fc.proba, fc.validation
    assert fc.head is not None
    x = np.concatenate([d.x["train"], d.x["validation"]])[f.held]
    y = np.concatenate([d.y["train"], d.y["validation"]])[f.held]
    proba = fc.head.predict_proba(x)
    return proba, classification_metrics(y, proba)


def _aggregate(c: Candidate, d: Split, done: list[tuple[_Fold, Candidate]],
               metric: str) -> None:
    failed = next((fc.error or "?" for _, fc in done if fc.validation is None), None)
    oof = np.zeros((len(d.y["train"]) + len(d.y["validation"]), len(d.class_names)))
    per_fold: list[dict[str, Any]] = []
    if failed is None:
        try:
            for f, fc in done:
                proba, metrics = _held_out(d, f, fc)
                oof[f.held] = proba
                per_fold.append(metrics)
        except Exception as e:  # one failing configuration must not sink the sweep
            failed = f"{type(e).__name__}: {e}".splitlines()[0]
    if failed is not None:
        c.error, c.validation = failed, None
        return
    scores = [m.get(metric) for m in per_fold]
    finite = [float(s) for s in scores if s is not None and np.isfinite(s)]
    c.validation = mean_metrics(per_fold)
    c.cv = {"folds": len(done), "metric": metric,
            "mean": float(np.mean(finite)) if finite else None,
            "std": float(np.std(finite)) if finite else None,
            "scores": [None if s is None else float(s) for s in scores]}
    c.refit_params = merge_params([fc.head.refit_params() for _, fc in done
                                   if fc.head is not None])
    c.proba = oof[len(d.y["train"]):]
    c.fit_seconds = float(np.mean([fc.fit_seconds for _, fc in done]))
    c.predict_seconds = float(np.mean([fc.predict_seconds for _, fc in done]))
    c.head = None  # the fold heads are not kept; the chosen configuration is refitted


def mean_metrics(per_fold: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The folds' metrics as one table: numbers are means over the folds where defined
    (``None`` where no fold defines them), ``n_samples`` and ``confusion_matrix`` sums."""
    out: dict[str, Any] = {}
    for key in per_fold[0]:
        values = [m.get(key) for m in per_fold]
        if key == "confusion_matrix":
            out[key] = np.sum([np.asarray(v) for v in values], axis=0).tolist()
        elif key == "n_samples":
            out[key] = int(sum(values))
        else:
            nums = [float(v) for v in values if isinstance(v, int | float)
                    and not isinstance(v, bool) and np.isfinite(v)]
            out[key] = float(np.mean(nums)) if nums else None
    return out


def merge_params(params: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One refit configuration from the folds': values all folds agree on as they are; a
    number they disagree on (e.g. the epochs early stopping chose) as the median, rounded for
    whole numbers."""
    if not params:
        return {}
    out = dict(params[0])
    for key, first in params[0].items():
        values = [p.get(key) for p in params]
        if all(v == first for v in values):
            continue
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            med = float(np.median(values))
            out[key] = int(round(med)) if all(isinstance(v, int) for v in values) else med
    return out

