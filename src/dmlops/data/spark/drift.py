"""Drift counts measured by Spark for :func:`dmlops.data.drift.compare`: the reference's exact deciles
(Spark's ``percentile``, interpolated as DuckDB's ``quantile_cont``) and distinct counts, then each
dataset's bin and category counts; the scores and the report are computed by ``compare`` for both engines.
"""

from __future__ import annotations

from functools import reduce
from operator import add
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dmlops.data.drift import DECILES, Distributions
from dmlops.data.spark.frames import column, epoch_seconds, read_parquet
from dmlops.data.spark.statistics import run_aggregates
from dmlops.data.statistics import CATEGORICAL, TEMPORAL, ParquetSource, column_kind

if TYPE_CHECKING:
    from pyspark.sql import Column


def _value(name: str, data_type: pa.DataType) -> tuple[Column, Column]:
    """A binned column's value as DOUBLE (time as epoch seconds) and its missing test (null, or NaN)."""
    from pyspark.sql import functions as F

    if column_kind(data_type) == TEMPORAL:
        return epoch_seconds(column(name)), column(name).isNull()
    if pa.types.is_floating(data_type):
        return column(name).cast("double"), column(name).isNull() | F.isnan(column(name))
    return column(name).cast("double"), column(name).isNull()


def cuts(reference: ParquetSource, selected: dict[str, pa.DataType]) -> dict[str, Any]:
    """Per column, the reference's distinct count (categorical) or exact deciles (None without values)."""
    from pyspark.sql import functions as F

    frame = read_parquet(reference.path)
    deciles, distinct = {}, {}
    for name, data_type in selected.items():
        if column_kind(data_type) == CATEGORICAL:
            distinct[name] = F.count_distinct(column(name))
        else:
            value, missing = _value(name, data_type)
            deciles[name] = F.percentile(F.when(~missing, value), DECILES)
    found = run_aggregates(frame, deciles) if deciles else {}
    if distinct:
        found.update(run_aggregates(frame, distinct))
    return {name: found[name] for name in selected}


def distributions(
    source: ParquetSource, selected: dict[str, pa.DataType], edges: dict[str, list[float]],
) -> Distributions:
    """The bin counts of numeric and time columns (one pass) and the category counts of the others."""
    from pyspark.sql import functions as F

    frame = read_parquet(source.path)
    aggregates: dict[str, Column] = {"rows": F.count(F.lit(1))}
    for index, (name, data_type) in enumerate(selected.items()):
        if name in edges:
            value, missing = _value(name, data_type)
            # A value's bin: how many edges lie below it (the first bin whose upper edge is >= the value).
            bin_number = reduce(add, [(value > F.lit(edge)).cast("int") for edge in edges[name]])
            for bin_index in range(len(edges[name]) + 1):
                aggregates[f"c{index}_{bin_index}"] = F.count_if(~missing & (bin_number == bin_index))
        else:
            missing = column(name).isNull()
        aggregates[f"c{index}_missing"] = F.count_if(missing)
    values = run_aggregates(frame, aggregates)
    counts: dict[str, list[int] | dict[str, int]] = {}
    for index, name in enumerate(selected):
        if name in edges:
            counts[name] = [values[f"c{index}_{bin_index}"] for bin_index in range(len(edges[name]) + 1)]
        else:
            counts[name] = {}
    categorical = [F.struct(F.lit(name).alias("name"), column(name).cast("string").alias("value"))
                   for name in selected if name not in edges]
    if categorical:  # every categorical column's counts in one grouped pass
        keys = frame.select(F.explode(F.array(*categorical)).alias("key")).select("key.name", "key.value")
        for row in keys.where(F.col("value").isNotNull()).groupBy("name", "value").count().collect():
            counts[row["name"]][row["value"]] = row["count"]
    return Distributions(values["rows"], counts,
                         {name: values[f"c{index}_missing"] for index, name in enumerate(selected)})
