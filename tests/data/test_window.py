"""The training window: a rolling window of the training data plus the labelled production rows, and a
holdout of the latest labelled rows."""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError
from dmlops.data.window import training_window

START = datetime(2026, 1, 1)


def reference(path, days: int = 30):
    times = [START + timedelta(days=day) for day in range(days)]
    pq.write_table(pa.table({"time_hour": pa.array(times, pa.timestamp("us")), "x": [float(d) for d in range(days)],
                             "carrier": ["AA"] * days, "label": [d % 2 for d in range(days)]}), path)
    return str(path)


def labelled(path, count: int, first_day: int = 30):
    times = [datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(days=first_day, hours=hour) for hour in range(count)]
    pq.write_table(pa.table({"request_id": [f"r{i}" for i in range(count)], "row": [0] * count,
                             "prediction_time": pa.array(times, pa.timestamp("us", "UTC")),
                             "x": [100.0 + i for i in range(count)], "prediction": [0.5] * count,
                             "label": [1] * count}), path)
    return str(path)


def test_window_adds_labelled_production_rows_and_holds_out_the_latest(tmp_path):
    counts = training_window(reference(tmp_path / "ref.parquet"), labelled(tmp_path / "lab.parquet", 10),
                             str(tmp_path / "train.parquet"), str(tmp_path / "holdout.parquet"),
                             label="label", time_column="time_hour", window_days=10, holdout_fraction=0.2)
    train, holdout = pq.read_table(tmp_path / "train.parquet"), pq.read_table(tmp_path / "holdout.parquet")
    # the window is the 10 days before the latest production row: reference days 21..29, production rows
    assert (counts.reference_rows, counts.production_rows, counts.holdout_rows) == (9, 10, 2)
    assert train.num_rows == 17 and train.column_names == ["time_hour", "x", "carrier", "label"]
    assert sorted(holdout["x"].to_pylist()) == [108.0, 109.0]  # the latest labelled rows
    assert holdout["carrier"].null_count == 2  # not in the prediction log: null
    assert train.schema.field("time_hour").type == pa.timestamp("us", "UTC")


def test_without_production_rows_the_holdout_is_the_latest_training_rows(tmp_path):
    counts = training_window(reference(tmp_path / "ref.parquet"), "", str(tmp_path / "train.parquet"),
                             str(tmp_path / "holdout.parquet"), label="label", time_column="time_hour",
                             window_days=365, holdout_fraction=0.1,
                             window_end=datetime(2026, 1, 21, tzinfo=timezone.utc))
    assert (counts.reference_rows, counts.production_rows, counts.holdout_rows) == (20, 0, 2)
    assert pq.read_table(tmp_path / "holdout.parquet")["x"].to_pylist() == [18.0, 19.0]
    with pytest.raises(DataError, match="needs the columns 'when' and 'label'"):
        training_window(str(tmp_path / "ref.parquet"), "", str(tmp_path / "t"), str(tmp_path / "h"), label="label",
                        time_column="when", window_days=1)
