"""Errors of the feature-store steps: each names what was wrong and what to do."""

from dmlops.data.errors import DataError


class FeatureStoreError(Exception):
    """A store spec, a definitions module or a request to the feature store is wrong."""


class FeatureDataError(DataError):
    """An entity or source dataset does not fit the feature definitions."""
