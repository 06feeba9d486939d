"""Per-column statistics of a Parquet dataset, computed by DuckDB without Python row loops.

:func:`compute_statistics` runs two queries over the Parquet file: one aggregate query for every
column's count, nulls, distinct values, min/max/mean/std and quantiles (plus any extra aggregates a
caller adds, such as validation checks, so they share that scan), then one ``GROUPING SETS`` query
for the top values of categorical columns and the histograms of numeric and time columns (whose bins
need the min/max of the first query). The Spark engine (:mod:`dmlops.data.spark.statistics`) measures
the same values and hands them to :func:`assemble_statistics`, which builds the statistics for both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from dmlops.data.errors import DataError
from dmlops.data.sandbox import ROW_NUMBER, parquet_file, parquet_scan, sandboxed_connection

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
NUMERIC, CATEGORICAL, TEMPORAL, OTHER = "numeric", "categorical", "temporal", "other"


def quote_identifier(name: str) -> str:
    """A DuckDB identifier for a column name."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """A DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True)
class ParquetSource:
    """A Parquet file: its path, Arrow schema and DuckDB table expression. The table also has the
    column ``file_row_number``, each row's 0-based position in the file."""

    path: str
    schema: pa.Schema
    sql: str


def open_parquet(path: str | Path) -> ParquetSource:
    """Open a Parquet file for querying; a clear DataError if it does not exist or is not Parquet."""
    location = Path(path)
    if not location.is_file():
        raise DataError(f"dataset {location} is not a file; pass the path of a Parquet file")
    try:
        schema = parquet_file(location).schema_arrow
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"dataset {location} is not readable as Parquet: {error}") from None
    # can_have_nan: Parquet min/max statistics leave NaN out, and without it DuckDB trusts them and
    # folds isnan(x) to false for files written by pyarrow (duckdb/duckdb#25521).
    return ParquetSource(str(location), schema, parquet_scan(location, row_numbers=True, options="can_have_nan = true"))


def connect(*paths: str) -> duckdb.DuckDBPyConnection:
    """A sandboxed DuckDB connection (time zone UTC) that reads only the datasets at ``paths``: the
    statistics and validation checks evaluate SQL from schema documents."""
    return sandboxed_connection(*paths)


def column_kind(data_type: pa.DataType) -> str:
    """``numeric``, ``categorical`` (strings, booleans, dictionaries), ``temporal`` or ``other``."""
    if pa.types.is_integer(data_type) or pa.types.is_floating(data_type) or pa.types.is_decimal(data_type):
        return NUMERIC
    if (pa.types.is_string(data_type) or pa.types.is_large_string(data_type)
            or pa.types.is_boolean(data_type) or pa.types.is_dictionary(data_type)):
        return CATEGORICAL
    if pa.types.is_date(data_type) or pa.types.is_timestamp(data_type):
        return TEMPORAL
    return OTHER


def jsonable(value: Any) -> Any:
    """A JSON-friendly form of a value DuckDB returns (times as ISO 8601 text, decimals as floats)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    return value


@dataclass
class ColumnStatistics:
    """Statistics of one column. ``top_values`` is ``[[value, count], ...]`` most frequent first;
    ``histogram`` is ``[{"lower", "upper", "count"}, ...]`` with equal-width bins over [min, max]."""

    name: str
    type: str
    kind: str
    count: int
    nulls: int
    null_fraction: float
    distinct: int | None = None
    nan: int = 0
    min: Any = None
    max: Any = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = field(default_factory=dict)
    top_values: list[list] = field(default_factory=list)
    histogram: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DatasetStatistics:
    """All column statistics of a dataset, and the values of the extra aggregates asked for."""

    path: str
    rows: int
    columns: dict[str, ColumnStatistics]
    aggregates: dict[str, Any] = field(default_factory=dict)


def quantile_name(quantile: float) -> str:
    """``p05``, ``p50``, ``p95`` ... the name a quantile is stored under."""
    return f"p{round(quantile * 100):02d}"


def _numeric_value(name: str, data_type: pa.DataType) -> tuple[str, str]:
    """The SQL of a numeric column as DOUBLE and the FILTER that keeps its real values (not NaN)."""
    column = quote_identifier(name)
    if pa.types.is_floating(data_type):
        return f"CAST({column} AS DOUBLE)", f" FILTER (WHERE NOT isnan({column}))"
    return f"CAST({column} AS DOUBLE)", ""


def _profile_aggregates(schema: pa.Schema, distributions: bool) -> dict[str, str]:
    aggregates = {"rows": "count(*)"}
    for index, arrow_field in enumerate(schema):
        column, kind = quote_identifier(arrow_field.name), column_kind(arrow_field.type)
        prefix = f"c{index}_"
        aggregates[prefix + "count"] = f"count({column})"
        value, keep = _numeric_value(arrow_field.name, arrow_field.type)
        if kind == NUMERIC and keep:
            aggregates[prefix + "nan"] = f"count_if(isnan({column}))"
        if kind == OTHER or not distributions:
            continue
        if kind == NUMERIC:
            aggregates[prefix + "distinct"] = f"count(DISTINCT {column}){keep}"
            aggregates[prefix + "min"] = f"min({column}){keep}"
            aggregates[prefix + "max"] = f"max({column}){keep}"
            aggregates[prefix + "mean"] = f"avg({value}){keep}"
            aggregates[prefix + "std"] = f"stddev_samp({value}){keep}"
            aggregates[prefix + "quantiles"] = f"quantile_cont({value}, {list(QUANTILES)}){keep}"
        else:
            aggregates[prefix + "distinct"] = f"count(DISTINCT {column})"
            if kind == TEMPORAL:
                aggregates[prefix + "min"] = f"min({column})"
                aggregates[prefix + "max"] = f"max({column})"
                aggregates[prefix + "min_epoch"] = f"epoch(min({column}))"
                aggregates[prefix + "max_epoch"] = f"epoch(max({column}))"
    return aggregates


def run_aggregates(
    connection: duckdb.DuckDBPyConnection, source: ParquetSource, aggregates: dict[str, str],
) -> dict[str, Any]:
    """Evaluate named aggregate SQL expressions in one query over ``source``."""
    select = ", ".join(f"{sql} AS {quote_identifier(name)}" for name, sql in aggregates.items())
    cursor = connection.execute(f"SELECT {select} FROM {source.sql}")
    return dict(zip(aggregates, cursor.fetchone()))


def double_literal(value: float) -> str:
    """A DuckDB DOUBLE literal of exactly this value (a bare ``1.5`` would be a DECIMAL, cast later)."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


@dataclass(frozen=True)
class HistogramBins:
    """The equal-width bins of a numeric or time column: ``lower``, ``width`` and ``upper`` (time as epoch
    seconds). A value's bin is ``floor((value - lower) / width)``, the last bin closed at ``upper``; all
    values are in bin 0 when ``width`` is 0. Every engine bins by this same arithmetic."""

    lower: float
    width: float
    upper: float


def column_bins(schema: pa.Schema, profile: dict[str, Any], bins: int) -> dict[int, HistogramBins]:
    """The bins of each numeric and time column with finite min and max, from the profile aggregates."""
    histograms = {}
    for index, arrow_field in enumerate(schema):
        kind, prefix = column_kind(arrow_field.type), f"c{index}_"
        if kind == NUMERIC:
            lower, upper = profile[prefix + "min"], profile[prefix + "max"]
        elif kind == TEMPORAL:
            lower, upper = profile[prefix + "min_epoch"], profile[prefix + "max_epoch"]
        else:
            continue
        if lower is None or not (math.isfinite(float(lower)) and math.isfinite(float(upper))):
            continue
        lower, upper = float(lower), float(upper)
        histograms[index] = HistogramBins(lower, (upper - lower) / bins, upper)
    return histograms


def _group_keys(schema: pa.Schema, histograms: dict[int, HistogramBins], bins: int) -> dict[int, str]:
    """Grouping keys of the second query: column index -> SQL key. Categorical columns group by their
    text; numeric and time columns by their histogram bin number."""
    keys = {}
    for index, arrow_field in enumerate(schema):
        kind = column_kind(arrow_field.type)
        column = quote_identifier(arrow_field.name)
        if kind == CATEGORICAL:
            keys[index] = f"CAST({column} AS VARCHAR)"
            continue
        if index not in histograms:
            continue
        if kind == NUMERIC:
            value, keep = _numeric_value(arrow_field.name, arrow_field.type)
            if keep:
                value = f"CASE WHEN isnan({column}) THEN NULL ELSE {value} END"
        else:
            value = f"epoch({column})"
        histogram = histograms[index]
        if histogram.width == 0.0:
            keys[index] = f"CASE WHEN {value} IS NULL THEN NULL ELSE 0 END"
        else:
            keys[index] = (f"CASE WHEN {value} >= {double_literal(histogram.upper)} THEN {bins - 1} "
                           f"ELSE CAST(floor(({value} - {double_literal(histogram.lower)}) / "
                           f"{double_literal(histogram.width)}) AS INTEGER) END")
    return keys


def _grouped_counts(
    connection: duckdb.DuckDBPyConnection, source: ParquetSource, keys: dict[int, str], limit: int,
) -> dict[int, list[tuple[Any, int]]]:
    """Per grouping key, its ``limit`` most frequent non-null values (or bin numbers, as text) with their
    counts, most frequent first, ties by value."""
    if not keys:
        return {}
    text_keys = [f"k{index}" for index, sql in keys.items() if sql.startswith("CAST(")]
    bin_keys = [f"k{index}" for index, sql in keys.items() if not sql.startswith("CAST(")]
    projection = ", ".join(f"{sql} AS k{index}" for index, sql in keys.items())
    which = "CASE " + " ".join(f"WHEN GROUPING(k{index}) = 0 THEN {index}" for index in keys) + " END"
    text_value = f"COALESCE({', '.join(text_keys)})" if text_keys else "NULL"
    bin_value = f"COALESCE({', '.join(bin_keys)})" if bin_keys else "NULL"
    sets = ", ".join(f"(k{index})" for index in keys)
    sql = f"""
        WITH grouped AS (
            SELECT {which} AS column_index, {text_value} AS text_value, {bin_value} AS bin_value,
                   count(*) AS n
            FROM (SELECT {projection} FROM {source.sql})
            GROUP BY GROUPING SETS ({sets})
        )
        SELECT column_index, COALESCE(text_value, CAST(bin_value AS VARCHAR)) AS value, n
        FROM grouped WHERE text_value IS NOT NULL OR bin_value IS NOT NULL
        QUALIFY row_number() OVER (PARTITION BY column_index ORDER BY n DESC, value) <= {limit}
        ORDER BY column_index, n DESC, value
    """
    counts: dict[int, list[tuple[Any, int]]] = {}
    for column_index, value, n in connection.execute(sql).fetchall():
        counts.setdefault(column_index, []).append((value, n))
    return counts


def _histogram(kind: str, counts: list[tuple[str, int]], histogram: HistogramBins, bins: int) -> list[dict]:
    by_bin = {int(key): n for key, n in counts}
    lower, width, upper = histogram.lower, histogram.width, histogram.upper
    if width == 0.0:
        edges = [(lower, upper)]
    else:
        edges = [(lower + width * i, upper if i == bins - 1 else lower + width * (i + 1)) for i in range(bins)]
    histogram = []
    for index, (low, high) in enumerate(edges):
        if kind == TEMPORAL:
            low = datetime.fromtimestamp(low, timezone.utc).isoformat()
            high = datetime.fromtimestamp(high, timezone.utc).isoformat()
        histogram.append({"lower": low, "upper": high, "count": by_bin.get(index, 0)})
    return histogram


def compute_statistics(
    dataset_path: str | Path,
    *,
    aggregates: dict[str, str] | None = None,
    top_values: int = 10,
    histogram_bins: int = 20,
    distributions: bool = True,
    connection: duckdb.DuckDBPyConnection | None = None,
) -> DatasetStatistics:
    """Statistics of every column of a Parquet dataset.

    ``aggregates`` (name -> SQL aggregate over the dataset's columns) are evaluated in the same scan
    as the statistics; their values come back in ``DatasetStatistics.aggregates``. With
    ``distributions=False`` only counts, nulls and NaNs are computed (one cheap query).
    """
    source = open_parquet(dataset_path)
    connection = connection or connect(source.path)
    profile_sql = _profile_aggregates(source.schema, distributions)
    extra = {f"x{index}": sql for index, sql in enumerate((aggregates or {}).values())}
    try:
        values = run_aggregates(connection, source, {**profile_sql, **extra})
    except duckdb.Error as error:
        for name, sql in (aggregates or {}).items():
            try:
                run_aggregates(connection, source, {"probe": sql})
            except duckdb.Error as probe_error:
                raise DataError(f"{name} cannot be evaluated on {source.path}: {probe_error}") from None
        raise DataError(f"statistics of {source.path} failed: {error}") from None
    histograms = column_bins(source.schema, values, histogram_bins) if distributions else {}
    keys = _group_keys(source.schema, histograms, histogram_bins) if distributions else {}
    grouped = _grouped_counts(connection, source, keys, max(top_values, histogram_bins))
    return assemble_statistics(source, values, grouped, histograms, list(aggregates or {}),
                               top_values=top_values, bins=histogram_bins)


def assemble_statistics(
    source: ParquetSource, values: dict[str, Any], grouped: dict[int, list[tuple[Any, int]]],
    histograms: dict[int, HistogramBins], aggregate_names: list[str], *, top_values: int, bins: int,
) -> DatasetStatistics:
    """The statistics of a dataset from what an engine measured: ``values`` of the profile aggregates
    (``rows`` and ``c<column index>_<statistic>``) and of the extra aggregates (``x<index>``), and
    ``grouped``, per column index, the most frequent values or histogram bins (as from :func:`_grouped_counts`)."""
    rows = values["rows"]
    columns = {}
    for index, arrow_field in enumerate(source.schema):
        prefix, kind = f"c{index}_", column_kind(arrow_field.type)
        count = values[prefix + "count"]
        stats = ColumnStatistics(
            name=arrow_field.name, type=str(arrow_field.type), kind=kind, count=count,
            nulls=rows - count, null_fraction=(rows - count) / rows if rows else 0.0,
            distinct=values.get(prefix + "distinct"), nan=values.get(prefix + "nan", 0),
            min=jsonable(values.get(prefix + "min")), max=jsonable(values.get(prefix + "max")),
            mean=values.get(prefix + "mean"), std=values.get(prefix + "std"),
        )
        if values.get(prefix + "quantiles") is not None:
            stats.quantiles = dict(zip(map(quantile_name, QUANTILES), values[prefix + "quantiles"]))
        top = grouped.get(index, [])
        if kind == CATEGORICAL:
            stats.top_values = [[value, n] for value, n in top[:top_values]]
        elif index in histograms:
            stats.histogram = _histogram(kind, top, histograms[index], bins)
        columns[arrow_field.name] = stats
    extra_values = {name: values[f"x{index}"] for index, name in enumerate(aggregate_names)}
    return DatasetStatistics(source.path, rows, columns, extra_values)
