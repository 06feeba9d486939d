"""ingest from Kafka against a real Kafka-protocol server: librdkafka's mock cluster on 127.0.0.1.

A step is killed (SIGKILL) mid-read and after its output is written but before the offsets are committed;
the retried step gives every message exactly once.
"""

import json
import os
import signal
import subprocess
import sys
import uuid

import pyarrow.parquet as pq
import pytest

confluent_kafka = pytest.importorskip("confluent_kafka", reason="the kafka extra (confluent-kafka) is not installed")

from dmlops.data.errors import IngestError  # noqa: E402
from dmlops.data.ingest import ingest  # noqa: E402

SCHEMA = {"columns": {"id": {"type": "int64", "nullable": False}, "value": {"type": "double"}}}


@pytest.fixture(scope="module")
def kafka():
    """A mock cluster of one broker; it lives as long as the producer that started it."""
    producer = confluent_kafka.Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", "log_level": 3})
    broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
    yield producer, f"{broker.host}:{broker.port}"
    producer.flush(10)


def produce(producer, topic, ids, raw=None):
    for index in ids:
        producer.produce(topic, json.dumps({"id": index, "value": index / 2}).encode(), key=str(index).encode())
        producer.poll(0)
    for value in raw or []:
        producer.produce(topic, value)
    producer.flush(10)


def committed(bootstrap, topic, group):
    consumer = confluent_kafka.Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in consumer.committed(
            [confluent_kafka.TopicPartition(topic, number) for number in partitions], timeout=10)}
    finally:
        consumer.close()


def run(tmp_path, uri, **options):
    options.setdefault("progress", False)
    return ingest(uri, str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"), **options)


def test_reads_the_range_decodes_against_the_schema_and_commits_after(kafka, tmp_path):
    producer, bootstrap = kafka
    topic, group = f"events-{uuid.uuid4().hex[:8]}", "nightly"
    produce(producer, topic, range(1000), raw=[b"not json", b"[1]", None, b'{"id": "x"}',
                                               b'{"id": 12345678901234567890123456}'])
    uri = f"kafka://{bootstrap}/{topic}?group={group}"
    result = run(tmp_path, uri, schema=SCHEMA, max_bad_fraction=0.01)
    table = pq.read_table(tmp_path / "out.parquet")
    assert sorted(table.column("id").to_pylist()) == list(range(1000))
    assert table.schema.field("value").type == "double"
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (1005, 1000, 5)
    quarantine = pq.read_table(tmp_path / "quarantine.parquet")
    assert sorted(quarantine.column("_reason").to_pylist()) == [
        "empty message (no JSON value)",
        "id: integer out of the int64 range (not widened; declare the column as string or double to keep it)",
        "id: not a valid int64", "invalid JSON (Expecting value)", "not a JSON object"]
    assert all(source.startswith(f"kafka://{bootstrap}/{topic}/") for source in quarantine.column("_source").to_pylist())
    partitions = result.metadata()["kafka"]["partitions"]
    assert sum(p["messages"] for p in partitions) == 1005 and all(p["start_offset"] == 0 for p in partitions)
    assert committed(bootstrap, topic, group) == {p["partition"]: p["end_offset"] for p in partitions}

    produce(producer, topic, range(1000, 1100))
    result = run(tmp_path, uri, schema=SCHEMA)
    assert sorted(pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()) == list(range(1000, 1100))
    assert [p["start_offset"] for p in result.metadata()["kafka"]["partitions"]] == [p["end_offset"] for p in partitions]

    result = run(tmp_path, uri, schema=SCHEMA)
    assert result.rows_in == 0 and "no new messages" in result.warnings[-1]
    assert pq.read_table(tmp_path / "out.parquet").column_names == ["id", "value"]


def test_too_many_bad_messages_fail_without_committing(kafka, tmp_path):
    producer, bootstrap = kafka
    topic = f"bad-{uuid.uuid4().hex[:8]}"
    produce(producer, topic, range(10), raw=[b"garbage"])
    with pytest.raises(IngestError, match="the offsets are not committed"):
        run(tmp_path, f"kafka://{bootstrap}/{topic}?group=g", schema=SCHEMA)
    assert not (tmp_path / "out.parquet").exists()
    assert set(committed(bootstrap, topic, "g").values()) == {confluent_kafka.OFFSET_INVALID}


STEP = """
import json, sys, time
import dmlops.data.ingest as ingest_module
import dmlops.data.kafka_source as kafka_source
uri, output, quarantine, stop = sys.argv[1:5]
if stop == "mid-read":
    add, calls = ingest_module._Sink.add, []
    def add_then_stop(self, *args, **kwargs):
        add(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 5:
            print("stopped", flush=True)
            time.sleep(600)
    ingest_module._Sink.add = add_then_stop
if stop == "before-commit":
    def stop_before_commit(*args):
        print("stopped", flush=True)
        time.sleep(600)
    kafka_source._commit = stop_before_commit
schema = {"columns": {"id": {"type": "int64", "nullable": False}, "value": {"type": "double"}}}
result = ingest_module.ingest(uri, output, quarantine, schema=schema, batch_size_bytes=4096, progress=False)
print(json.dumps(result.metadata()["kafka"]), flush=True)
"""


def step(tmp_path, uri, stop):
    """The ingest step as its own process; with ``stop`` it is killed with SIGKILL at that point."""
    command = [sys.executable, "-c", STEP, uri, str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"), stop]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop == "none":
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])
    try:
        assert process.stdout.readline().strip() == "stopped", process.stderr.read()
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    return None


@pytest.mark.parametrize("stop", ["mid-read", "before-commit"])
def test_a_step_killed_and_retried_loses_and_duplicates_nothing(kafka, tmp_path, stop):
    producer, bootstrap = kafka
    topic, group = f"killed-{uuid.uuid4().hex[:8]}", "pipeline"
    produce(producer, topic, range(20_000))
    uri = f"kafka://{bootstrap}/{topic}?group={group}"
    step(tmp_path, uri, stop)
    assert (tmp_path / "out.parquet").exists() == (stop == "before-commit")
    assert set(committed(bootstrap, topic, group).values()) == {confluent_kafka.OFFSET_INVALID}

    produce(producer, topic, range(20_000, 20_500))  # arrives between the kill and the retry
    kafka_metadata = step(tmp_path, uri, "none")
    ids = pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 20_500 and set(ids) == set(range(20_500))
    assert sum(p["messages"] for p in kafka_metadata["partitions"]) == 20_500
    assert committed(bootstrap, topic, group) == {p["partition"]: p["end_offset"] for p in kafka_metadata["partitions"]}
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".")]  # no partial or staging left

    produce(producer, topic, range(20_500, 20_600))
    step(tmp_path, uri, "none")
    assert sorted(pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()) == list(range(20_500, 20_600))
