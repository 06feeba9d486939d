"""Row-level transforms of Parquet datasets with DuckDB (or Spark, ``engine="spark"``): derived columns,
quarantine, time splits.

Every function accounts for every row: rows in = rows out (+ rows quarantined).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import duckdb

from dmlops.data.engines import check_engine
from dmlops.data.errors import DataError
from dmlops.data.sandbox import copy_to_parquet, parquet_file, parquet_scan, sandboxed_connection


def _quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _rows(path: str) -> int:
    return parquet_file(path).metadata.num_rows


def _run(connection: duckdb.DuckDBPyConnection, sql: str, what: str) -> None:
    try:
        connection.execute(sql)
    except duckdb.Error as error:
        raise DataError(f"{what} failed: {error}") from None


@dataclass
class TransformResult:
    """Row accounting of a transform; ``quarantine_reasons`` maps reason -> rows."""

    rows_in: int
    rows_out: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    def metadata(self) -> dict:
        """Flat metadata for a KFP artifact."""
        return asdict(self)


def derive_columns(
    input_path: str,
    output_path: str,
    quarantine_path: str,
    *,
    columns: dict[str, str],
    quarantine_when: str = "",
    quarantine_reason: str = "quarantined by rule",
    engine: str = "duckdb",
) -> TransformResult:
    """Add or replace columns computed by SQL expressions; move rows matching ``quarantine_when``
    (a SQL boolean expression over the input columns) to ``quarantine_path`` with a reason column.
    The expressions run sandboxed: they see the input's columns and cannot touch any other file.
    ``engine`` runs them: ``duckdb`` (DuckDB SQL) or ``spark`` (Spark SQL).
    """
    if check_engine(engine) == "spark":
        from dmlops.data.spark.transform import derive_columns as derive

        return derive(input_path, output_path, quarantine_path, columns=columns,
                      quarantine_when=quarantine_when, quarantine_reason=quarantine_reason)
    connection = sandboxed_connection(input_path, output_path, quarantine_path)
    source = parquet_scan(input_path)
    existing = set(parquet_file(input_path).schema_arrow.names)
    replaced = [f"({sql}) AS {_quote_identifier(name)}" for name, sql in columns.items() if name in existing]
    added = [f"({sql}) AS {_quote_identifier(name)}" for name, sql in columns.items() if name not in existing]
    select = "* REPLACE (" + ", ".join(replaced) + ")" if replaced else "*"
    select = ", ".join([select, *added])
    condition = f"coalesce(({quarantine_when}), false)" if quarantine_when else "false"
    _run(connection, f"CREATE VIEW source AS SELECT {select}, {condition} AS __quarantine FROM {source}",
         f"derive_columns on {input_path} (check the column expressions and quarantine_when)")
    copy_to_parquet(connection, "SELECT * EXCLUDE (__quarantine) FROM source WHERE NOT __quarantine", output_path,
                    [input_path])
    copy_to_parquet(connection, f"SELECT * EXCLUDE (__quarantine), {_quote_literal(quarantine_reason)} AS _reason "
                    "FROM source WHERE __quarantine", quarantine_path, [input_path])
    result = TransformResult(
        rows_in=_rows(input_path), rows_out=_rows(output_path), rows_quarantined=_rows(quarantine_path),
    )
    if result.rows_quarantined:
        result.quarantine_reasons = {quarantine_reason: result.rows_quarantined}
    assert result.rows_in == result.rows_out + result.rows_quarantined, result
    return result


@dataclass
class SplitResult:
    """Row accounting of a time split, with the time ranges of both sides."""

    rows_in: int
    rows_train: int
    rows_eval: int
    rows_quarantined: int
    train_time_min: str
    train_time_max: str
    eval_time_min: str
    eval_time_max: str

    def metadata(self) -> dict:
        """Flat metadata for a KFP artifact."""
        return asdict(self)


def split_by_time(
    input_path: str,
    train_path: str,
    eval_path: str,
    quarantine_path: str,
    *,
    time_column: str,
    eval_from: str,
    gap: str = "",
    engine: str = "duckdb",
) -> SplitResult:
    """Split by time without leakage: rows before ``eval_from`` (ISO date/time, UTC when no zone) train,
    rows at or after ``eval_from`` + ``gap`` (a DuckDB interval, e.g. ``'1 day'``) evaluate; rows inside the
    gap or with a null time are quarantined with their reason. ``engine``: ``duckdb`` or ``spark`` (whose
    ``gap`` is a fixed length: weeks down to microseconds).
    """
    check_engine(engine)
    existing = parquet_file(input_path).schema_arrow
    if time_column not in existing.names:
        raise DataError(
            f"{input_path}: time column {time_column!r} not found; columns are {existing.names}. "
            "Pass the dataset's timestamp column as time_column."
        )
    try:
        cutoff = datetime.fromisoformat(eval_from)
    except ValueError:
        raise DataError(f"eval_from={eval_from!r} is not an ISO date or date-time (e.g. 2013-11-01)") from None
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=timezone.utc)
    if engine == "spark":
        from dmlops.data.spark.transform import split_by_time as split

        return split(input_path, train_path, eval_path, quarantine_path, time_column=time_column,
                     cutoff=cutoff, gap=gap)
    connection = sandboxed_connection(input_path, train_path, eval_path, quarantine_path)
    column = _quote_identifier(time_column)
    time_value = f"CAST({column} AS TIMESTAMPTZ)"
    start = f"CAST({_quote_literal(cutoff.isoformat())} AS TIMESTAMPTZ)"
    end = f"({start} + INTERVAL {_quote_literal(gap)})" if gap else start
    _run(connection, f"CREATE VIEW source AS SELECT * FROM {parquet_scan(input_path)}", f"reading {input_path}")
    sides = {
        train_path: f"{time_value} < {start}",
        eval_path: f"{time_value} >= {end}",
    }
    for path, condition in sides.items():
        copy_to_parquet(connection, f"SELECT * FROM source WHERE {condition}", path, [input_path])
    reason = f"CASE WHEN {column} IS NULL THEN 'null {time_column}' ELSE 'inside the gap before eval_from' END"
    copy_to_parquet(connection, f"SELECT *, {reason} AS _reason FROM source WHERE {column} IS NULL OR "
                    f"({time_value} >= {start} AND {time_value} < {end})", quarantine_path, [input_path])
    train_range, eval_range = (connection.execute(
        f"SELECT min({column})::VARCHAR, max({column})::VARCHAR FROM source WHERE {condition}").fetchone()
        for condition in sides.values())
    result = SplitResult(
        rows_in=_rows(input_path), rows_train=_rows(train_path), rows_eval=_rows(eval_path),
        rows_quarantined=_rows(quarantine_path),
        train_time_min=train_range[0] or "", train_time_max=train_range[1] or "",
        eval_time_min=eval_range[0] or "", eval_time_max=eval_range[1] or "",
    )
    assert result.rows_in == result.rows_train + result.rows_eval + result.rows_quarantined, result
    return result
