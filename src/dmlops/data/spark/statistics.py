"""Per-column statistics of a Parquet dataset measured by Spark, assembled by the DuckDB engine's code.

The same two passes as :mod:`dmlops.data.statistics`: one aggregate over every column (counts, nulls, NaNs,
distinct values, min/max/mean/std and exact quantiles, plus a caller's extra aggregates), then one grouped
count of each categorical column's values and each numeric or time column's histogram bins, cut by the
same :func:`dmlops.data.statistics.column_bins` arithmetic. Quantiles are Spark's exact ``percentile``
(linear interpolation between the two nearest ranks, as DuckDB's ``quantile_cont``), not the
approximate ``approxQuantile``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa

from dmlops.data.spark.frames import column, epoch_micros, epoch_seconds, read_parquet, time_value
from dmlops.data.statistics import (
    CATEGORICAL, NUMERIC, OTHER, QUANTILES, TEMPORAL, DatasetStatistics, HistogramBins, ParquetSource,
    assemble_statistics, column_bins, column_kind, open_parquet,
)

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def numeric_value(name: str, data_type: pa.DataType) -> tuple[Column, Column | None]:
    """A numeric column as DOUBLE and, for floating columns, the condition that keeps its real values."""
    from pyspark.sql import functions as F

    value = column(name).cast("double")
    return value, (~F.isnan(column(name)) if pa.types.is_floating(data_type) else None)


def _kept(value: Column, keep: Column | None) -> Column:
    from pyspark.sql import functions as F

    return value if keep is None else F.when(keep, value)


def _profile(schema: pa.Schema, distributions: bool) -> dict[str, Column]:
    """The profile aggregates of :func:`dmlops.data.statistics._profile_aggregates`, as Spark columns;
    times' min and max as epoch microseconds (``_min_micros``), turned into values after collecting."""
    from pyspark.sql import functions as F

    aggregates = {"rows": F.count(F.lit(1))}
    for index, arrow_field in enumerate(schema):
        name, kind, prefix = arrow_field.name, column_kind(arrow_field.type), f"c{index}_"
        aggregates[prefix + "count"] = F.count(column(name))
        value, keep = numeric_value(name, arrow_field.type)
        if kind == NUMERIC and keep is not None:
            aggregates[prefix + "nan"] = F.count_if(F.isnan(column(name)))
        if kind == OTHER or not distributions:
            continue
        if kind == NUMERIC:
            aggregates[prefix + "distinct"] = F.count_distinct(_kept(column(name), keep))
            aggregates[prefix + "min"] = F.min(_kept(column(name), keep))
            aggregates[prefix + "max"] = F.max(_kept(column(name), keep))
            aggregates[prefix + "mean"] = F.avg(_kept(value, keep))
            aggregates[prefix + "std"] = F.stddev_samp(_kept(value, keep))
            aggregates[prefix + "quantiles"] = F.percentile(_kept(value, keep), list(QUANTILES))
        else:
            aggregates[prefix + "distinct"] = F.count_distinct(column(name))
            if kind == TEMPORAL:
                aggregates[prefix + "min_micros"] = F.min(epoch_micros(column(name)))
                aggregates[prefix + "max_micros"] = F.max(epoch_micros(column(name)))
    return aggregates


def run_aggregates(frame: DataFrame, aggregates: dict[str, Column]) -> dict:
    """Evaluate named aggregate columns in one pass over ``frame``."""
    names = list(aggregates)
    row = frame.agg(*(aggregates[name].alias(f"a{index}") for index, name in enumerate(names))).collect()[0]
    return dict(zip(names, row))


def _bin_key(value: Column, histogram: HistogramBins, bins: int) -> Column:
    """A value's histogram bin as DuckDB's statistics compute it (null stays null)."""
    from pyspark.sql import functions as F

    if histogram.width == 0.0:
        return F.when(value.isNotNull(), F.lit(0))
    position = F.floor((value - F.lit(histogram.lower)) / F.lit(histogram.width)).cast("int")
    return F.when(value >= F.lit(histogram.upper), F.lit(bins - 1)).otherwise(position)


def _grouped_counts(
    frame: DataFrame, schema: pa.Schema, histograms: dict[int, HistogramBins], bins: int, limit: int,
) -> dict[int, list[tuple[str, int]]]:
    """Per column index, its ``limit`` most frequent non-null values (categorical, as text) or histogram
    bins (as text), most frequent first, ties by text: one grouped count over all columns at once."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    keys = []
    for index, arrow_field in enumerate(schema):
        name, kind = arrow_field.name, column_kind(arrow_field.type)
        if kind == CATEGORICAL:
            key = column(name).cast("string")
        elif index in histograms:
            if kind == NUMERIC:
                value, keep = numeric_value(name, arrow_field.type)
                value = _kept(value, keep)
            else:
                value = epoch_seconds(column(name))
            key = _bin_key(value, histograms[index], bins).cast("string")
        else:
            continue
        keys.append(F.struct(F.lit(index).alias("column_index"), key.alias("value")))
    if not keys:
        return {}
    exploded = frame.select(F.explode(F.array(*keys)).alias("key")).select("key.column_index", "key.value")
    counted = exploded.where(F.col("value").isNotNull()).groupBy("column_index", "value").count()
    order = Window.partitionBy("column_index").orderBy(F.col("count").desc(), F.col("value").asc())
    top = counted.withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= limit)
    counts: dict[int, list[tuple[str, int]]] = {}
    for row in top.orderBy("column_index", "rank").collect():
        counts.setdefault(row["column_index"], []).append((row["value"], row["count"]))
    return counts


def measure(
    source: ParquetSource, frame: DataFrame, *, extra: dict[str, Column] | None = None, top_values: int = 10,
    histogram_bins: int = 20, distributions: bool = True,
) -> DatasetStatistics:
    """The statistics of ``frame`` (the dataset ``source`` read by Spark), with the values of the ``extra``
    aggregates in ``DatasetStatistics.aggregates``."""
    aggregates = _profile(source.schema, distributions)
    aggregates.update({f"x{index}": aggregate for index, aggregate in enumerate((extra or {}).values())})
    # Distinct counts (and the extra aggregates, which may count distinct values) in a pass of their own:
    # Spark plans several distinct aggregates by copying each row once per distinct column, which beside
    # percentile's buffers costs several times the two passes.
    second = {name: aggregate for name, aggregate in aggregates.items()
              if name.endswith("_distinct") or name.startswith("x")}
    values = run_aggregates(frame, {name: aggregate for name, aggregate in aggregates.items() if name not in second})
    if second:
        values.update(run_aggregates(frame, second))
    for index, arrow_field in enumerate(source.schema):
        prefix = f"c{index}_"
        if prefix + "min_micros" in values:
            for end in ("min", "max"):
                micros = values.pop(f"{prefix}{end}_micros")
                values[prefix + end] = time_value(micros, arrow_field.type)
                values[f"{prefix}{end}_epoch"] = None if micros is None else micros / 1_000_000
    histograms = column_bins(source.schema, values, histogram_bins) if distributions else {}
    grouped = (_grouped_counts(frame, source.schema, histograms, histogram_bins, max(top_values, histogram_bins))
               if distributions else {})
    return assemble_statistics(source, values, grouped, histograms, list(extra or {}),
                               top_values=top_values, bins=histogram_bins)


def compute_statistics(
    dataset_path: str | Path, *, top_values: int = 10, histogram_bins: int = 20, distributions: bool = True,
) -> DatasetStatistics:
    """Statistics of every column of a Parquet dataset, as :func:`dmlops.data.statistics.compute_statistics`
    gives them, measured by Spark."""
    source = open_parquet(dataset_path)
    return measure(source, read_parquet(source.path), top_values=top_values, histogram_bins=histogram_bins,
                   distributions=distributions)
