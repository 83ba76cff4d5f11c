"""The feature cache: HDF5 feature sets, their keys, locks and resumable work."""

from pipeline.cache.store import (
    SPLITS,
    FeatureSet,
    load_feature_set,
    read_meta,
    verify_feature_set,
    write_feature_set,
)

__all__ = ["SPLITS", "FeatureSet", "load_feature_set", "read_meta", "verify_feature_set",
           "write_feature_set"]
