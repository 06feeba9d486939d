"""Validation checks measured by Spark: each check's offending rows counted in the statistics pass, the
examples of failed checks fetched after, handed back to :func:`dmlops.data.validation.validate`, which
builds the report as for DuckDB.

A check is rebuilt here from what it means (its kind, column and expected values), not from its DuckDB
SQL; a schema expression is Spark SQL, checked by :func:`dmlops.data.spark.sandbox.check_expression`.
NULL passes a check, as in DuckDB (and a SQL CHECK constraint).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dmlops.data.spark.frames import ROW_INDEX, arrow_rows, column, read_parquet
from dmlops.data.spark.sandbox import check_expression
from dmlops.data.spark.statistics import measure
from dmlops.data.statistics import DatasetStatistics, ParquetSource, jsonable
from dmlops.data.validation import EXAMPLES, _Check

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame


def violation(check: _Check, types: dict[str, pa.DataType]) -> Column | None:
    """The condition true for a row that breaks ``check`` (None for ``unique``, counted over values)."""
    from pyspark.sql import functions as F

    if check.check == "expression":
        text = check_expression(f"NOT ({check.expected})", f"expression {check.column!r}")
        return F.expr(text)
    value = column(check.column)
    if check.check == "range":
        outside = []
        if check.expected["min"] is not None:
            outside.append(value < F.lit(check.expected["min"]))
        if check.expected["max"] is not None:
            outside.append(value > F.lit(check.expected["max"]))
        condition = outside[0] if len(outside) == 1 else outside[0] | outside[1]
        if pa.types.is_floating(types[check.column]):  # NaN is no value, as NULL
            condition = ~F.isnan(value) & condition
        return condition
    if check.check == "allowed_values":
        return value.isNotNull() & ~value.isin(list(check.expected))
    return None


def _example_values(frame: DataFrame, check: _Check, condition: Column | None) -> list:
    """The most frequent offending (or repeated) values with their counts, ties by value, as DuckDB orders."""
    from pyspark.sql import functions as F

    value = column(check.column)
    rows = frame if condition is None else frame.where(condition)
    counted = rows.groupBy(value.alias("value")).agg(F.count(F.lit(1)).alias("n"))
    if check.examples == "duplicates":
        counted = counted.where(F.col("n") > 1)
    top = counted.orderBy(F.col("n").desc(), F.col("value").asc_nulls_last()).limit(EXAMPLES)
    return [[jsonable(row["value"]), row["n"]] for row in arrow_rows(top)]


def _example_rows(frame: DataFrame, condition: Column) -> list[dict[str, Any]]:
    """The first offending rows in the file, each with its 0-based position as ``row``."""
    rows = frame.where(condition).orderBy(ROW_INDEX).limit(EXAMPLES)
    examples = []
    for record in arrow_rows(rows):
        number = record.pop(ROW_INDEX)
        examples.append({"row": number, **jsonable(record)})
    return examples


def measure_checks(
    source: ParquetSource, checks: list[_Check], statistics: bool,
) -> tuple[DatasetStatistics, dict[str, list]]:
    """Spark: the dataset's statistics with each check's count of offending rows in ``aggregates`` (by its
    label), and the examples of each failed check (as ``dmlops.data.validation._measure_checks``)."""
    from pyspark.sql import functions as F

    types = {arrow_field.name: arrow_field.type for arrow_field in source.schema}
    frame = read_parquet(source.path, row_index=True)
    conditions = {check.label: violation(check, types) for check in checks}
    counted = {}
    for check in checks:
        condition = conditions[check.label]
        if condition is None:
            counted[check.label] = F.count(column(check.column)) - F.count_distinct(column(check.column))
        else:
            counted[check.label] = F.count_if(condition)
    stats = measure(source, frame.drop(ROW_INDEX), extra=counted, distributions=statistics)
    examples: dict[str, list] = {}
    for check in checks:
        if not stats.aggregates[check.label]:
            continue
        condition = conditions[check.label]
        if check.examples == "rows":
            examples[check.label] = _example_rows(frame, condition)
        else:
            examples[check.label] = _example_values(frame, check, condition)
    return stats, examples
