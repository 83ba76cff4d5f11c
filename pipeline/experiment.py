"""Whole experiments from a TOML file: extract features, fit and compare heads, report.

An experiment file names the data, the bases, the extraction options and the head grids::

    name = "elpv-lite0"                 # optional; labels the runs
    data = "elpv"                       # a folder, a CSV manifest, or the builtin "elpv"
    bases = ["efficientnet_lite0"]      # one cache per base; all compared together

    [extract]                           # keyword options of pipeline.extract.extract
    pooling = "avg"
    split = [0.7, 0.15, 0.15]
    seed = 0

    [fit]                               # pipeline.heads.FitOptions (+ reports_dir)
    metric = "balanced_accuracy"        # chosen on validation only
    refit = false
    class_weight = "none"               # or "balanced"
    max_memory = "4G"                   # past it, linear heads train out of core

    [[heads]]                           # one table per head kind; lists are grids
    kind = "logreg"
    C = [0.01, 0.1, 1.0]

    [[heads]]
    kind = "dense"
    learning_rate = [1e-3, 3e-4]

    [finetune]                          # not used here; stored with the runs for stage 3

Without ``[[heads]]`` the default sweep runs. Everything is validated before any extraction
starts, so a typo costs seconds, not an extraction.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.context import Context
from pipeline.engines import EngineOptions
from pipeline.errors import PipelineError
from pipeline.extract.options import ExtractOptions
from pipeline.finetune.options import FinetuneOptions
from pipeline.heads import FitOptions, SweepResult, as_grids
from pipeline.runs import fit_heads

DEFAULT_EXPERIMENT_TOML = """\
# The default experiment of `pipeline run`: ELPV solar cells (functional / defective),
# EfficientNet-Lite0 features, the default head sweep. Copy it to start your own:
#     pipeline run --print-default > experiment.toml
name = "elpv-default"
data = "elpv"
bases = ["efficientnet_lite0"]

[extract]
weights = "imagenet"
# Solar cells are far from ImageNet: block6d was the validation-best cut at the base's
# 224 px, and 300 px is the cells' native resolution (no downsampling of thin cracks).
# benchmarks/elpv_layers.py compares cuts and sizes; see README, "Results", for how much of
# this is noise.
layer = "block6d_expand_activation"
input_size = 300
pooling = "avg"
dtype = "float32"
batch_size = 32
split = [0.7, 0.15, 0.15]
seed = 0

[fit]
metric = "balanced_accuracy"
refit = false
class_weight = "none"
# max_memory = "4G"   # a cache needing more trains logreg/linear_svm out of core (default:
#                     # half of RAM); other heads are then refused

# No [[heads]] tables: the default sweep (logreg, linear_svm, rbf_svm, knn, random_forest,
# dense). Add tables to choose your own, e.g.
# [[heads]]
# kind = "logreg"
# C = [0.01, 0.1, 1.0]
"""

TOP_KEYS = ("name", "data", "bases", "extract", "fit", "heads", "finetune", "engine")
#: [extract] takes the options of the extraction stage, plus where the caches go.
EXTRACT_KEYS = (*ExtractOptions.names(), "cache_dir")
#: [fit] takes the options of the heads stage, plus where the runs go.
FIT_KEYS = (*FitOptions.names(), "reports_dir")


@dataclass
class Experiment:
    """A parsed, validated experiment file."""

    data: str
    bases: list[str]
    name: str = ""
    #: The [extract] table as given (checked by :class:`ExtractOptions`; the stage's defaults
    #: fill the rest when it runs).
    extract: dict[str, Any] = field(default_factory=dict)
    fit: FitOptions = field(default_factory=FitOptions)
    heads: list[dict[str, Any]] | None = None
    finetune: dict[str, Any] | None = None
    source: Path | None = None
    #: ``[fit] reports_dir``: where the runs go unless the caller says otherwise.
    reports_dir: str | None = None
    #: ``[extract] cache_dir``: where the caches go unless the caller says otherwise.
    cache_dir: str | None = None
    #: ``[engine]``: where extraction runs (:class:`pipeline.engines.EngineOptions`).
    engine: EngineOptions | None = None

    def as_dict(self) -> dict[str, Any]:
        fit = self.fit.to_dict()
        if self.reports_dir is not None:
            fit["reports_dir"] = self.reports_dir
        extract = dict(self.extract)
        if self.cache_dir is not None:
            extract["cache_dir"] = self.cache_dir
        out: dict[str, Any] = {"name": self.name, "data": self.data, "bases": self.bases,
                               "extract": extract, "fit": fit}
        if self.heads is not None:
            out["heads"] = self.heads
        if self.finetune is not None:
            out["finetune"] = self.finetune
        return out


def _unknown(where: str, keys: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    bad = [k for k in keys if k not in allowed]
    if bad:
        raise PipelineError(f"{where}: unknown key(s) {', '.join(bad)}; expected "
                            f"{', '.join(allowed)}")


def _table(doc: Mapping[str, Any], key: str, allowed: tuple[str, ...], where: str
           ) -> dict[str, Any]:
    table = doc.get(key, {})
    if not isinstance(table, dict):
        raise PipelineError(f"{where}: [{key}] must be a table")
    _unknown(f"{where} [{key}]", table, allowed)
    return dict(table)


def _data_and_bases(doc: Mapping[str, Any], where: str) -> tuple[str, list[str], str | None]:
    data = doc.get("data")
    if not isinstance(data, str) or not data:
        raise PipelineError(f"{where}: 'data' must be a folder, a CSV manifest or 'elpv'")
    bases = doc.get("bases", ["efficientnet_lite0"])
    if isinstance(bases, str):  # "a,b" is the list [a, b], as on the command line
        bases = [b.strip() for b in bases.split(",") if b.strip()]
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) for b in bases):
        raise PipelineError(f"{where}: 'bases' must be a base name or a list of them")
    name = doc.get("name")
    if name is not None and not isinstance(name, str):
        raise PipelineError(f"{where}: 'name' must be a string")
    return data, list(bases), name


def _fit(doc: Mapping[str, Any], where: str) -> tuple[FitOptions, str | None]:
    """[fit]: the heads stage's options, and ``reports_dir`` (context, not an option)."""
    table = _table(doc, "fit", FIT_KEYS, where)
    reports_dir = table.pop("reports_dir", None)
    if reports_dir is not None and (not isinstance(reports_dir, str) or not reports_dir):
        raise PipelineError(f"{where} [fit]: reports_dir = {reports_dir!r}: expected a folder "
                            "path (a string)")
    return FitOptions.from_mapping(table, f"{where} [fit]"), reports_dir


def _extract(doc: Mapping[str, Any], where: str) -> tuple[dict[str, Any], str | None]:
    """[extract]: the extraction options as given (each checked now), and ``cache_dir``."""
    table = _table(doc, "extract", EXTRACT_KEYS, where)
    cache_dir = table.pop("cache_dir", None)
    if cache_dir is not None and (not isinstance(cache_dir, str) or not cache_dir):
        raise PipelineError(f"{where} [extract]: cache_dir = {cache_dir!r}: expected a folder "
                            "path (a string)")
    options = ExtractOptions.from_mapping(table, f"{where} [extract]")
    return {k: getattr(options, k) for k in table}, cache_dir


def parse_experiment(doc: Mapping[str, Any], source: Path | None = None) -> Experiment:
    """Validate an experiment given as a dict (the TOML document), completely, before any
    work: a wrong key, type or value anywhere is one line naming it."""
    where = str(source or "experiment")
    _unknown(where, doc, TOP_KEYS)
    data, bases, name = _data_and_bases(doc, where)
    extract, cache_dir = _extract(doc, where)
    fit, reports_dir = _fit(doc, where)
    heads = doc.get("heads")
    if heads is not None:
        if not isinstance(heads, list) or not all(isinstance(h, dict) for h in heads):
            raise PipelineError(f"{where}: heads must be [[heads]] tables with a 'kind'")
        as_grids(heads)  # validates kinds, parameter names and value types now
    engine = EngineOptions.from_env(_table(doc, "engine", tuple(EngineOptions.names()), where),
                                    f"{where} [engine]") if "engine" in doc else None
    finetune = doc.get("finetune")
    if finetune is not None:
        # Checked now, kept as written: fine-tuning applies it under the values it is given.
        FinetuneOptions.from_mapping(finetune, f"{where} [finetune]")
    return Experiment(data=data, bases=bases, name=name or (source.stem if source else ""),
                      extract=extract, fit=fit, heads=heads, finetune=finetune,
                      source=source, reports_dir=reports_dir, cache_dir=cache_dir,
                      engine=engine)


def load_experiment(path: str | os.PathLike | None = None) -> Experiment:
    """Read and validate an experiment TOML file; ``None`` gives the embedded default."""
    if path is None:
        return parse_experiment(tomllib.loads(DEFAULT_EXPERIMENT_TOML))
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such experiment file") from None
    except IsADirectoryError:
        raise PipelineError(f"{path}: is a folder; expected an experiment TOML file") from None
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not UTF-8 text; expected an experiment TOML file") \
            from None
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise PipelineError(f"{path}: not valid TOML ({e})") from None
    return parse_experiment(doc, source=path)


@dataclass
class ExperimentResult:
    experiment: Experiment
    caches: list[Path]
    sweep: SweepResult
    reports_dir: Path


ExtractFn = Callable[..., list[Path]]


def run_experiment(
    experiment: Experiment | str | os.PathLike | None = None,
    *,
    reports_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    jobs: int | None = None,
    max_memory: int | str | None = None,
    quiet: bool = False,
    extract_fn: ExtractFn | None = None,
) -> ExperimentResult:
    """Extract features for every base (reusing caches), then fit and compare the heads.

    ``experiment``: an :class:`Experiment`, a TOML path, or ``None`` for the default.
    Arguments given here override the file. ``extract_fn`` replaces
    :func:`pipeline.extract.extract` (same signature), e.g. in tests.
    """
    if not isinstance(experiment, Experiment):
        experiment = load_experiment(experiment)
    # checked before any extraction
    options = experiment.fit.replace(jobs=jobs, max_memory=max_memory)
    ctx = Context.create(
        cache_dir=cache_dir if cache_dir is not None else experiment.cache_dir,
        reports_dir=reports_dir if reports_dir is not None else experiment.reports_dir,
        quiet=quiet)
    if extract_fn is None:
        from pipeline.extract import extract as extract_fn
    engine = {} if experiment.engine is None else {"engine": experiment.engine}
    caches = [Path(p) for p in extract_fn(experiment.data, tuple(experiment.bases), ctx=ctx,
                                          **experiment.extract, **engine)]
    extra = {"name": experiment.name,
             "source": str(experiment.source) if experiment.source else None,
             **experiment.as_dict()}
    sweep = fit_heads(caches, experiment.heads, **options.to_dict(), ctx=ctx,
                      extra_config=extra)
    assert sweep.reports_dir is not None
    return ExperimentResult(experiment=experiment, caches=caches, sweep=sweep,
                            reports_dir=sweep.reports_dir)
