"""Entity aggregates as a point-in-time feature source (DuckDB over Parquet).

``running_means`` writes, per entity and period, the count and the means of expressions over all rows of
that entity up to the end of the period, stamped when they become known (period end + ``available_after``).
A point-in-time join then gives each row the aggregates of earlier periods only: computed on a training
period, they never see the rows they are joined to, nor any later row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import duckdb

from dmlops.data.engines import check_engine
from dmlops.data.errors import DataError
from dmlops.data.sandbox import copy_to_parquet, parquet_scan, sandboxed_connection
from dmlops.features.errors import FeatureDataError


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class AggregateResult:
    """Row accounting: input rows used, input rows skipped (null entity or time), output rows."""

    rows_in: int
    rows_used: int
    rows_skipped_null_key_or_time: int
    rows_out: int
    entities: int
    timestamp_min: str
    timestamp_max: str

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for a KFP artifact."""
        return asdict(self)


def running_means(
    input_path: str,
    output_path: str,
    *,
    entity_column: str,
    time_column: str,
    means: dict[str, str],
    count_column: str,
    period: str = "1 day",
    available_after: str = "0 seconds",
    timestamp_column: str = "event_timestamp",
    engine: str = "duckdb",
) -> AggregateResult:
    """Write ``entity_column``, ``timestamp_column``, ``count_column`` and one column per ``means`` entry
    (name -> SQL expression over the input columns; nulls are left out of the mean) to ``output_path``.
    ``period`` and ``available_after`` are DuckDB intervals. ``engine="spark"`` computes the same on Spark
    (Spark SQL means, fixed-length intervals)."""
    if not means:
        raise FeatureDataError("means is empty: give output name -> SQL expression, e.g. {'delay_rate': 'label'}")
    if check_engine(engine) == "spark":
        from dmlops.data.spark.features import running_means as compute

        return compute(input_path, output_path, entity_column=entity_column, time_column=time_column,
                       means=means, count_column=count_column, period=period, available_after=available_after,
                       timestamp_column=timestamp_column)
    connection = sandboxed_connection(input_path, output_path)  # the mean expressions are user SQL
    try:
        connection.execute(f"CREATE VIEW source AS SELECT * FROM {parquet_scan(input_path)}")
        columns = [row[0] for row in connection.execute("DESCRIBE source").fetchall()]
    except duckdb.Error as error:
        raise FeatureDataError(f"{input_path} cannot be read as Parquet: {error}") from None
    missing = [name for name in (entity_column, time_column) if name not in columns]
    if missing:
        raise FeatureDataError(f"{input_path}: columns {missing} not found; it has {columns}")
    entity, time = _quote(entity_column), _quote(time_column)
    bucket = f"time_bucket(INTERVAL {_literal(period)}, CAST({time} AS TIMESTAMPTZ))"
    sums = "".join(
        f", sum(CAST(({expression}) AS DOUBLE)) AS __sum_{index}, count(({expression})) AS __count_{index}"
        for index, expression in enumerate(means.values())
    )
    running = "".join(
        f", sum(__sum_{index}) OVER w / nullif(sum(__count_{index}) OVER w, 0) AS {_quote(name)}"
        for index, name in enumerate(means)
    )
    sql = (
        f"WITH per_period AS (SELECT {entity} AS __entity, "
        f"{bucket} + INTERVAL {_literal(period)} + INTERVAL {_literal(available_after)} AS __known_at, "
        f"count(*) AS __rows{sums} FROM source WHERE {entity} IS NOT NULL AND {time} IS NOT NULL GROUP BY ALL) "
        f"SELECT __entity AS {entity}, __known_at AS {_quote(timestamp_column)}, "
        f"CAST(sum(__rows) OVER w AS BIGINT) AS {_quote(count_column)}{running} FROM per_period "
        f"WINDOW w AS (PARTITION BY __entity ORDER BY __known_at ROWS UNBOUNDED PRECEDING) "
        f"ORDER BY __entity, __known_at"
    )
    try:
        copy_to_parquet(connection, sql, output_path, [input_path])
    except DataError as error:
        raise FeatureDataError(
            f"running_means over {input_path} failed (check the mean expressions {means}, period={period!r}, "
            f"available_after={available_after!r}): {error}"
        ) from None
    rows_in, rows_used = connection.execute(
        f"SELECT count(*), count(*) FILTER ({entity} IS NOT NULL AND {time} IS NOT NULL) FROM source").fetchone()
    rows_out, entities, first, last = connection.execute(
        f"SELECT count(*), count(DISTINCT {entity}), min({_quote(timestamp_column)})::VARCHAR, "
        f"max({_quote(timestamp_column)})::VARCHAR FROM ({sql})").fetchone()
    return AggregateResult(
        rows_in=rows_in, rows_used=rows_used, rows_skipped_null_key_or_time=rows_in - rows_used,
        rows_out=rows_out, entities=entities, timestamp_min=first or "", timestamp_max=last or "",
    )
