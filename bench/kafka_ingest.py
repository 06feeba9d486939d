"""Kafka -> Parquet: dmlops ``ingest("kafka://...")`` on 1 M JSON messages, each step killed (SIGKILL)
mid-read and retried, against a bare confluent-kafka consume loop over the same range in the same run.
The server is librdkafka's mock cluster (the real Kafka protocol on 127.0.0.1, in this process). The mock
keeps at most 5 MiB per partition (confluentinc/librdkafka src/rdkafka_mock.c,
rd_kafka_mock_partition_init: max_size) and its topics have 4 partitions (its admin API cannot create
others: it names controller 0, which is no broker), so the 1 M messages go through in rounds of 250 k: each
round produces, runs the step until it is killed, retries it and checks the retried output.

Checks per round: every id of the round exactly once in the retried step's output (0 lost, 0 duplicated),
each partition's range starting where the previous round committed, the group's committed offsets at the
end offsets. Reports messages/s for the retried steps and the bare loop.

Run: ``.venv/bin/python bench/kafka_ingest.py`` (``BENCH_KAFKA_MESSAGES``, ``BENCH_KAFKA_ROUNDS``)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
from confluent_kafka import Consumer, Producer, TopicPartition

STEP = """
import json, sys, time
import dmlops.data.ingest as ingest_module
uri, output, quarantine, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if kill_after:
    add, seen = ingest_module._Sink.add, [0]
    def add_then_stop(self, data, *args, **kwargs):
        add(self, data, *args, **kwargs)
        seen[0] += data.num_rows
        if seen[0] >= kill_after:
            print("stopped", seen[0], flush=True)
            time.sleep(600)
    ingest_module._Sink.add = add_then_stop
schema = {"columns": {"id": {"type": "int64", "nullable": False}, "value": {"type": "double"},
                      "carrier": {"type": "string"}}}
start = time.perf_counter()
result = ingest_module.ingest(uri, output, quarantine, schema=schema, progress=False)
print(json.dumps({"seconds": time.perf_counter() - start, "rows": result.rows_out, "kafka": result.metadata()["kafka"]}))
"""

BARE = """
import json, sys, time
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, starts, ends = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
start = time.perf_counter()
consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bare", "enable.auto.commit": False, "log_level": 3})
consumer.assign([TopicPartition(topic, int(p), offset) for p, offset in starts.items()])
count, size, left = 0, 0, {int(p): end for p, end in ends.items() if end > starts[p]}
while left:
    for message in consumer.consume(10000, timeout=1.0):
        if message.error() is None:
            count += 1
            size += len(message.value())
            if message.offset() + 1 >= left.get(message.partition(), 0):
                left.pop(message.partition(), None)
consumer.close()
print(json.dumps({"seconds": time.perf_counter() - start, "rows": count}))
"""


def produce(producer: Producer, topic: str, ids: range) -> float:
    start = time.perf_counter()
    carriers = ["UA", "AA", "B6", "DL", "EV", "MQ", "US", "WN"]
    for index in ids:
        value = json.dumps({"id": index, "value": index * 0.25, "carrier": carriers[index % 8]}).encode()
        while True:
            try:
                producer.produce(topic, value)
                break
            except BufferError:
                producer.poll(0.05)
        if index % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)
    return time.perf_counter() - start


def killed_step(command: list[str], kill_after: int) -> int:
    """Run the step until it has conformed ``kill_after`` rows, then SIGKILL it; the rows it had."""
    process = subprocess.Popen([*command, str(kill_after)], stdout=subprocess.PIPE, text=True)
    said = process.stdout.readline().split()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    if said[:1] != ["stopped"]:
        raise SystemExit(f"the step was to be killed after {kill_after:,} rows but said {said}")
    return int(said[1])


def committed(bootstrap: str, topic: str, group: str, partitions: list[int]) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "log_level": 3})
    try:
        return {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, number) for number in partitions], timeout=10)}
    finally:
        consumer.close()


def main() -> None:
    count = int(os.environ.get("BENCH_KAFKA_MESSAGES", "1000000"))
    rounds = int(os.environ.get("BENCH_KAFKA_ROUNDS", "4"))
    producer = Producer({"test.mock.num.brokers": 1, "bootstrap.servers": "", "log_level": 3,
                         "queue.buffering.max.messages": 1_000_000, "linger.ms": 20})
    broker = next(iter(producer.list_topics(timeout=10).brokers.values()))
    bootstrap, topic, group = f"{broker.host}:{broker.port}", "flights-events", "bench"
    uri = f"kafka://{bootstrap}/{topic}?group={group}"
    totals = {"messages": 0, "seconds": 0.0, "lost": 0, "duplicated": 0, "bare_messages": 0, "bare_seconds": 0.0}
    committed_before: dict[int, int] = {}
    print(f"{'round':>5} {'messages':>9} {'killed at':>10} {'retry s':>8} {'msg/s':>8} {'lost':>5} {'dup':>4} "
          f"{'resumed':>8} {'committed':>9} {'bare msg/s':>10}")
    print("(killed at: rows conformed when SIGKILL came; resumed: no output published by the killed step and each "
          "partition's range starts at the previous round's commit)")
    with tempfile.TemporaryDirectory(prefix="bench-kafka-") as name:
        for round_number in range(rounds):
            output = Path(name) / f"round-{round_number}.parquet"
            command = [sys.executable, "-c", STEP, uri, str(output), str(Path(name) / f"q-{round_number}.parquet")]
            ids = range(round_number * count // rounds, (round_number + 1) * count // rounds)
            produce(producer, topic, ids)
            stopped = killed_step(command, len(ids) * 4 // 10)
            published = output.exists()
            retried = json.loads(subprocess.run([*command, "0"], check=True, capture_output=True,
                                                text=True).stdout.strip().splitlines()[-1])
            got = pq.read_table(output, columns=["id"]).column("id")
            in_round = pc.filter(got, pc.and_(pc.greater_equal(got, ids.start), pc.less(got, ids.stop)))
            lost, duplicated = len(ids) - pc.count_distinct(in_round).as_py(), len(got) - pc.count_distinct(got).as_py()
            partitions = retried["kafka"]["partitions"]
            starts = {p["partition"]: p["start_offset"] for p in partitions}
            ends = {p["partition"]: p["end_offset"] for p in partitions}
            resumed = all(starts[number] == offset for number, offset in committed_before.items())
            commits = committed(bootstrap, topic, group, list(ends))
            bare = json.loads(subprocess.run([sys.executable, "-c", BARE, bootstrap, topic, json.dumps(starts),
                                              json.dumps(ends)], check=True, capture_output=True,
                                             text=True).stdout.strip())
            rate = len(ids) / retried["seconds"]
            print(f"{round_number + 1:>5} {len(ids):>9,} {stopped:>10,} {retried['seconds']:>8.1f} {rate:>8,.0f} "
                  f"{lost:>5} {duplicated:>4} {str(resumed and not published):>8} {str(commits == ends):>9} "
                  f"{bare['rows'] / bare['seconds']:>10,.0f}")
            committed_before = ends
            totals["messages"] += len(ids)
            totals["seconds"] += retried["seconds"]
            totals["lost"] += lost + (len(got) - len(in_round))
            totals["duplicated"] += duplicated
            totals["bare_messages"] += bare["rows"]
            totals["bare_seconds"] += bare["seconds"]
    rate = totals["messages"] / totals["seconds"]
    bare_rate = totals["bare_messages"] / totals["bare_seconds"]
    print(f"total: {totals['messages']:,} messages, each round's step killed and retried: lost {totals['lost']}, "
          f"duplicated {totals['duplicated']}; retried steps {rate:,.0f} messages/s, bare consume loop "
          f"{bare_rate:,.0f} messages/s")
    print(f"ratio = dmlops step / bare consume loop = {rate / bare_rate:.2f}x (the step also joins the group, fixes the range, "
          "decodes the JSON, conforms it to the schema, writes Parquet and commits)")


if __name__ == "__main__":
    main()
