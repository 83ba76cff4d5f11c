"""Stage 2: heads fitted on cached features, chosen on validation, tested once.

Typical use from Python or a notebook::

    from pipeline.heads import fit_heads, make_grid
    result = fit_heads(["cache/elpv-efficientnet_lite0.h5"],
                       [make_grid("logreg", {"C": [0.01, 0.1, 1]}), "dense"])
    result.best.test["balanced_accuracy"], result.best.run_dir

    from pipeline.heads import load_head
    head = load_head(result.best.run_dir)       # verified before loading
    head.predict_proba(features), head.class_names, head.export()

Head kinds (``pipeline fit-head --help`` lists their parameters): ``dense``, ``dense_mlp``
(Keras) and ``logreg``, ``linear_svm``, ``rbf_svm``, ``knn``, ``random_forest``,
``gradient_boosting``, ``mlp`` (scikit-learn, each behind a StandardScaler).
"""

from pipeline.heads.base import (
    Head,
    HeadConfig,
    HeadGrid,
    HeadSpec,
    expand_grids,
    finetunable_kinds,
    get_head_spec,
    layer_kinds,
    list_heads,
    make_grid,
    make_head,
    parse_head_args,
    register_head,
    superlinear_kinds,
    unregister_head,
)
from pipeline.heads.metrics import DEFAULT_METRIC, SELECTION_METRICS, classification_metrics
from pipeline.heads.params import Param
from pipeline.heads.sweep import (
    DEFAULT_SWEEP,
    Candidate,
    RunRecord,
    SweepResult,
    default_sweep,
    fit_heads,
)
from pipeline.runs.store import LoadedHead, load_head

__all__ = [
    "DEFAULT_METRIC", "DEFAULT_SWEEP", "SELECTION_METRICS", "Candidate", "Head", "HeadConfig",
    "HeadGrid", "HeadSpec", "LoadedHead", "Param", "RunRecord", "SweepResult",
    "classification_metrics", "default_sweep", "expand_grids", "finetunable_kinds",
    "fit_heads", "get_head_spec", "layer_kinds", "list_heads", "load_head", "make_grid",
    "make_head", "parse_head_args", "register_head", "superlinear_kinds", "unregister_head",
]
