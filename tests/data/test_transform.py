"""derive_columns and split_by_time: every row accounted for, no leakage across the split."""

from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError
from dmlops.data.transform import derive_columns, split_by_time


@pytest.fixture
def events(tmp_path):
    day = 86_400
    table = pa.table({
        "delay": pa.array([5, 30, None, 16, 15, 0], pa.int64()),
        "at": pa.array([0, 10 * day, 20 * day, None, 40 * day, 50 * day], pa.timestamp("s", tz="UTC")),
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    return str(path)


def test_derive_columns_adds_label_and_quarantines_rows_without_one(events, tmp_path):
    out, quarantine = str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet")
    result = derive_columns(
        events, out, quarantine,
        columns={"label": "CAST(delay > 15 AS INTEGER)"},
        quarantine_when="delay IS NULL", quarantine_reason="no delay",
    )
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (6, 5, 1)
    assert result.quarantine_reasons == {"no delay": 1}
    assert pq.read_table(out).column("label").to_pylist() == [0, 1, 1, 0, 0]
    assert pq.read_table(quarantine).column("_reason").to_pylist() == ["no delay"]


def test_derive_columns_replaces_existing_column(events, tmp_path):
    out = str(tmp_path / "out.parquet")
    derive_columns(events, out, str(tmp_path / "q.parquet"), columns={"delay": "coalesce(delay, -1) * 2"})
    table = pq.read_table(out)
    assert table.column_names == ["delay", "at"]
    assert table.column("delay").to_pylist() == [10, 60, -2, 32, 30, 0]


def test_derive_columns_names_the_bad_expression(events, tmp_path):
    with pytest.raises(DataError, match="events.parquet.*no_such_column"):
        derive_columns(events, str(tmp_path / "o.parquet"), str(tmp_path / "q.parquet"),
                       columns={"x": "no_such_column + 1"})


def test_split_by_time_has_no_leakage_and_accounts_for_every_row(events, tmp_path):
    paths = [str(tmp_path / name) for name in ("train.parquet", "eval.parquet", "q.parquet")]
    result = split_by_time(events, *paths, time_column="at", eval_from="1970-01-22", gap="5 days")
    train, evaluation, quarantine = (pq.read_table(path) for path in paths)
    cutoff = datetime(1970, 1, 22, tzinfo=timezone.utc)
    assert max(train.column("at").to_pylist()) < cutoff
    assert min(evaluation.column("at").to_pylist()) >= datetime(1970, 1, 27, tzinfo=timezone.utc)
    assert (result.rows_train, result.rows_eval, result.rows_quarantined) == (3, 2, 1)
    assert result.rows_in == 6
    assert quarantine.column("_reason").to_pylist() == ["null at"]


def test_split_by_time_quarantines_the_gap(events, tmp_path):
    paths = [str(tmp_path / name) for name in ("train.parquet", "eval.parquet", "q.parquet")]
    result = split_by_time(events, *paths, time_column="at", eval_from="1970-01-05", gap="10 days")
    reasons = sorted(pq.read_table(paths[2]).column("_reason").to_pylist())
    assert reasons == ["inside the gap before eval_from", "null at"]
    assert result.rows_train + result.rows_eval + result.rows_quarantined == 6


@pytest.mark.parametrize("column, eval_from, message", [
    ("when", "1970-01-05", "time column 'when' not found"),
    ("at", "next tuesday", "not an ISO date"),
])
def test_split_by_time_bad_arguments(events, tmp_path, column, eval_from, message):
    paths = [str(tmp_path / name) for name in ("train.parquet", "eval.parquet", "q.parquet")]
    with pytest.raises(DataError, match=message):
        split_by_time(events, *paths, time_column=column, eval_from=eval_from)
