"""join_labels: delayed labels joined to the prediction log; every prediction and every label counted once."""

from __future__ import annotations

from datetime import timedelta

import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError
from dmlops.monitoring.feedback import join_labels
from monitoring_data import START, traffic, write_labels, write_log


@pytest.fixture
def logged(tmp_path):
    """100 predictions r0..r99, one a minute from START; r1 logged twice (a retried write)."""
    records, labels = traffic(100, seed=3)
    write_log(tmp_path / "log", records + [records[1]])
    return tmp_path / "log", labels


def test_predictions_are_joined_pending_or_expired_and_labels_counted_once(tmp_path, logged):
    log, labels = logged
    corrected = {**labels[0], "label": 1 - labels[0]["label"], "label_time": labels[0]["label_time"] + timedelta(hours=1)}
    arrived = [corrected, *labels[:50], {"request_id": "ghost", "label": 1, "label_time": START}]
    output = tmp_path / "labelled.parquet"
    # at START + 9 h with an 8 h limit: unlabelled r50..r59 are older than 8 h (expired), r60..r99 are not
    counts = join_labels(str(log), str(write_labels(tmp_path / "labels.parquet", arrived)), output,
                         max_label_delay_hours=8, as_of=START + timedelta(hours=9))
    assert (counts.predictions, counts.joined, counts.pending, counts.expired) == (100, 50, 40, 10)
    assert (counts.duplicate_predictions, counts.labels, counts.duplicate_labels, counts.unmatched_labels) == (1, 52, 1, 1)
    assert counts.joined + counts.pending + counts.expired == counts.predictions
    assert counts.labels == counts.joined + counts.duplicate_labels + counts.unmatched_labels + counts.later_labels
    assert counts.joined_fraction == pytest.approx(50 / 60)

    table = pq.read_table(output)
    assert table.column_names == ["request_id", "row", "model_name", "model_version", "prediction_time", "x",
                                  "carrier", "prediction", "label", "label_time", "label_lag_seconds"]
    rows = {row["request_id"]: row for row in table.to_pylist()}
    assert sorted(rows, key=lambda name: int(name[1:])) == [f"r{index}" for index in range(50)]
    assert rows["r0"]["label"] == corrected["label"]  # the later label wins
    assert rows["r7"]["label_lag_seconds"] == (labels[7]["label_time"] - (START + timedelta(minutes=7))).total_seconds()
    assert rows["r7"]["prediction_time"] == START + timedelta(minutes=7)


def test_labels_of_multi_row_requests_join_by_row(tmp_path):
    records = [{"request_id": "batch", "row": row, "time": START, "features": {"x": float(row)}, "prediction": 0.5}
               for row in range(3)]
    write_log(tmp_path / "log", records)
    labels = [{"request_id": "batch", "row": row, "label": row % 2, "label_time": START + timedelta(hours=1)}
              for row in (0, 2, 5)]
    counts = join_labels(str(tmp_path / "log"), str(write_labels(tmp_path / "labels.parquet", labels)),
                         tmp_path / "out.parquet", as_of=START + timedelta(hours=2))
    assert (counts.joined, counts.pending, counts.unmatched_labels) == (2, 1, 1)
    joined = pq.read_table(tmp_path / "out.parquet").select(["row", "x", "label"]).to_pylist()
    assert joined == [{"row": 0, "x": 0.0, "label": 0}, {"row": 2, "x": 2.0, "label": 0}]


def test_a_label_later_than_as_of_had_not_arrived_then(tmp_path, logged):
    log, labels = logged
    as_of = START + timedelta(hours=4)  # labels arrive 2 to 6 hours after each prediction
    late = [label for label in labels if label["label_time"] > as_of]
    assert late  # the traffic's labels arrive over hours: some after as_of
    counts = join_labels(str(log), str(write_labels(tmp_path / "labels.parquet", labels)), tmp_path / "out.parquet",
                         max_label_delay_hours=8, as_of=as_of)
    assert counts.later_labels == len(late) and counts.labels == len(labels)
    assert counts.joined == len(labels) - len(late) and counts.unmatched_labels == counts.duplicate_labels == 0
    joined = set(pq.read_table(tmp_path / "out.parquet")["request_id"].to_pylist())
    assert joined.isdisjoint(label["request_id"] for label in late)
    assert counts.joined + counts.pending + counts.expired == counts.predictions


def test_labels_without_their_columns_are_refused(tmp_path, logged):
    log, _ = logged
    labels = write_labels(tmp_path / "labels.parquet", [{"request_id": "r1", "delayed": 1}])
    with pytest.raises(DataError, match=r"request_id, delayed, label_time; missing \['label_time'\]"):
        join_labels(str(log), str(labels), tmp_path / "out.parquet", label_name="delayed")
