"""Row-level transforms on Spark: derived columns with quarantine, and time splits, each writing the same
files and row accounting as :mod:`dmlops.data.transform` (rows keep the input's order)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.errors import DataError
from dmlops.data.spark.frames import column, duckdb_text, epoch_micros, read_parquet, time_value, write_parquet
from dmlops.data.spark.sandbox import check_expression
from dmlops.data.transform import SplitResult, TransformResult

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

_UNITS = {
    "microsecond": 1, "us": 1, "millisecond": 1_000, "ms": 1_000, "second": 1_000_000, "sec": 1_000_000,
    "s": 1_000_000, "minute": 60_000_000, "min": 60_000_000, "m": 60_000_000, "hour": 3_600_000_000,
    "hr": 3_600_000_000, "h": 3_600_000_000, "day": 86_400_000_000, "d": 86_400_000_000,
    "week": 604_800_000_000, "w": 604_800_000_000,
}
_PART = re.compile(r"\s*([+-]?\d+(?:\.\d+)?)\s*([a-z]+)\s*")


def fixed_interval(text: str, what: str) -> timedelta:
    """An interval of fixed length (``'1 day'``, ``'6 hours'``, ``'1 day 12 hours'``; weeks down to
    microseconds) as a timedelta; months and years, whose length varies, are refused with the reason."""
    micros, position, cleaned = 0.0, 0, text.strip().lower()
    while position < len(cleaned):
        match = _PART.match(cleaned, position)
        unit = match.group(2) if match else ""
        unit = unit[:-1] if unit.endswith("s") and unit[:-1] in _UNITS else unit
        if not match or unit not in _UNITS:
            raise DataError(
                f"{what}={text!r}: the Spark engine takes intervals of fixed length, e.g. '1 day', '6 hours' or "
                "'90 minutes' (weeks, days, hours, minutes, seconds, milliseconds, microseconds)")
        micros += float(match.group(1)) * _UNITS[unit]
        position = match.end()
    if not cleaned:
        raise DataError(f"{what} is empty; give an interval such as '1 day'")
    return timedelta(microseconds=round(micros))


def derive_columns(
    input_path: str, output_path: str, quarantine_path: str, *, columns: dict[str, str],
    quarantine_when: str = "", quarantine_reason: str = "quarantined by rule",
) -> TransformResult:
    """:func:`dmlops.data.transform.derive_columns` with Spark SQL expressions."""
    from pyspark.sql import functions as F

    frame = read_parquet(input_path)
    checked = {name: F.expr(check_expression(sql, f"column {name!r}")) for name, sql in columns.items()}
    condition = (F.coalesce(F.expr(check_expression(quarantine_when, "quarantine_when")), F.lit(False))
                 if quarantine_when else F.lit(False))
    selected = [checked[name].alias(name) if name in checked else column(name) for name in frame.columns]
    selected += [expression.alias(name) for name, expression in checked.items() if name not in frame.columns]
    source = frame.select(*selected, condition.alias("__quarantine"))
    try:
        rows_out = write_parquet(source.where(~F.col("__quarantine")).drop("__quarantine"), output_path)
        rows_quarantined = write_parquet(
            source.where(F.col("__quarantine")).drop("__quarantine").withColumn("_reason", F.lit(quarantine_reason)),
            quarantine_path)
    except Exception as error:  # Spark's analysis and execution errors: name the step and the inputs
        if isinstance(error, DataError):
            raise
        raise DataError(f"derive_columns on {input_path} failed (check the column expressions and "
                        f"quarantine_when): {' '.join(str(error).split())[:2000]}") from None
    result = TransformResult(rows_in=pq.ParquetFile(input_path).metadata.num_rows, rows_out=rows_out,
                             rows_quarantined=rows_quarantined)
    if result.rows_quarantined:
        result.quarantine_reasons = {quarantine_reason: result.rows_quarantined}
    assert result.rows_in == result.rows_out + result.rows_quarantined, result
    return result


def _time_range(frame: DataFrame, name: str, data_type: pa.DataType) -> tuple[str, str]:
    """The min and max of a time column as DuckDB's text of them ("" when there are no rows)."""
    from pyspark.sql import functions as F

    if pa.types.is_timestamp(data_type) or pa.types.is_date(data_type):
        low, high = frame.agg(F.min(epoch_micros(column(name))), F.max(epoch_micros(column(name)))).collect()[0]
        return duckdb_text(time_value(low, data_type)), duckdb_text(time_value(high, data_type))
    low, high = frame.agg(F.min(column(name)), F.max(column(name))).collect()[0]
    return duckdb_text(low), duckdb_text(high)


def split_by_time(
    input_path: str, train_path: str, eval_path: str, quarantine_path: str, *, time_column: str,
    cutoff: datetime, gap: str = "",
) -> SplitResult:
    """:func:`dmlops.data.transform.split_by_time` on Spark, from the parsed ``cutoff`` (aware) and a
    fixed-length ``gap``."""
    from pyspark.sql import functions as F

    end = cutoff + fixed_interval(gap, "gap") if gap else cutoff
    data_type = pq.read_schema(input_path).field(time_column).type
    frame = read_parquet(input_path)
    time = column(time_column).cast("timestamp")
    reason = F.when(column(time_column).isNull(), F.lit(f"null {time_column}")).otherwise(
        F.lit("inside the gap before eval_from"))
    train, evaluation = frame.where(time < F.lit(cutoff)), frame.where(time >= F.lit(end))
    quarantined = frame.where(column(time_column).isNull() | ((time >= F.lit(cutoff)) & (time < F.lit(end))))
    try:
        rows_train = write_parquet(train, train_path)
        rows_eval = write_parquet(evaluation, eval_path)
        rows_quarantined = write_parquet(quarantined.withColumn("_reason", reason), quarantine_path)
    except Exception as error:
        raise DataError(f"split_by_time of {input_path} failed: {' '.join(str(error).split())[:2000]}") from None
    train_range = _time_range(read_parquet(train_path), time_column, data_type)
    eval_range = _time_range(read_parquet(eval_path), time_column, data_type)
    result = SplitResult(
        rows_in=pq.ParquetFile(input_path).metadata.num_rows, rows_train=rows_train, rows_eval=rows_eval,
        rows_quarantined=rows_quarantined, train_time_min=train_range[0], train_time_max=train_range[1],
        eval_time_min=eval_range[0], eval_time_max=eval_range[1],
    )
    assert result.rows_in == result.rows_train + result.rows_eval + result.rows_quarantined, result
    return result
