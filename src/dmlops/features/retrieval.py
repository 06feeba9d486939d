"""Point-in-time training sets from the offline store, and online feature lookups.

A training set keeps every entity row, in order, with all its columns and values: only the join
keys, request fields and the event time go through the point-in-time join, and the features are joined
back by row. The join is a DuckDB ASOF join per feature view with Feast's semantics (``dmlops.features.asof``)
where it covers the views, else Feast's own ``get_historical_features``; the report says which ran.
A row with no feature row inside a view's TTL keeps nulls for that view and is counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from dmlops.data.engines import check_engine
from dmlops.data.sandbox import copy_to_parquet, parquet_file, parquet_scan, sandboxed_connection
from dmlops.features.asof import AsofUnsupported, asof_feature_rows
from dmlops.features.config import open_store
from dmlops.features.errors import FeatureDataError, FeatureStoreError

ROW_COLUMN = "__dmlops_row"
EVENT_TIMESTAMP = "event_timestamp"
ASOF_JOIN = "duckdb asof"
SPARK_ASOF_JOIN = "spark asof"
FEAST_JOIN = "feast get_historical_features"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _view_of(reference: str) -> tuple[str, str]:
    view, sep, feature = reference.partition(":")
    if not sep or not view or not feature:
        raise FeatureStoreError(f"feature reference {reference!r}: expected 'view:feature'")
    return view, feature


def required_columns(feature_store: Any, features: list[str]) -> list[str]:
    """The entity columns (join keys and request-data fields) that these feature references need."""
    from feast.errors import FeatureViewNotFoundException

    needed: list[str] = []
    for view_name in dict.fromkeys(_view_of(reference)[0] for reference in features):
        try:
            views = [feature_store.get_feature_view(view_name)]
            request_fields: list[str] = []
        except FeatureViewNotFoundException:
            try:
                on_demand = feature_store.get_on_demand_feature_view(view_name)
            except FeatureViewNotFoundException:
                raise FeatureStoreError(
                    f"feature view {view_name!r} is not registered in project {feature_store.project!r}; "
                    "run apply with the definitions that define it"
                ) from None
            views = [feature_store.get_feature_view(projection.name)
                     for projection in on_demand.source_feature_view_projections.values()]
            request_fields = [item.name for source in on_demand.source_request_sources.values()
                              for item in source.schema]
        for view in views:
            needed += [column.name for column in view.entity_columns]
        needed += request_fields
    return list(dict.fromkeys(needed))


@dataclass
class TrainingSetReport:
    """Row accounting of a training set: rows in = rows out; per view, rows that got no value."""

    rows_in: int
    rows_out: int
    feature_columns: list[str]
    null_values: dict[str, int] = field(default_factory=dict)
    rows_without_values: dict[str, int] = field(default_factory=dict)
    join_method: str = ""

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for a KFP artifact."""
        return asdict(self)

    def markdown(self) -> str:
        """A summary table for a KFP Markdown output."""
        lines = [f"# Training set: {self.rows_out} rows ({self.rows_in} entity rows in)", "",
                 f"Point-in-time join: {self.join_method}", "",
                 "| view | rows with no value (no feature row inside the TTL, or all nulls) |", "|---|---|"]
        lines += [f"| {view} | {rows} |" for view, rows in self.rows_without_values.items()]
        lines += ["", "| feature column | null values |", "|---|---|"]
        lines += [f"| {column} | {count} |" for column, count in self.null_values.items()]
        return "\n".join(lines) + "\n"


def build_training_set(
    store: dict[str, Any],
    entities_path: str,
    output_path: str,
    *,
    features: list[str],
    timestamp_column: str,
    full_feature_names: bool = True,
    engine: str = "duckdb",
) -> TrainingSetReport:
    """Join the point-in-time-correct values of ``features`` (``"view:feature"``) to every row of the
    entity Parquet file at ``entities_path`` as of its ``timestamp_column``, and write ``output_path``.
    Feature columns are named ``view__feature`` (or ``feature`` without ``full_feature_names``).
    The join is DuckDB's ASOF join with Feast's semantics (see ``dmlops.features.asof`` for what it covers),
    else Feast's own ``get_historical_features``; ``TrainingSetReport.join_method`` says which ran.
    ``engine="spark"`` runs the same ASOF join on Spark (views the ASOF join does not cover are refused)."""
    check_engine(engine)
    if not features:
        raise FeatureStoreError("features is empty: pass feature references like 'weather:temp'")
    feature_store = open_store(store)
    keys = required_columns(feature_store, features)
    columns = parquet_file(entities_path).schema_arrow.names
    missing = [name for name in [timestamp_column, *keys] if name not in columns]
    if missing:
        raise FeatureDataError(
            f"{entities_path}: entity dataset lacks columns {missing} needed by {sorted(features)}; "
            f"it has {columns}. Pass the dataset's event-time column as timestamp_column."
        )
    output_names = [f"{view}__{name}" if full_feature_names else name for view, name in map(_view_of, features)]
    clashes = sorted(set(output_names) & set(columns))
    if clashes:
        raise FeatureDataError(
            f"{entities_path}: columns {clashes} would be overwritten by features; rename them or use "
            "full_feature_names=True"
        )
    if engine == "spark":
        return _spark_training_set(feature_store, entities_path, output_path, features=features,
                                   timestamp_column=timestamp_column, full_feature_names=full_feature_names,
                                   keys=keys, output_names=output_names)
    connection = sandboxed_connection(entities_path, output_path)
    source = parquet_scan(entities_path, row_numbers=True)
    null_times = connection.sql(f"SELECT count(*) FROM {source} WHERE {_quote(timestamp_column)} IS NULL").fetchall()[0][0]
    if null_times:
        raise FeatureDataError(
            f"{entities_path}: {null_times} rows have a null {timestamp_column!r}; a point-in-time join needs "
            "a time for every row: quarantine those rows before building the training set"
        )
    key_columns = "".join(f", {_quote(name)}" for name in keys)
    entity_rows = connection.sql(
        f"SELECT file_row_number AS {ROW_COLUMN}{key_columns}, "
        f"CAST({_quote(timestamp_column)} AS TIMESTAMPTZ) AS {EVENT_TIMESTAMP} FROM {source}"
    ).to_arrow_table()
    try:
        features_table, join_method = _feature_rows(feature_store, entity_rows, features, full_feature_names)
    except Exception as error:  # Feast and DuckDB raise many unrelated types; name the step and the inputs
        raise FeatureStoreError(f"point-in-time join of {entities_path} with {features} failed: {error}") from error
    connection.register("features", features_table)
    joined_rows = connection.sql(f"SELECT count(DISTINCT {ROW_COLUMN}), count(*) FROM features").fetchall()[0]
    if joined_rows != (entity_rows.num_rows, entity_rows.num_rows):
        raise FeatureStoreError(
            f"point-in-time join of {entities_path} returned {joined_rows[1]} feature rows for {joined_rows[0]} "
            f"of {entity_rows.num_rows} entity rows; no training set was written"
        )
    selected = ", ".join(f"f.{_quote(name)}" for name in output_names)
    copy_to_parquet(connection, f"SELECT e.* EXCLUDE (file_row_number), {selected} FROM {source} AS e "
                    f"LEFT JOIN features AS f ON e.file_row_number = f.{ROW_COLUMN} ORDER BY e.file_row_number",
                    output_path, [entities_path])
    by_view: dict[str, list[str]] = {}
    for (view, _), name in zip(map(_view_of, features), output_names):
        by_view.setdefault(view, []).append(name)
    counts = connection.sql(
        "SELECT " + ", ".join(
            [f"count(*) - count({_quote(name)})" for name in output_names]
            + [f"count(*) FILTER (WHERE {' AND '.join(f'{_quote(name)} IS NULL' for name in names)})"
               for names in by_view.values()]
        ) + " FROM features"
    ).fetchall()[0]
    report = TrainingSetReport(
        rows_in=entity_rows.num_rows, rows_out=parquet_file(output_path).metadata.num_rows,
        feature_columns=output_names, null_values=dict(zip(output_names, counts[:len(output_names)])),
        rows_without_values=dict(zip(by_view, counts[len(output_names):])), join_method=join_method,
    )
    assert report.rows_in == report.rows_out, report
    return report


def _spark_training_set(feature_store: Any, entities_path: str, output_path: str, **arguments: Any) -> TrainingSetReport:
    from dmlops.data.spark.features import training_set

    try:
        rows_in, rows_out, null_values, rows_without_values = training_set(
            feature_store, entities_path, output_path, **arguments)
    except AsofUnsupported as reason:
        raise FeatureStoreError(f"engine='spark' joins only what the ASOF join covers: {reason}; "
                                "use engine='duckdb' (it falls back to Feast)") from None
    except (FeatureDataError, FeatureStoreError):
        raise
    except Exception as error:  # Spark and Feast raise many unrelated types; name the step and the inputs
        raise FeatureStoreError(
            f"point-in-time join of {entities_path} with {arguments['features']} failed: {error}") from error
    report = TrainingSetReport(rows_in=rows_in, rows_out=rows_out, feature_columns=arguments["output_names"],
                               null_values=null_values, rows_without_values=rows_without_values,
                               join_method=SPARK_ASOF_JOIN)
    assert report.rows_in == report.rows_out, report
    return report


def _feature_rows(feature_store: Any, entity_rows: pa.Table, features: list[str],
                  full_feature_names: bool) -> tuple[pa.Table, str]:
    """The feature rows by the ASOF join where it covers the views, else by Feast; and which join ran."""
    try:
        return asof_feature_rows(feature_store, entity_rows, features, full_feature_names=full_feature_names,
                                 row_column=ROW_COLUMN, event_timestamp=EVENT_TIMESTAMP), ASOF_JOIN
    except AsofUnsupported as reason:
        return (feast_feature_rows(feature_store, entity_rows, features, full_feature_names=full_feature_names),
                f"{FEAST_JOIN} ({reason})")


def feast_feature_rows(
    feature_store: Any, entity_rows: pa.Table, features: list[str], *, full_feature_names: bool,
) -> pa.Table:
    """``ROW_COLUMN`` and the feature columns of ``features`` for ``entity_rows`` (``ROW_COLUMN``, join
    keys, request fields and ``EVENT_TIMESTAMP``), by Feast's own ``get_historical_features``."""
    output_names = [f"{view}__{name}" if full_feature_names else name for view, name in map(_view_of, features)]
    joined = feature_store.get_historical_features(
        entity_df=entity_rows.to_pandas(), features=features, full_feature_names=full_feature_names,
    ).to_arrow()
    return joined.select([ROW_COLUMN, *output_names])


def online_features(
    store: dict[str, Any],
    features: list[str],
    entity_rows: list[dict[str, Any]],
    *,
    full_feature_names: bool = True,
) -> dict[str, list[Any]]:
    """Feature values from the online store for each entity row (a dict of join keys): column -> values."""
    feature_store = open_store(store)
    keys = required_columns(feature_store, features)
    for index, row in enumerate(entity_rows):
        missing = [key for key in keys if key not in row]
        if missing:
            raise FeatureStoreError(f"entity_rows[{index}] = {row} lacks keys {missing} needed by {features}")
    return feature_store.get_online_features(
        features=features, entity_rows=entity_rows, full_feature_names=full_feature_names,
    ).to_dict()
