"""Prediction logging: the PredictionLog writer (buffer bound, slow and failing stores, S3) and the predictor
logging through it in a real model server, request ids in and out."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from dmlops.serving import metrics
from dmlops.serving.local import start_server, stop_server
from dmlops.serving.log_layout import LOG_SCHEMA, read_log
from dmlops.serving.prediction_log import PredictionLog, request_id
from serving_helpers import offline_probabilities, v2_body

MODEL = "flights-delay"


def dropped(model: str, reason: str) -> float:
    return metrics.log_rows_dropped.labels(model, reason)._value.get()


def test_request_id_comes_from_the_headers_the_v2_id_or_is_generated():
    assert request_id({"X-Request-Id": "abc", "ce-id": "ce"}) == "abc"
    assert request_id({"ce-id": "ce-1"}, "v2-id") == "ce-1"
    assert request_id({}, "v2-id") == "v2-id"
    generated = {request_id(None) for _ in range(3)}
    assert len(generated) == 3 and all(len(value) == 32 for value in generated)


def test_rows_are_written_as_hourly_parquet_and_read_back(tmp_path):
    log = PredictionLog(str(tmp_path / "log"), model_name="m", model_version="7", flush_seconds=0.05).start()
    assert log.record("r1", [{"a": 1.0, "c": "x"}, {"a": None, "c": "y"}], np.array([0.25, 0.75]))
    assert log.record("r2", {"pixels": np.arange(6, dtype=np.float32).reshape(2, 3)}, np.array([[0.1, 0.9], [0.6, 0.4]]))
    log.close()
    assert log.written_rows == 4 and log.dropped_rows == 0
    (path,) = log.files
    hour = datetime.now(timezone.utc)
    assert f"/dt={hour:%Y-%m-%d}/hour=" in path and path.endswith(".parquet")
    assert pq.read_schema(path) == LOG_SCHEMA
    table = read_log(str(tmp_path / "log"))
    rows = table.to_pylist()
    assert [(row["request_id"], row["row"]) for row in rows] == [("r1", 0), ("r1", 1), ("r2", 0), ("r2", 1)]
    assert {row["model_name"] for row in rows} == {"m"} and {row["model_version"] for row in rows} == {"7"}
    assert json.loads(rows[1]["features"]) == {"a": None, "c": "y"}
    assert json.loads(rows[2]["features"]) == {"pixels": [0.0, 1.0, 2.0]}
    assert [row["prediction"] for row in rows] == [0.25, 0.75, None, None]  # vectors: only in output
    assert json.loads(rows[3]["output"]) == pytest.approx([0.6, 0.4])
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    assert read_log(str(tmp_path / "log"), since=later).num_rows == 0
    assert read_log(str(tmp_path / "log"), until=later).num_rows == 4


@pytest.mark.parametrize("rows", [
    [{"a": 1.0, "c": "x"}, {"a": None, "c": "y"}],
    [{"s": "\n  },\n  {"}, {"s": "}\n{", "t": "\u001e\\"}],  # the text the rows are cut at, inside strings
    [{"f": [1, [2, {"z": None}]], "g": {"h": [], "i": {}}}, {"k": np.float32(1.5), "n": np.int64(3)}],
    [{"a": 1}, {}, {"b": 2}], [{}], [],
])
def test_each_logged_row_is_its_own_json_object(rows):
    from dmlops.serving.prediction_log import _json_rows

    texts = _json_rows(rows).to_pylist()
    assert [json.loads(text) for text in texts] == json.loads(json.dumps(rows, default=float))


def test_a_full_buffer_drops_whole_requests_and_counts_them(tmp_path):
    before = dropped("full", "buffer_full")
    log = PredictionLog(str(tmp_path / "log"), model_name="full", max_buffered_rows=5, flush_seconds=60)
    log.start()
    assert log.record("a", [{"x": 1}] * 3, [0.1] * 3)
    assert not log.record("b", [{"x": 1}] * 3, [0.1] * 3)  # 6 > 5 rows: dropped whole, not cut
    assert log.record("c", [{"x": 1}] * 2, [0.1] * 2)
    log.close()
    assert log.dropped_rows == 3 and dropped("full", "buffer_full") - before == 3
    assert sorted(set(read_log(str(tmp_path / "log")).column("request_id").to_pylist())) == ["a", "c"]


def test_a_slow_store_never_blocks_recording(tmp_path):
    """While the writer is stuck in a write, recording goes on until the buffer is full, then drops."""
    log = PredictionLog(str(tmp_path / "log"), model_name="slow", max_buffered_rows=10, batch_rows=1,
                        flush_seconds=60)
    inside, release = threading.Event(), threading.Event()
    write_file = log._write_file

    def stuck_write(hour, entries):
        inside.set()
        release.wait(30)
        write_file(hour, entries)

    log._write_file = stuck_write
    log.start()
    assert log.record("first", [{"x": 1}] * 4, [0.5] * 4)
    assert inside.wait(10)  # the writer holds the first 4 rows in a write that does not return
    results = [log.record(f"r{index}", [{"x": 1}], [0.5]) for index in range(20)]
    assert results == [True] * 6 + [False] * 14  # 4 being written + 6 buffered = 10; the rest dropped
    release.set()
    log.close()
    assert log.written_rows == 10 and log.dropped_rows == 14


def test_a_failing_store_counts_its_rows_and_logging_goes_on(tmp_path):
    before = dropped("failing", "write_failed")
    log = PredictionLog(str(tmp_path / "log"), model_name="failing", batch_rows=1, flush_seconds=60)
    write_file, calls = log._write_file, []

    def fail_once(hour, entries):
        calls.append(hour)
        if len(calls) == 1:
            raise OSError("store unavailable")
        write_file(hour, entries)

    log._write_file = fail_once
    log.start()
    log.record("lost", [{"x": 1}] * 2, [0.5] * 2)
    deadline = time.monotonic() + 10
    while log.dropped_rows < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    log.record("kept", [{"x": 1}], [0.5])
    log.close()
    assert log.dropped_rows == 2 and dropped("failing", "write_failed") - before == 2
    assert read_log(str(tmp_path / "log")).column("request_id").to_pylist() == ["kept"]


def test_the_log_is_written_to_s3(s3_server, monkeypatch):
    import boto3

    for name, value in {"AWS_ENDPOINT_URL": s3_server, "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="predictions")
    log = PredictionLog("s3://predictions/flights", model_name="m", flush_seconds=0.05).start()
    log.record("s3-1", [{"a": 1}], [0.5])
    log.close()
    assert log.written_rows == 1
    keys = [item["Key"] for item in boto3.client("s3", endpoint_url=s3_server)
            .list_objects_v2(Bucket="predictions")["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("flights/dt=")
    assert read_log("s3://predictions/flights").column("request_id").to_pylist() == ["s3-1"]


def test_the_model_server_logs_every_answered_request(model_dir, eval_rows, tmp_path):
    log_dir = tmp_path / "log"
    server = start_server(str(model_dir), MODEL, log_dir=tmp_path / "server",
                          extra_args=("--prediction_log", str(log_dir), "--model_version", "3"))
    try:
        v1 = requests.post(server.predict_url, json={"instances": eval_rows[:3]}, headers={"x-request-id": "given"})
        assert v1.status_code == 200 and v1.headers["x-request-id"] == "given"
        generated = requests.post(server.predict_url, json={"instances": eval_rows[3:4]})
        assert len(generated.headers["x-request-id"]) == 32
        cloudevent = requests.post(server.predict_url, json={"instances": eval_rows[4:5]}, headers={"ce-id": "ce-7"})
        assert cloudevent.headers["x-request-id"] == "ce-7"
        v2 = requests.post(f"{server.url}/v2/models/{MODEL}/infer", json=v2_body(eval_rows[5:7], "v2-req"))
        assert v2.json()["id"] == "v2-req" and v2.headers["x-request-id"] == "v2-req"
        rejected = requests.post(server.predict_url, json={"instances": [{"unknown": 1}]})
        assert rejected.status_code == 400  # not answered: not logged
    finally:
        stop_server(server)  # SIGTERM: the predictor writes what its log still holds
    table = read_log(str(log_dir)).sort_by([("request_id", "ascending"), ("row", "ascending")])
    ids = table.column("request_id").to_pylist()
    assert sorted(set(ids)) == sorted({"given", generated.headers["x-request-id"], "ce-7", "v2-req"})
    assert ids.count("given") == 3 and ids.count("v2-req") == 2 and table.num_rows == 7
    assert set(table.column("model_version").to_pylist()) == {"3"}
    given = [row for row in table.to_pylist() if row["request_id"] == "given"]
    assert [json.loads(row["features"]) for row in given] == eval_rows[:3]
    np.testing.assert_allclose([row["prediction"] for row in given], v1.json()["predictions"])
    np.testing.assert_allclose([row["prediction"] for row in given], offline_probabilities(model_dir, eval_rows[:3]),
                               rtol=1e-6, atol=1e-7)
