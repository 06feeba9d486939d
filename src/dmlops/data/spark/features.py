"""Point-in-time feature work on Spark: running means per entity and period
(:func:`dmlops.features.aggregates.running_means`) and the ASOF join of a training set
(:func:`dmlops.features.retrieval.build_training_set`), with the same semantics and outputs as DuckDB's.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.spark.frames import (
    ROW_INDEX, column, duckdb_text, epoch_micros, read_parquet, time_value, write_parquet,
)
from dmlops.data.spark.sandbox import check_expression
from dmlops.data.spark.session import spark_session
from dmlops.data.spark.transform import fixed_interval
from dmlops.features.aggregates import AggregateResult
from dmlops.features.errors import FeatureDataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# DuckDB's time_bucket origin for periods without months (a Monday): buckets of 7 days start on Mondays.
BUCKET_ORIGIN_MICROS = int((datetime(2000, 1, 3, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc))
                           .total_seconds()) * 1_000_000
_MICROSECOND = timedelta(microseconds=1)


def running_means(
    input_path: str, output_path: str, *, entity_column: str, time_column: str, means: dict[str, str],
    count_column: str, period: str = "1 day", available_after: str = "0 seconds",
    timestamp_column: str = "event_timestamp",
) -> AggregateResult:
    """:func:`dmlops.features.aggregates.running_means` on Spark: ``means`` are Spark SQL expressions,
    ``period`` and ``available_after`` fixed lengths; periods are cut as DuckDB's ``time_bucket`` cuts them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    try:
        frame = read_parquet(input_path)
    except Exception as error:
        raise FeatureDataError(f"{input_path} cannot be read as Parquet: {error}") from None
    missing = [name for name in (entity_column, time_column) if name not in frame.columns]
    if missing:
        raise FeatureDataError(f"{input_path}: columns {missing} not found; it has {frame.columns}")
    try:
        period_micros = fixed_interval(period, "period") // _MICROSECOND
        after_micros = fixed_interval(available_after, "available_after") // _MICROSECOND
        expressions = {name: F.expr(check_expression(sql, f"mean {name!r}")) for name, sql in means.items()}
    except Exception as error:
        raise FeatureDataError(str(error)) from None
    if period_micros <= 0:
        raise FeatureDataError(f"period={period!r} must be longer than zero")
    micros = epoch_micros(column(time_column))
    bucket = micros - F.pmod(micros - F.lit(BUCKET_ORIGIN_MICROS), F.lit(period_micros))
    used = frame.where(column(time_column).isNotNull() & column(entity_column).isNotNull())
    sums = []
    for index, expression in enumerate(expressions.values()):
        sums += [F.sum(expression.cast("double")).alias(f"__sum_{index}"), F.count(expression).alias(f"__count_{index}")]
    per_period = used.groupBy(
        column(entity_column).alias("__entity"),
        (bucket + F.lit(period_micros + after_micros)).alias("__known_at"),
    ).agg(F.count(F.lit(1)).alias("__rows"), *sums)
    window = Window.partitionBy("__entity").orderBy("__known_at").rowsBetween(Window.unboundedPreceding, 0)
    running = [
        (F.sum(f"__sum_{index}").over(window) / F.nullif(F.sum(f"__count_{index}").over(window), F.lit(0))).alias(name)
        for index, name in enumerate(expressions)
    ]
    output = per_period.select(
        F.col("__entity").alias(entity_column), F.timestamp_micros("__known_at").alias(timestamp_column),
        F.sum("__rows").over(window).cast("long").alias(count_column), *running,
    ).orderBy(F.col(entity_column), F.col(timestamp_column))
    try:
        rows_out = write_parquet(output, output_path)
    except Exception as error:
        raise FeatureDataError(
            f"running_means over {input_path} failed (check the mean expressions {means}, period={period!r}, "
            f"available_after={available_after!r}): {' '.join(str(error).split())[:2000]}") from None
    rows_in, rows_used = frame.agg(
        F.count(F.lit(1)), F.count_if(column(time_column).isNotNull() & column(entity_column).isNotNull())).collect()[0]
    written = read_parquet(output_path)
    entities, first, last = written.agg(
        F.count_distinct(column(entity_column)), F.min(epoch_micros(column(timestamp_column))),
        F.max(epoch_micros(column(timestamp_column)))).collect()[0]
    stamp = pa.timestamp("us", tz="UTC")
    return AggregateResult(
        rows_in=rows_in, rows_used=rows_used, rows_skipped_null_key_or_time=rows_in - rows_used, rows_out=rows_out,
        entities=entities, timestamp_min=duckdb_text(time_value(first, stamp)),
        timestamp_max=duckdb_text(time_value(last, stamp)),
    )



def _view_matches(rows: DataFrame, join: Any, key_types: dict[str, Any]) -> DataFrame:
    """``ROW_COLUMN`` and this view's feature columns for each entity row: the latest source row of the
    row's keys at or before its time (ties on time to the latest created), null past the TTL or when a
    key is null, as the DuckDB ASOF join (:mod:`dmlops.features.asof`) gives them."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from dmlops.features.retrieval import EVENT_TIMESTAMP, ROW_COLUMN

    source = read_parquet(join.path)
    time = column(join.timestamp_field).cast("timestamp")
    source = source.where(time.isNotNull())
    for key in join.keys:
        source = source.where(column(key).isNotNull())
    if join.created_timestamp_column:
        latest = Window.partitionBy(*(column(key) for key in join.keys), time).orderBy(
            column(join.created_timestamp_column).cast("timestamp").desc_nulls_last())
        source = source.withColumn("__latest", F.row_number().over(latest)).where(F.col("__latest") == 1)
    key_names = [f"__key_{index}" for index in range(len(join.keys))]
    values = F.struct(time.alias("__time"), *(column(name).alias(f"__value_{index}")
                                               for index, name in enumerate(join.features)))
    right = source.select(
        F.lit(None).cast("long").alias(ROW_COLUMN),
        *(column(key).cast(key_types[entity]).alias(name) for (key, entity), name in zip(join.keys.items(), key_names)),
        time.alias("__time"), F.lit(0).alias("__side"), values.alias("__match"))
    left = rows.select(
        F.col(ROW_COLUMN), *(column(entity).alias(name) for entity, name in zip(join.keys.values(), key_names)),
        F.col(EVENT_TIMESTAMP).alias("__time"), F.lit(1).alias("__side"), F.lit(None).cast(values_type(right)).alias("__match"))
    ordered = Window.partitionBy(*key_names).orderBy("__time", "__side").rowsBetween(Window.unboundedPreceding, 0)
    matched = left.unionByName(right).withColumn("__found", F.last("__match", ignorenulls=True).over(ordered))
    matched = matched.where(F.col("__side") == 1)
    live = F.lit(True)
    for name in key_names:  # a null key matches nothing
        live = live & F.col(name).isNotNull()
    if join.ttl:
        ttl_micros = join.ttl // _MICROSECOND
        live = live & (epoch_micros(F.col("__found.__time")) + F.lit(ttl_micros) >= epoch_micros(F.col("__time")))
    return matched.select(F.col(ROW_COLUMN), *(
        F.when(live, F.col(f"__found.__value_{index}")).alias(output)
        for index, output in enumerate(join.features.values())))


def values_type(frame: DataFrame) -> Any:
    """The Spark type of ``frame``'s ``__match`` column."""
    return frame.schema["__match"].dataType


def training_set(
    feature_store: Any, entities_path: str, output_path: str, *, features: list[str], timestamp_column: str,
    full_feature_names: bool, keys: list[str], output_names: list[str],
) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """The point-in-time training set of :func:`dmlops.features.retrieval.build_training_set` joined on
    Spark: rows in, rows out, nulls per feature column and rows without values per view. On-demand views
    run Feast's own transformation on the joined rows, collected to the driver."""
    from pyspark.sql import functions as F

    from dmlops.features.asof import plan
    from dmlops.features.retrieval import EVENT_TIMESTAMP, ROW_COLUMN, _view_of

    joins, on_demand_views = plan(feature_store, features, full_feature_names)
    entities = read_parquet(entities_path, row_index=True)
    null_times = entities.where(column(timestamp_column).isNull()).count()
    if null_times:
        raise FeatureDataError(
            f"{entities_path}: {null_times} rows have a null {timestamp_column!r}; a point-in-time join needs "
            "a time for every row: quarantine those rows before building the training set"
        )
    rows = entities.select(F.col(ROW_INDEX).alias(ROW_COLUMN), *(column(key) for key in keys),
                           column(timestamp_column).cast("timestamp").alias(EVENT_TIMESTAMP))
    key_types = {key: rows.schema[key].dataType for key in keys}
    joined = rows
    for join in joins:
        joined = joined.join(_view_matches(rows, join, key_types), ROW_COLUMN, "left")
    if on_demand_views:
        table = joined.toArrow()
        for view in on_demand_views:
            transformed = view.transform_arrow(table, full_feature_names)
            for name in transformed.column_names:
                if name in output_names and name not in table.column_names:
                    table = table.append_column(name, transformed[name])
        joined = spark_session().createDataFrame(table.select([ROW_COLUMN, *output_names]))
    feature_rows = joined.select(ROW_COLUMN, *(column(name) for name in output_names)).cache()
    try:
        output = entities.join(feature_rows, entities[ROW_INDEX] == feature_rows[ROW_COLUMN], "left")
        output = output.orderBy(entities[ROW_INDEX]).drop(ROW_INDEX, ROW_COLUMN)
        rows_out = write_parquet(output, output_path)
        by_view: dict[str, list[str]] = {}
        for (view, _), name in zip(map(_view_of, features), output_names):
            by_view.setdefault(view, []).append(name)
        aggregates = [F.count(F.lit(1))]
        aggregates += [F.count(F.lit(1)) - F.count(column(name)) for name in output_names]
        for names in by_view.values():
            none = column(names[0]).isNull()
            for name in names[1:]:
                none = none & column(name).isNull()
            aggregates.append(F.count_if(none))
        counts = list(feature_rows.agg(*aggregates).collect()[0])
    finally:
        feature_rows.unpersist()
    rows_in = pq.ParquetFile(entities_path).metadata.num_rows
    if counts[0] != rows_in:
        raise FeatureDataError(f"point-in-time join of {entities_path} returned {counts[0]} feature rows for "
                               f"{rows_in} entity rows; no training set was written")
    return (rows_in, rows_out, dict(zip(output_names, counts[1:1 + len(output_names)])),
            dict(zip(by_view, counts[1 + len(output_names):])))
