"""The feature cache: HDF5 feature sets, their record, writer, keys and catalog."""

from pipeline.cache.info import SCHEMA_VERSION, ExtractionStats, FeatureSetInfo
from pipeline.cache.store import (
    SPLITS,
    FeatureSet,
    load_feature_set,
    read_info,
    read_meta,
    verify_feature_set,
    write_feature_set,
)
from pipeline.cache.writer import FeatureSetWriter

__all__ = ["SCHEMA_VERSION", "SPLITS", "ExtractionStats", "FeatureSet", "FeatureSetInfo",
           "FeatureSetWriter", "load_feature_set", "read_info", "read_meta",
           "verify_feature_set", "write_feature_set"]
