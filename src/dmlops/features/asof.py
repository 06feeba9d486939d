"""Point-in-time feature values by DuckDB ``ASOF LEFT JOIN``, with the semantics of Feast's ``duckdb``
offline store and read from the same registry.

Feast joins each source to the entity rows on the join keys and filters on time afterwards, so its cost
grows with the source rows per key; an ASOF join takes, per entity row, the latest source row of its keys
at or before the row's time directly. For each feature view, as in Feast:

- the source's ``field_mapping`` renames source columns to feature and join-key names;
- a source row matches an entity row with equal join keys (through the projection's join-key map) and a
  ``timestamp_field`` at or before the entity time; null keys and null times match nothing;
- of the matches, the latest ``timestamp_field`` wins, ties going to the latest ``created_timestamp_column``;
- with a TTL, a value whose time + TTL is before the entity time is no value (null); a TTL of 0 is none;
- on-demand views run Feast's own transformation (``OnDemandFeatureView.transform_arrow``) on the joined
  rows, as Feast's retrieval job does.

Covered: offline store ``duckdb``; feature views whose batch source is a Parquet ``FileSource`` (a local
path or a URI :mod:`dmlops.platform.storage` reads, such as ``s3://``/``gs://``, without
``s3_endpoint_override``); on-demand views in ``pandas`` or ``python`` mode. Anything else (other offline
stores, stream views, Delta, Iceberg, Lance or MLflow sources, ``substrait`` on-demand views) raises
``AsofUnsupported`` with the reason, and the caller uses Feast's own ``get_historical_features``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pyarrow as pa

from dmlops.data.sandbox import sandboxed_connection
from dmlops.privacy import encryption

TIME_COLUMN = "__dmlops_time"
CREATED_COLUMN = "__dmlops_created"


class AsofUnsupported(Exception):
    """A requested view or the store is outside what the ASOF join covers; the message says which."""


@dataclass
class ViewJoin:
    """One feature view's ASOF join: where its rows are and which columns go where."""

    name: str
    path: str
    timestamp_field: str
    created_timestamp_column: str
    keys: dict[str, str]  # source column -> entity column
    features: dict[str, str]  # source column -> output column
    ttl: timedelta | None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _view_join(view: Any, feature_names: list[str], full_feature_names: bool) -> ViewJoin:
    from feast import FeatureView, FileSource, StreamFeatureView
    from feast.data_format import ParquetFormat

    source = view.batch_source
    if not isinstance(view, FeatureView) or isinstance(view, StreamFeatureView):
        raise AsofUnsupported(f"view {view.name!r} is a {type(view).__name__}")
    if type(source) is not FileSource:
        raise AsofUnsupported(f"view {view.name!r} reads a {type(source).__name__}, not a Parquet FileSource")
    if not isinstance(source.file_format, ParquetFormat) and not (
        source.file_format is None and source.path.endswith(".parquet")
    ):
        raise AsofUnsupported(f"view {view.name!r} reads {type(source.file_format).__name__} files, not Parquet")
    if source.s3_endpoint_override:
        raise AsofUnsupported(f"view {view.name!r} sets s3_endpoint_override")
    column_of = {name: column for column, name in source.field_mapping.items()}
    join_key_map = view.projection.join_key_map or {column.name: column.name for column in view.entity_columns}
    prefix = view.projection.name_alias or view.name
    return ViewJoin(
        name=view.projection.name_to_use(),
        path=source.path,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column or "",
        keys={column_of.get(key, key): entity_column for key, entity_column in join_key_map.items()},
        features={column_of.get(name, name): f"{prefix}__{name}" if full_feature_names else name
                  for name in feature_names},
        ttl=view.ttl,
    )


def plan(feature_store: Any, features: list[str], full_feature_names: bool) -> tuple[list[ViewJoin], list[Any]]:
    """The view joins and on-demand views for these feature references, resolved from the registry the
    way ``FeatureStore.get_historical_features`` resolves them; ``AsofUnsupported`` when not covered."""
    from feast import utils

    if feature_store.config.offline_store.type != "duckdb":
        raise AsofUnsupported(f"offline store {feature_store.config.offline_store.type!r} is not duckdb")
    references = utils._get_features(feature_store.registry, feature_store.project, features, allow_cache=True)
    views, on_demand_views = utils._get_feature_views_to_use(feature_store.registry, feature_store.project, features)
    on_demand_views = copy.deepcopy(on_demand_views)
    for on_demand in on_demand_views:
        on_demand.write_to_online_store = False
    grouped_views, grouped_on_demand = utils._group_feature_refs(references, views, on_demand_views)
    utils._validate_feature_refs(references, full_feature_names)
    on_demand = [view for view, _ in grouped_on_demand]
    for view in on_demand:
        if view.mode not in ("pandas", "python"):
            raise AsofUnsupported(f"on-demand view {view.name!r} runs in {view.mode!r} mode")
    joins = [_view_join(view, sorted(names), full_feature_names) for view, names in grouped_views]
    return joins, on_demand


def _source_query(join: ViewJoin, table: str) -> str:
    """The source rows that can match: non-null time (as UTC, like Feast's cast), one row per keys and
    time (the latest created), keys and features under their source names."""
    columns = [*join.keys, *join.features]
    select = ", ".join(_quote(column) for column in dict.fromkeys(columns))
    time = f"CAST({_quote(join.timestamp_field)} AS TIMESTAMPTZ)"
    query = f"SELECT {select}, {time} AS {TIME_COLUMN} FROM {table} WHERE {time} IS NOT NULL"
    if join.created_timestamp_column:
        partition = ", ".join([*(_quote(key) for key in join.keys), TIME_COLUMN])
        query += (f" QUALIFY row_number() OVER (PARTITION BY {partition} ORDER BY "
                  f"CAST({_quote(join.created_timestamp_column)} AS TIMESTAMPTZ) DESC NULLS LAST) = 1")
    return query


def _read_source(join: ViewJoin) -> pa.Table:
    columns = [*join.keys, *join.features, join.timestamp_field]
    if join.created_timestamp_column:
        columns.append(join.created_timestamp_column)
    return encryption.read_table(join.path, columns=list(dict.fromkeys(columns)))  # decrypted when encrypted


def asof_feature_rows(
    feature_store: Any,
    entity_rows: pa.Table,
    features: list[str],
    *,
    full_feature_names: bool,
    row_column: str,
    event_timestamp: str,
) -> pa.Table:
    """``row_column`` and the feature columns of ``features`` (``view__feature``, or ``feature`` without
    ``full_feature_names``) for each of ``entity_rows`` (a table of ``row_column``, the join keys and
    request fields, and ``event_timestamp`` as UTC timestamps), in no particular order. Raises
    ``AsofUnsupported`` before reading any source when a view or the store is not covered."""
    joins, on_demand_views = plan(feature_store, features, full_feature_names)
    connection = sandboxed_connection()
    connection.register("entities", entity_rows)
    selected = [f"e.{_quote(column)}" for column in entity_rows.column_names]
    joined = "entities AS e"
    for index, join in enumerate(joins):
        alias = f"v{index}"
        connection.register(f"source_{index}", _read_source(join))
        condition = " AND ".join([
            *(f"e.{_quote(entity)} = {alias}.{_quote(column)}" for column, entity in join.keys.items()),
            f"e.{_quote(event_timestamp)} >= {alias}.{TIME_COLUMN}",
        ])
        joined += f" ASOF LEFT JOIN ({_source_query(join, f'source_{index}')}) AS {alias} ON {condition}"
        live = (f"{alias}.{TIME_COLUMN} + INTERVAL {join.ttl // timedelta(microseconds=1)} MICROSECONDS "
                f">= e.{_quote(event_timestamp)}" if join.ttl else "")
        for column, output in join.features.items():
            value = f"{alias}.{_quote(column)}"
            selected.append(f"CASE WHEN {live} THEN {value} END AS {_quote(output)}" if live
                            else f"{value} AS {_quote(output)}")
    table = connection.sql(f"SELECT {', '.join(selected)} FROM {joined}").to_arrow_table()
    outputs = [f"{view}__{name}" if full_feature_names else name
               for view, _, name in (reference.partition(":") for reference in features)]
    for view in on_demand_views:
        transformed = view.transform_arrow(table, full_feature_names)
        for column in transformed.column_names:
            if column in outputs and column not in table.column_names:
                table = table.append_column(column, transformed[column])
    return table.select([row_column, *outputs])
