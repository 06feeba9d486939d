"""A bounded range of a Kafka topic into one Parquet file, exactly once across retries.

``kafka://host:port[,host:port]/topic?group=<consumer group>[&<librdkafka setting>=<value>...]``

At the step's start the range is fixed per partition: from the group's committed offset (the low
watermark when the group has none, or when retention deleted the committed offset) to the high watermark.
Messages are JSON objects (one per message), conformed to the schema like JSON Lines; bad messages go to
the quarantine with their offset in ``_line`` and ``<uri>/<partition>`` in ``_source``. The offsets are
committed only after the Parquet file is in place: a step killed before the commit is retried over the
same range (plus what arrived since) into the same output, so a retried step neither loses nor duplicates
a message. Consumer-group semantics follow Kafka's committed offsets (OffsetCommit/OffsetFetch of a group
with manually assigned partitions); reading stops at the high watermarks taken at the start, as a
bounded Spark/Flink Kafka source does with ``endingOffsets=latest``.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.conform import _target, int64_array
from dmlops.data.errors import IngestError
from dmlops.data.ingest import IngestResult, _Progress
from dmlops.data.publish import _Publisher
from dmlops.data.redaction import QuarantineRedaction
from dmlops.data.record_readers import _json_lines_one_by_one, _parse_json_block, json_types
from dmlops.data.schema import load_schema, type_name
from dmlops.data.sink import _Sink, _SourceCount

OFFSET_UNSET = -1001  # librdkafka's OFFSET_INVALID: the group has no committed offset for the partition
CONSUME_BATCH = 10_000
STALL_SECONDS = 30.0


@dataclass
class KafkaSource:
    """What a ``kafka://`` URI names."""

    uri: str
    bootstrap: str
    topic: str
    group: str
    settings: dict[str, str]


def parse_kafka_uri(uri: str) -> KafkaSource:
    """The brokers, topic, group and extra consumer settings of a ``kafka://`` URI."""
    parsed = urllib.parse.urlsplit(uri)
    topic = parsed.path.strip("/")
    query = dict(urllib.parse.parse_qsl(parsed.query))
    group = query.pop("group", "")
    if not parsed.netloc or not topic or "/" in topic or not group:
        raise IngestError(
            f"source {uri!r}: a Kafka source is kafka://host:port[,host:port]/topic?group=<consumer group>; "
            "the group's committed offsets say where the next read starts"
        )
    return KafkaSource(uri, parsed.netloc, topic, group, query)


@dataclass
class _Partition:
    number: int
    start: int
    end: int
    count: _SourceCount
    digest: Any = field(default_factory=hashlib.sha256)

    def metadata(self) -> dict[str, Any]:
        return {"partition": self.number, "start_offset": self.start, "end_offset": self.end}


def _consumer(source: KafkaSource):
    from confluent_kafka import Consumer

    return Consumer({
        "bootstrap.servers": source.bootstrap, "group.id": source.group, "enable.auto.commit": False,
        "enable.auto.offset.store": False, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
        "log_level": 3, **source.settings,
    })


def _plan(consumer, source: KafkaSource, timeout: float) -> tuple[list[_Partition], list[str]]:
    """Each partition's range, fixed now: committed offset (or low watermark) to high watermark."""
    from confluent_kafka import KafkaException, TopicPartition

    try:
        topic = consumer.list_topics(source.topic, timeout=timeout).topics[source.topic]
        if topic.error is not None:
            raise IngestError(f"source {source.uri}: topic {source.topic!r}: {topic.error.str()}; check its name")
        numbers = sorted(topic.partitions)
        committed = consumer.committed([TopicPartition(source.topic, n) for n in numbers], timeout=timeout)
        partitions, warnings = [], []
        for number, position in zip(numbers, committed):
            low, high = consumer.get_watermark_offsets(TopicPartition(source.topic, number), timeout=timeout)
            start = low if position.offset == OFFSET_UNSET else position.offset
            if start < low:
                warnings.append(f"partition {number}: offsets {start}-{low - 1} were deleted by retention before "
                                "they were read")
                start = low
            count = _SourceCount(f"{source.uri.split('?')[0]}/{number}")
            partitions.append(_Partition(number, start, max(start, high), count))
        return partitions, warnings
    except KafkaException as error:
        raise IngestError(f"source {source.uri}: the brokers did not answer ({error}); check host, port and "
                          "topic") from None


class _Batches:
    """Messages gathered until about ``batch_size_bytes``, then conformed into the sink per partition."""

    def __init__(self, source: KafkaSource, declared: dict | None, publisher: _Publisher,
                 partitions: dict[int, _Partition], batch_size_bytes: int):
        self.source, self.declared, self.publisher = source, declared, publisher
        self.partitions, self.batch_size_bytes = partitions, batch_size_bytes
        self.sink: _Sink | None = None
        self.pending: dict[int, tuple[list[int], list[bytes | None]]] = {}
        self.pending_bytes = 0

    def add(self, partition: int, offsets: list[int], values: list[bytes | None]) -> None:
        """Messages of one partition, in offset order."""
        held_offsets, held_values = self.pending.setdefault(partition, ([], []))
        held_offsets += offsets
        held_values += values
        self.pending_bytes += sum(map(len, filter(None, values)))
        if self.pending_bytes >= self.batch_size_bytes:
            self.flush()

    def flush(self) -> None:
        for number, (offsets, values) in self.pending.items():
            self._conform(self.partitions[number], offsets, values)
        self.pending, self.pending_bytes = {}, 0

    def _conform(self, partition: _Partition, offsets: list[int], values: list[bytes | None]) -> None:
        raw = b"".join(filter(None, values))
        partition.digest.update(raw)
        partition.count.bytes += len(raw)
        block = b"\n".join(value or b"" for value in values) + b"\n"
        clean = None not in values and block.count(b"\n") == len(values) and b"\n\n" not in block \
            and not block.startswith(b"\n")
        table = None
        if clean:
            try:
                table = _parse_json_block(block)
            except pa.ArrowInvalid:
                table = None
            if table is not None and table.num_rows != len(values):  # a blank message, skipped by the reader
                table = None
        unparsed = []
        good = offsets
        if table is None:
            table, unparsed = self._one_by_one(offsets, values)
            refused = {offset for offset, _, _ in unparsed}
            good = [offset for offset in offsets if offset not in refused]
        sink = self._sink(table)
        if unparsed:
            numbers, reasons, texts = zip(*unparsed)
            sink.add_unparsed(partition.count, list(numbers), list(reasons), list(texts))
        sink.add(table, partition.count, partition.count.rows_in - len(unparsed), int64_array(good))

    @staticmethod
    def _one_by_one(offsets: list[int], values: list[bytes | None]) -> tuple[pa.Table, list[tuple[int, str, str]]]:
        """Messages the fast path refused: empty ones and bad JSON as (offset, reason, text), the rest parsed."""
        unparsed = [(offset, "empty message (no JSON value)", "") for offset, value in zip(offsets, values)
                    if value is None or not value.strip()]
        lines = [(offset, value) for offset, value in zip(offsets, values) if value is not None and value.strip()]
        # JSON allows line breaks only between tokens, so one message becomes one JSON line
        block = b"".join(value.replace(b"\n", b" ").replace(b"\r", b" ") + b"\n" for _, value in lines)
        if not block:
            return pa.table({}), unparsed
        table, bad = _json_lines_one_by_one(block, 0)
        return table, unparsed + [(lines[index][0], reason, text) for index, reason, text in bad]

    def _sink(self, first: pa.Table) -> _Sink:
        """The sink, opened on the first batch: the declared schema, else the first batch's types."""
        if self.sink is None:
            declared_names = list((self.declared or {}).get("columns", {}))
            names = first.column_names or declared_names
            target = _target(names, json_types(first), self.declared, self.source.uri)
            self.sink = _Sink(self.publisher.partial["output"], self.publisher.partial["quarantine"], target.names,
                              QuarantineRedaction(self.declared))
            self.sink.open_output(target)
        return self.sink


def _commit(consumer, source: KafkaSource, partitions: list[_Partition]) -> None:
    """Commit each partition's end offset for the group (after the output is in place)."""
    from confluent_kafka import KafkaException, TopicPartition

    moved = [TopicPartition(source.topic, p.number, p.end) for p in partitions if p.end > p.start]
    if not moved:
        return
    try:
        for result in consumer.commit(offsets=moved, asynchronous=False):
            if result.error is not None:
                raise KafkaException(result.error)
    except KafkaException as error:
        raise IngestError(f"source {source.uri}: the output is written but the offsets were not committed "
                          f"({error}); a retry reads the same range again") from None


def ingest_kafka(uri: str, output_path: str, quarantine_path: str, *, schema: dict | str | None = None,
                 max_bad_fraction: float = 0.0, batch_size_bytes: int = 1024 * 1024, progress: bool = True,
                 timeout: float = 30.0) -> IngestResult:
    """Read the bounded range of a ``kafka://`` source into ``output_path`` (see the module docstring)."""
    source = parse_kafka_uri(uri)
    declared = load_schema(schema)
    consumer = _consumer(source)
    try:
        partitions, warnings = _plan(consumer, source, timeout)
        by_number = {p.number: p for p in partitions}
        with _Publisher(output_path, quarantine_path) as publisher:
            batches = _Batches(source, declared, publisher, by_number, batch_size_bytes)
            try:
                with _Progress(progress, sum(p.end - p.start for p in partitions), f"ingest {uri}") as bar:
                    _read_range(consumer, source, by_number, batches, bar.advance, timeout)
                batches.flush()
                sink = batches._sink(pa.table({}))
            finally:
                if batches.sink is not None:
                    batches.sink.close()
            result = _result(sink, publisher, partitions, source, warnings)
            bad_fraction = result.rows_quarantined / result.rows_in if result.rows_in else 0.0
            if bad_fraction > max_bad_fraction:
                publisher.publish(output=False)
                raise IngestError(
                    f"source {uri}: {result.rows_quarantined:,} of {result.rows_in:,} messages ({bad_fraction:.2%}) "
                    f"could not be ingested, more than max_bad_fraction={max_bad_fraction}. Reasons: "
                    f"{list(result.quarantine_reasons.items())[:5]}. The messages are in {quarantine_path}; "
                    "the offsets are not committed."
                )
            publisher.publish(output=True)
        _commit(consumer, source, partitions)
        return result
    finally:
        consumer.close()


def _read_range(consumer, source: KafkaSource, partitions: dict[int, _Partition], batches: _Batches,
                advance, timeout: float) -> None:
    """Consume every partition from its start to its end offset (messages past the end are left)."""
    from confluent_kafka import KafkaError, TopicPartition

    waiting = {number: p for number, p in partitions.items() if p.end > p.start}
    consumer.assign([TopicPartition(source.topic, number, p.start) for number, p in waiting.items()])
    last_progress = time.monotonic()
    left = {number: p.end - p.start for number, p in waiting.items()}
    while waiting:
        # ask for no more than is left, or the last call waits out its timeout for messages that never come
        messages = consumer.consume(max(1, min(CONSUME_BATCH, sum(left.values()))), timeout=1.0)
        errors = [message.error() for message in messages]
        if any(error is not None for error in errors):
            for error in errors:
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise IngestError(f"source {source.uri}: reading failed ({error.str()})")
            messages = [message for message, error in zip(messages, errors) if error is None]
        numbers = [message.partition() for message in messages]
        all_offsets = [message.offset() for message in messages]
        all_values = [message.value() for message in messages]
        by_partition = {}
        for number in set(numbers):
            if len(by_partition) == 0 and numbers.count(number) == len(numbers):
                by_partition[number] = (all_offsets, all_values)
            else:
                picked = [index for index, each in enumerate(numbers) if each == number]
                by_partition[number] = ([all_offsets[i] for i in picked], [all_values[i] for i in picked])
        for number, (offsets, values) in by_partition.items():
            end = partitions[number].end
            if offsets[-1] >= end:  # past the range fixed at the start: left for the next run
                kept = bisect.bisect_left(offsets, end)
                offsets, values = offsets[:kept], values[:kept]
            if offsets:
                batches.add(number, offsets, values)
        if messages:
            advance(len(messages))
            last_progress = time.monotonic()
        positions = consumer.position([TopicPartition(source.topic, number) for number in waiting])
        for position in positions:
            left[position.partition] = max(0, waiting[position.partition].end - max(position.offset, 0))
            if position.offset >= waiting[position.partition].end:
                del waiting[position.partition]
        if waiting and time.monotonic() - last_progress > max(timeout, STALL_SECONDS):
            stuck = {number: p.end for number, p in waiting.items()}
            raise IngestError(f"source {source.uri}: no messages for {STALL_SECONDS:.0f} s before the end offsets "
                              f"{stuck}; check the brokers")


def _result(sink: _Sink, publisher: _Publisher, partitions: list[_Partition], source: KafkaSource,
            warnings: list[str]) -> IngestResult:
    offsets = sum(p.end - p.start for p in partitions)
    messages = sum(p.count.rows_in for p in partitions)
    if messages != offsets:
        warnings.append(f"{messages} messages in offset ranges spanning {offsets} offsets (compaction or "
                        "transaction markers)")
    if not messages:
        warnings.append(f"source {source.uri}: no new messages for group {source.group!r}; 0 rows ingested")
    for p in partitions:
        p.count.sha256 = p.digest.hexdigest()
        p.count.extra = p.metadata()
    output = publisher.partial["output"]
    result = IngestResult(
        rows_in=sum(p.count.rows_in for p in partitions),
        rows_out=sink.rows_out,
        rows_quarantined=sink.rows_quarantined,
        quarantine_reasons=dict(sink.reasons.most_common()),
        bytes_in=sum(p.count.bytes for p in partitions),
        bytes_out=os.path.getsize(output),
        schema=[{"name": f.name, "type": type_name(f.type), "nullable": f.nullable} for f in pq.read_schema(output)],
        sources=[{"uri": p.count.uri, "bytes": p.count.bytes, "sha256": p.count.sha256, "rows_in": p.count.rows_in,
                  **p.count.extra} for p in partitions],
        warnings=warnings,
        extra={"kafka": {"brokers": source.bootstrap, "topic": source.topic, "group": source.group,
                         "partitions": [p.metadata() | {"messages": p.count.rows_in} for p in partitions]}},
    )
    if result.rows_in != result.rows_out + result.rows_quarantined:
        raise AssertionError(f"row accounting broken: {result}")
    return result
