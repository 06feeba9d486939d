"""Ingest CSV, Parquet or JSON Lines files into one Parquet file, streaming in batches.

Rows that cannot be parsed, or that break the declared schema (type, nullability), go to a quarantine
Parquet file with their source, line/row number, reason and raw values (never the raw values of columns
the schema marks ``pii``: :mod:`dmlops.data.redaction`); rows in = rows out + rows quarantined, always.
Every non-empty physical CSV line is one record: a quote left open on its line quarantines that line, never
the lines after it. Undeclared CSV column types are sniffed from every value
of the input (not the first block), so a value's position cannot change a column's type; JSON Lines
types come from the first block, Parquet's from the file. Outputs are written under temporary names and
renamed into place only on success.

The modules it uses: :mod:`dmlops.data.csv_reader` (CSV lines and the two passes),
:mod:`dmlops.data.record_readers` (Parquet, JSON Lines), :mod:`dmlops.data.type_sniffer` and
:mod:`dmlops.data.conform` (types, type checks), :mod:`dmlops.data.sink` (output and quarantine, whose
columns it describes), :mod:`dmlops.data.publish` (temporary names) and :mod:`dmlops.data.source_stream`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.conform import _target, cast_with_failures, int64_array
from dmlops.data.csv_reader import _csv_plan, read_csv
from dmlops.data.errors import IngestError
from dmlops.data.publish import _Publisher
from dmlops.data.redaction import QuarantineRedaction
from dmlops.data.record_readers import _json_first_schema, _read_jsonl, _read_parquet, json_types
from dmlops.data.schema import load_schema, type_name
from dmlops.data.sink import QUARANTINE_FIELDS, ROW_GROUP_ROWS, _Sink, _SourceCount
from dmlops.data.source_stream import _READ_ERRORS, _read_error, _read_errors, shown
from dmlops.data.sources import SourceFile, local_copy, resolve_sources

__all__ = ["DEFAULT_BATCH_SIZE_BYTES", "DEFAULT_NULL_VALUES", "QUARANTINE_FIELDS", "ROW_GROUP_ROWS", "IngestResult",
           "cast_with_failures", "ingest", "int64_array", "json_types", "shown"]

LOG = logging.getLogger(__name__)
DEFAULT_NULL_VALUES = ("", "NA", "N/A", "NULL", "null")
DEFAULT_BATCH_SIZE_BYTES = 1024 * 1024


@dataclass
class IngestResult:
    """What an ingestion read, wrote and quarantined; ``quarantine_reasons`` maps reason -> rows."""

    rows_in: int
    rows_out: int
    rows_quarantined: int
    quarantine_reasons: dict[str, int]
    bytes_in: int
    bytes_out: int
    schema: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # what a source adds, e.g. Kafka offsets

    def metadata(self) -> dict[str, Any]:
        """JSON-able metadata for the KFP dataset artifact."""
        return {
            "rows": self.rows_out,
            "rows_in": self.rows_in,
            "rows_quarantined": self.rows_quarantined,
            "quarantine_reasons": dict(self.quarantine_reasons),
            "bytes": self.bytes_out,
            "bytes_in": self.bytes_in,
            "schema": self.schema,
            "source_uris": [source["uri"] for source in self.sources],
            "sources": self.sources,
            "warnings": list(self.warnings),
            **self.extra,
        }

    def to_markdown(self) -> str:
        """A short human report: counts, sources with digests, schema and quarantine reasons."""
        lines = [
            "## Ingestion",
            "",
            f"Rows in **{self.rows_in:,}** = rows out **{self.rows_out:,}** + quarantined "
            f"**{self.rows_quarantined:,}**; {self.bytes_in:,} bytes read, {self.bytes_out:,} bytes written.",
            "",
            "| source | bytes | rows | sha256 |", "|---|---:|---:|---|",
        ]
        lines += [f"| `{s['uri']}` | {s['bytes']:,} | {s['rows_in']:,} | `{s['sha256'][:16]}…` |"
                  for s in self.sources]
        lines += ["", "| column | type | nullable |", "|---|---|---|"]
        lines += [f"| `{c['name']}` | {c['type']} | {'yes' if c['nullable'] else 'no'} |" for c in self.schema]
        if self.warnings:
            lines += ["", *[f"> **Warning:** {warning}" for warning in self.warnings]]
        if self.quarantine_reasons:
            lines += ["", "| quarantine reason | rows |", "|---|---:|"]
            lines += [f"| {reason} | {count:,} |" for reason, count in
                      sorted(self.quarantine_reasons.items(), key=lambda item: -item[1])]
        return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- progress

class _Progress:
    """A progress bar on stderr by bytes read; a no-op when disabled."""

    def __init__(self, enabled: bool, total: int | None, description: str):
        self._bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True))
            self._task = self._bar.add_task(description, total=total)

    def __enter__(self) -> _Progress:
        if self._bar:
            self._bar.start()
        return self

    def __exit__(self, *exc_info) -> None:
        if self._bar:
            self._bar.stop()

    def advance(self, count: int) -> None:
        if self._bar:
            self._bar.advance(self._task, count)


# ---------------------------------------------------------------------------------------------- ingest

def ingest(
    source: str,
    output_path: str,
    quarantine_path: str,
    *,
    file_format: str = "auto",
    schema: dict | str | None = None,
    max_bad_fraction: float = 0.0,
    delimiter: str | None = None,
    null_values: list[str] | None = None,
    batch_size_bytes: int = DEFAULT_BATCH_SIZE_BYTES,
    progress: bool = True,
) -> IngestResult:
    """Ingest ``source`` (a file, glob or folder; local, file://, gs://, s3://, http(s)://, pkg://; or a
    bounded range of a topic, ``kafka://``, see :mod:`dmlops.data.kafka_source`) into the Parquet file
    ``output_path``. Rows that cannot be parsed or break ``schema`` (a dmlops schema
    document: dict, JSON text or file path) go to ``quarantine_path`` with a reason. Fails with
    IngestError when the quarantined fraction exceeds ``max_bad_fraction``; a source with a header and no
    data rows gives 0 rows and a warning. ``null_values`` are the CSV cells read as null (default
    ``DEFAULT_NULL_VALUES``). Both outputs are written under temporary names and appear only when the
    ingestion succeeds (the quarantine also when it fails for too many bad rows, for inspection).
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise IngestError(f"max_bad_fraction={max_bad_fraction} must be between 0 and 1")
    if batch_size_bytes < 1024:
        raise IngestError(f"batch_size_bytes={batch_size_bytes} is too small; use at least 1024")
    if source.strip().startswith("kafka://"):
        from dmlops.data.kafka_source import ingest_kafka

        return ingest_kafka(source.strip(), output_path, quarantine_path, schema=schema,
                            max_bad_fraction=max_bad_fraction, batch_size_bytes=batch_size_bytes, progress=progress)
    declared = load_schema(schema)
    files = resolve_sources(source, file_format)
    formats = sorted({item.file_format for item in files})
    if len(formats) > 1:
        raise IngestError(
            f"source {source}: files of different formats {formats}; ingest one format at a time or pass file_format"
        )
    nulls = list(DEFAULT_NULL_VALUES if null_values is None else null_values)
    with _Publisher(output_path, quarantine_path) as publisher:
        result = _ingest_files(files, source, publisher, declared, max_bad_fraction, delimiter, nulls,
                               batch_size_bytes, progress)
        if result.rows_in == 0:
            result.warnings.append(f"source {source}: no data rows (header only); 0 rows ingested")
            LOG.warning(result.warnings[-1])
        bad_fraction = result.rows_quarantined / result.rows_in if result.rows_in else 0.0
        if bad_fraction > max_bad_fraction:
            publisher.publish(output=False)
            reasons = ", ".join(f"{reason!r}: {n}" for reason, n in list(result.quarantine_reasons.items())[:5])
            raise IngestError(
                f"source {source}: {result.rows_quarantined:,} of {result.rows_in:,} rows ({bad_fraction:.2%}) "
                f"could not be ingested, more than max_bad_fraction={max_bad_fraction}. Reasons: {reasons}. The "
                f"rows are in {quarantine_path}. Fix the source (or the declared schema), or raise "
                "max_bad_fraction to accept them."
            )
        publisher.publish(output=True)
    return result


def _ingest_files(files: list[SourceFile], source: str, publisher: _Publisher, declared: dict | None,
                  max_bad_fraction: float, delimiter: str | None, nulls: list[str], block_size: int,
                  progress: bool) -> IngestResult:
    """Read every file into the publisher's partial outputs and count the rows.

    CSV column types are sniffed from every value (:func:`dmlops.data.csv_reader.read_csv`: one pass where
    the types of the first records hold, else two). Parquet and JSON Lines carry their own types and are
    conformed as they are read.
    """
    first = files[0]
    csv_options = None
    if first.file_format == "csv":
        csv_options, names = _csv_plan(first, delimiter, nulls, block_size)
        header = pa.schema([pa.field(name, pa.string()) for name in names])
    elif first.file_format == "parquet":
        try:
            with local_copy(first) as (path, _):
                header = pq.ParquetFile(path).schema_arrow
        except _READ_ERRORS as error:
            raise _read_error(first.uri, error) from None
    else:
        try:
            header = _json_first_schema(first, block_size)
        except _READ_ERRORS as error:
            raise _read_error(first.uri, error) from None
    target = _target(header.names, dict(zip(header.names, header.types)), declared, first.uri)
    redaction = QuarantineRedaction(declared)

    def new_sink() -> _Sink:
        return _Sink(publisher.partial["output"], publisher.partial["quarantine"], target.names, redaction)

    total = sum(item.size for item in files) if all(item.size is not None for item in files) else None
    with _Progress(progress, total, f"ingest {source}") as bar:
        if csv_options is not None:
            sink, counts = read_csv(files, csv_options, target, declared, max_bad_fraction, new_sink,
                                    publisher.staging, bar.advance)
        else:
            sink, counts = new_sink(), [_SourceCount(item.uri, extra=item.extra) for item in files]
            try:
                sink.open_output(target)
                for item, count in zip(files, counts):
                    with _read_errors(item.uri):
                        if item.file_format == "parquet":
                            _read_parquet(item, block_size, sink, count, bar.advance)
                        else:
                            _read_jsonl(item, block_size, sink, count, bar.advance)
            finally:
                sink.close()
    output = publisher.partial["output"]
    result = IngestResult(
        rows_in=sum(count.rows_in for count in counts),
        rows_out=sink.rows_out,
        rows_quarantined=sink.rows_quarantined,
        quarantine_reasons=dict(sink.reasons.most_common()),
        bytes_in=sum(count.bytes for count in counts),
        bytes_out=os.path.getsize(output),
        schema=[{"name": f.name, "type": type_name(f.type), "nullable": f.nullable} for f in pq.read_schema(output)],
        sources=[{"uri": c.uri, "bytes": c.bytes, "sha256": c.sha256, "rows_in": c.rows_in, **c.extra}
                 for c in counts],
        warnings=list(redaction.warnings) if sink.rows_quarantined else [],
    )
    if result.rows_in != result.rows_out + result.rows_quarantined:
        raise AssertionError(f"row accounting broken: {result}")
    return result
