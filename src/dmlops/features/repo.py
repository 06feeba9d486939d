"""A feature repo defined in code: definitions loaded by dotted path, checked against their Parquet
sources, and applied to the registry with a report of what changed.

A definitions function takes the source locations (paths or URIs) as keyword arguments and returns the
Feast objects (entities, sources, feature views, on-demand views, feature services)::

    def definitions(weather: str) -> list:
        origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING)
        return [origin, FeatureView(name="weather", entities=[origin], ttl=timedelta(hours=1),
                                    schema=[Field(name="temp", dtype=Float64)],
                                    source=parquet_source("weather", weather, "time_hour"))]

Steps in other processes load the same function by its reference, e.g. ``"mypkg.features:definitions"``.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from dmlops.features.config import open_store
from dmlops.features.errors import FeatureDataError, FeatureStoreError
from dmlops.platform import storage
from dmlops.privacy import encryption

CHANGE_NAMES = {"CREATE": "created", "UPDATE": "updated", "UNCHANGED": "unchanged", "DELETE": "kept (not in definitions)"}


def parquet_source(name: str, path: str, timestamp_field: str) -> Any:
    """A Feast file source over one Parquet file (a Dataset artifact's path or URI; no suffix needed)."""
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(name=name, path=path, timestamp_field=timestamp_field, file_format=ParquetFormat())


def source_location(uri: str) -> str:
    """Where the offline store reads a Dataset artifact (:func:`dmlops.platform.storage.location`): a KFP
    ``minio://bucket/key`` URI becomes ``s3://bucket/key`` (the S3 client reaches KFP's store through
    AWS_ENDPOINT_URL); other URIs and paths stay."""
    return storage.location(uri)


def load_definitions(reference: str, arguments: dict[str, str] | None = None) -> list[Any]:
    """Call the definitions function at ``reference`` (``"package.module:function"``) with ``arguments``
    and return its Feast objects."""
    from feast.feast_object import ALL_RESOURCE_TYPES

    module_name, sep, function_name = reference.partition(":")
    if not sep or not module_name or not function_name:
        raise FeatureStoreError(f"definitions={reference!r}: expected 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise FeatureStoreError(f"definitions={reference!r}: cannot import {module_name}: {error}") from None
    function: Callable[..., Any] | None = getattr(module, function_name, None)
    if not callable(function):
        raise FeatureStoreError(f"definitions={reference!r}: {module_name} has no function {function_name!r}")
    arguments = arguments or {}
    try:
        inspect.signature(function).bind(**arguments)
    except TypeError as error:
        raise FeatureStoreError(
            f"definitions={reference!r} takes {inspect.signature(function)}; got arguments "
            f"{sorted(arguments)}: {error}"
        ) from None
    objects = list(function(**arguments))
    for item in objects:
        if not isinstance(item, tuple(ALL_RESOURCE_TYPES)):
            raise FeatureStoreError(f"definitions={reference!r} returned {item!r}, which is not a Feast object")
    return objects


def check_sources(objects: list[Any]) -> None:
    """Check that each feature view's Parquet source exists and has its timestamp, join-key and feature
    columns; the error names the view, the file and the missing columns."""
    from feast import Entity, FeatureView, FileSource

    join_key_of = {item.name: item.join_key for item in objects if isinstance(item, Entity)}
    for view in objects:
        if not isinstance(view, FeatureView) or not isinstance(view.batch_source, FileSource):
            continue
        path = view.batch_source.path
        try:
            columns = set(encryption.parquet_file(path).schema_arrow.names)  # decrypted when encrypted
        except (OSError, ValueError) as error:
            raise FeatureDataError(
                f"feature view {view.name!r}: source {path} cannot be read as Parquet ({error}); "
                "pass the path or URI of a Parquet dataset"
            ) from None
        column_of = {feature: column for column, feature in view.batch_source.field_mapping.items()}
        names = [*(join_key_of.get(name, name) for name in view.entities), *(feature.name for feature in view.features)]
        needed = {view.batch_source.timestamp_field, *(column_of.get(name, name) for name in names)}
        missing = sorted(needed - columns)
        if missing:
            raise FeatureDataError(
                f"feature view {view.name!r}: source {path} lacks columns {missing}; it has {sorted(columns)}. "
                "Fix the definitions or the dataset."
            )


@dataclass
class ApplyReport:
    """What ``apply`` did to each registered object."""

    project: str
    changes: list[dict[str, str]] = field(default_factory=list)

    def count(self, change: str) -> int:
        """How many objects had this change (``created``, ``updated``, ``unchanged`` ...)."""
        return sum(1 for item in self.changes if item["change"] == change)

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for a KFP artifact."""
        counts = {change: self.count(change) for change in CHANGE_NAMES.values()}
        return {"project": self.project, **counts, "changes": self.changes}

    def markdown(self) -> str:
        """A table of the changes, for a KFP Markdown output."""
        lines = [f"# Feast apply: project `{self.project}`", "", "| kind | name | change |", "|---|---|---|"]
        lines += [f"| {item['kind']} | {item['name']} | {item['change']} |" for item in self.changes]
        return "\n".join(lines) + "\n"


def _repo_contents(project: str, objects: list[Any]) -> Any:
    from feast import (Entity, FeatureService, FeatureView, OnDemandFeatureView, Project,
                       StreamFeatureView)
    from feast.data_source import DataSource
    from feast.repo_contents import RepoContents

    views = [item for item in objects if isinstance(item, FeatureView) and not isinstance(item, StreamFeatureView)]
    sources = {id(item): item for item in objects if isinstance(item, DataSource)}
    sources.update({id(view.batch_source): view.batch_source for view in views if view.batch_source})
    return RepoContents(
        projects=[Project(name=project)],
        data_sources=list(sources.values()),
        feature_views=views,
        on_demand_feature_views=[item for item in objects if isinstance(item, OnDemandFeatureView)],
        stream_feature_views=[item for item in objects if isinstance(item, StreamFeatureView)],
        entities=[item for item in objects if isinstance(item, Entity)],
        feature_services=[item for item in objects if isinstance(item, FeatureService)],
        permissions=[],
        label_views=[],
    )


def apply(store: dict[str, Any], definitions: str, arguments: dict[str, str] | None = None) -> ApplyReport:
    """Register the definitions in the store's registry and create their online tables. Idempotent: a
    second apply of the same definitions reports every object unchanged. Objects registered earlier but
    no longer defined are kept and reported. Materialized ranges survive apply (Feast keeps them)."""
    from feast.feature_view import DUMMY_ENTITY_NAME

    objects = load_definitions(definitions, arguments)
    check_sources(objects)
    feature_store = open_store(store)
    registry_diff, _, _ = feature_store.plan(_repo_contents(feature_store.project, objects))
    report = ApplyReport(project=feature_store.project)
    for diff in registry_diff.feast_object_diffs:
        if diff.name == DUMMY_ENTITY_NAME:
            continue
        kind = diff.feast_object_type.name.lower()
        report.changes.append({"kind": kind, "name": diff.name, "change": CHANGE_NAMES[diff.transition_type.name]})
    report.changes.sort(key=lambda item: (item["kind"], item["name"]))
    feature_store.apply(objects)
    return report
