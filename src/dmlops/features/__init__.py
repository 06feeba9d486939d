"""Feast feature store operations: store specs, definitions from code, apply, materialize, point-in-time
training sets, online lookups, and entity aggregates as feature sources. Plain Python, no KFP."""

from dmlops.features.aggregates import AggregateResult, running_means
from dmlops.features.config import cluster_store_spec, local_store_spec, open_store, repo_config
from dmlops.features.errors import FeatureDataError, FeatureStoreError
from dmlops.features.materialize import MaterializeReport, materialize
from dmlops.features.repo import ApplyReport, apply, check_sources, load_definitions, parquet_source
from dmlops.features.retrieval import TrainingSetReport, build_training_set, online_features

__all__ = [
    "AggregateResult", "ApplyReport", "FeatureDataError", "FeatureStoreError", "MaterializeReport",
    "TrainingSetReport", "apply", "build_training_set", "check_sources", "cluster_store_spec",
    "load_definitions", "local_store_spec", "materialize", "online_features", "open_store",
    "parquet_source", "repo_config", "running_means",
]
