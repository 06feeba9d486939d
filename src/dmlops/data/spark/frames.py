"""Parquet in and out of Spark, as the DuckDB engine reads and writes it.

A dataset is one Parquet file. Spark reads it with each row's position in the file (``ROW_INDEX``, from
Spark's ``_metadata.row_index``), and writes a DataFrame as part files that are then joined, in order, into
one Parquet file at the output path (row group by row group: memory stays flat), so a Spark step's output
is read like a DuckDB step's.
"""

from __future__ import annotations

import os
import shutil
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.errors import DataError
from dmlops.data.spark.session import spark_session
from dmlops.privacy import encryption

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

ROW_INDEX = "__dmlops_row_index"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def column(name: str) -> Column:
    """The Spark column of this name (any characters: quoted with backticks)."""
    from pyspark.sql import functions as F

    return F.col(quote(name))


def quote(name: str) -> str:
    """A Spark SQL identifier for a column name."""
    return "`" + name.replace("`", "``") + "`"


def read_parquet(path: str | Path, *, row_index: bool = False) -> DataFrame:
    """The Parquet file at ``path`` as a DataFrame; with ``row_index``, plus ``ROW_INDEX`` (0-based)."""
    if not Path(path).is_file():
        raise DataError(f"dataset {path} is not a file; pass the path of a Parquet file")
    if encryption.is_encrypted(str(path)):
        raise DataError(f"dataset {path} is encrypted (Parquet modular encryption); the Spark engine does not "
                        "decrypt: use engine='duckdb'")
    frame = spark_session().read.parquet(str(path))
    if row_index:
        frame = frame.select("*", frame["_metadata.row_index"].alias(ROW_INDEX))
    return frame


def write_parquet(frame: DataFrame, path: str | Path) -> int:
    """Write ``frame`` as one Parquet file at ``path``, rows in the DataFrame's order; the row count."""
    path = Path(path)
    parts = path.with_name(path.name + ".spark-parts")
    frame.write.mode("overwrite").parquet(str(parts))
    try:
        files = sorted(parts.glob("part-*.parquet"))
        schema = pq.read_schema(files[0]).remove_metadata() if files else _arrow_schema(frame)
        rows = 0
        temporary = path.with_name(path.name + ".spark-writing")
        with pq.ParquetWriter(temporary, schema) as writer:
            for file in files:
                parquet = pq.ParquetFile(file)
                for group in range(parquet.num_row_groups):
                    table = parquet.read_row_group(group).replace_schema_metadata(None)
                    writer.write_table(table)
                    rows += table.num_rows
        os.replace(temporary, path)
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return rows


def _arrow_schema(frame: DataFrame) -> pa.Schema:
    return frame.limit(0).toArrow().schema.remove_metadata()


def arrow_rows(frame: DataFrame) -> list[dict[str, Any]]:
    """The rows of a (small) DataFrame as Python values, times as DuckDB gives them: aware UTC datetimes
    for instants, naive ones for local times (not in the Python process's time zone, as ``collect`` would)."""
    return frame.toArrow().to_pylist()


def epoch_seconds(value: Column) -> Column:
    """A date or time column as seconds since 1970-01-01 UTC (DOUBLE, microseconds kept), as DuckDB's
    ``epoch``."""
    from pyspark.sql import functions as F

    return F.unix_micros(value.cast("timestamp")) / F.lit(1_000_000.0)


def epoch_micros(value: Column) -> Column:
    """A date or time column as microseconds since 1970-01-01 UTC."""
    from pyspark.sql import functions as F

    return F.unix_micros(value.cast("timestamp"))


def time_value(micros: int | None, data_type: pa.DataType) -> date | datetime | None:
    """The Python value of a time of this Arrow type from its epoch microseconds, as DuckDB returns it."""
    if micros is None:
        return None
    instant = _EPOCH + timedelta(microseconds=micros)
    if pa.types.is_date(data_type):
        return instant.date()
    return instant if data_type.tz else instant.replace(tzinfo=None)


def duckdb_text(value: Any) -> str:
    """A time or other value as DuckDB's ``CAST(... AS VARCHAR)`` writes it (``2013-01-01 05:00:00+00``)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        if value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        if value.tzinfo is not None:
            text += "+00"
        return text
    if isinstance(value, date):
        return value.isoformat()
    return str(value)
