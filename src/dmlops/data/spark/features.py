"""Point-in-time feature work on Spark: running means per entity and period
(:func:`dmlops.features.aggregates.running_means`) and the ASOF join of a training set
(:func:`dmlops.features.retrieval.build_training_set`), with the same semantics and outputs as DuckDB's.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.spark.frames import (
    ROW_INDEX, column, duckdb_text, epoch_micros, read_parquet, time_value, write_parquet,
)
from dmlops.data.spark.sandbox import check_expression
from dmlops.data.spark.transform import fixed_interval
from dmlops.features.aggregates import AggregateResult
from dmlops.features.errors import FeatureDataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

# DuckDB's time_bucket origin for periods without months (a Monday): buckets of 7 days start on Mondays.
BUCKET_ORIGIN_MICROS = int((datetime(2000, 1, 3, tzinfo=timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc))
                           .total_seconds()) * 1_000_000


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


_MICROSECOND = fixed_interval("1 microsecond", "unit")
