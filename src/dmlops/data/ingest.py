"""Ingest CSV, Parquet or JSON Lines files into one Parquet file, streaming in batches.

Rows that cannot be parsed, or that break the declared schema (type, nullability), go to a quarantine
Parquet file with their source, line/row number, reason and raw values; rows in = rows out + rows
quarantined, always. Without a declared schema, column types are inferred from the first rows of the
first file, and later values that do not fit are quarantined with that explanation.

The quarantine file has one string column per data column (the raw values) and:
``_source`` (file URI), ``_line`` (line in the file, for CSV parse errors and bad JSON lines),
``_row`` (1-based record number among the records the parser read from that file), ``_reason`` and
``_raw`` (the raw text of a line that could not be parsed).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from dmlops.data.errors import IngestError, SchemaError
from dmlops.data.schema import arrow_type, load_schema, type_name
from dmlops.data.sources import HashingReader, SourceFile, local_copy, open_stream, resolve_sources

DEFAULT_NULL_VALUES = ("", "NA", "N/A", "NULL", "null")
DEFAULT_BATCH_SIZE_BYTES = 1024 * 1024
ROW_GROUP_ROWS = 128 * 1024
DELIMITER_CANDIDATES = ("\t", ";", "|")
QUARANTINE_FIELDS = [
    pa.field("_source", pa.string()), pa.field("_line", pa.int64()), pa.field("_row", pa.int64()),
    pa.field("_reason", pa.string()), pa.field("_raw", pa.string()),
]
# Values that match these patterns may parse; anything else certainly does not (checked vectorised).
_PARSABLE = {
    "signed": r"^-?[0-9]+$",
    "unsigned": r"^[0-9]+$",
    "floating": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$",
    "boolean": r"^(?i:true|false|1|0)$",
    "temporal": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}",
}


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
        if self.quarantine_reasons:
            lines += ["", "| quarantine reason | rows |", "|---|---:|"]
            lines += [f"| {reason} | {count:,} |" for reason, count in
                      sorted(self.quarantine_reasons.items(), key=lambda item: -item[1])]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- casting

def _pattern_for(target: pa.DataType) -> str | None:
    if pa.types.is_unsigned_integer(target):
        return _PARSABLE["unsigned"]
    if pa.types.is_integer(target):
        return _PARSABLE["signed"]
    if pa.types.is_floating(target):
        return _PARSABLE["floating"]
    if pa.types.is_boolean(target):
        return _PARSABLE["boolean"]
    if pa.types.is_date(target) or pa.types.is_timestamp(target):
        return _PARSABLE["temporal"]
    return None


def _bisect_cast(values: pa.Array, target: pa.DataType, casted: list, failed: list) -> None:
    """Cast halves until each failing value is isolated (only runs on batches with bad values)."""
    try:
        casted.append(pc.cast(values, target))
        failed.append(np.zeros(len(values), dtype=bool))
        return
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if len(values) == 1:
            casted.append(pa.nulls(1, target))
            failed.append(np.ones(1, dtype=bool))
            return
    middle = len(values) // 2
    _bisect_cast(values.slice(0, middle), target, casted, failed)
    _bisect_cast(values.slice(middle), target, casted, failed)


def cast_with_failures(values: pa.Array, target: pa.DataType) -> tuple[pa.Array, pa.Array | None]:
    """Cast ``values`` to ``target``; failing values become null and are flagged in the returned mask
    (None when every value cast). Vectorised: a pattern filter, then one cast per failing half."""
    if values.type == target:
        return values, None
    try:
        return pc.cast(values, target), None
    except pa.ArrowNotImplementedError:
        return pa.nulls(len(values), target), pc.is_valid(values)
    except pa.ArrowInvalid:
        pass
    candidates, rejected = values, None
    pattern = _pattern_for(target)
    if pattern and pa.types.is_string(values.type):
        matches = pc.fill_null(pc.match_substring_regex(values, pattern), False)
        rejected = pc.and_(pc.is_valid(values), pc.invert(matches))
        candidates = pc.if_else(matches, values, pa.scalar(None, values.type))
    casted: list[pa.Array] = []
    failed: list[np.ndarray] = []
    _bisect_cast(candidates, target, casted, failed)
    mask = pa.array(np.concatenate(failed))
    if rejected is not None:
        mask = pc.or_(mask, rejected)
    return pa.concat_arrays(casted), mask


def _as_text(values: pa.Array) -> pa.Array:
    """Values as strings for the quarantine file (bad rows only)."""
    if pa.types.is_string(values.type):
        return values
    try:
        return pc.cast(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([_python_text(value) for value in values.to_pylist()], pa.string())


def _python_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _column(data: pa.RecordBatch | pa.Table, name: str) -> pa.Array:
    column = data.column(name)
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


# --------------------------------------------------------------------------------------------- the plan

@dataclass
class _Target:
    """The output schema and how each column got its type."""

    schema: pa.Schema
    inferred: set[str]
    source_columns: list[str]

    @property
    def names(self) -> list[str]:
        return self.schema.names


def _reader_type(data_type: pa.DataType) -> pa.DataType:
    """An output type for a type the reader inferred: no null or binary columns in the output."""
    if pa.types.is_null(data_type) or pa.types.is_binary(data_type) or pa.types.is_large_binary(data_type):
        return pa.string()
    if pa.types.is_dictionary(data_type):
        return _reader_type(data_type.value_type)
    return data_type


def _target(names: list[str], found: dict[str, pa.DataType], schema: dict | None, uri: str) -> _Target:
    """The output schema: declared types and nullability where declared, reader types elsewhere."""
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise IngestError(
            f"{uri}: duplicate column names {duplicates} in the header; rename them in the source so each "
            "column has its own name"
        )
    declared = (schema or {}).get("columns", {})
    missing = [name for name, rules in declared.items() if name not in names and rules.get("required", True)]
    if missing:
        raise SchemaError(
            f"{uri}: declared columns {missing} are not in the data (columns found: {names}); fix the "
            "source or the schema, or mark the columns \"required\": false"
        )
    fields, inferred = [], set()
    for name in [*names, *[name for name in declared if name not in names]]:
        rules = declared.get(name, {})
        if "type" in rules:
            data_type = arrow_type(rules["type"])
        else:
            data_type = _reader_type(found.get(name, pa.null()))
            inferred.add(name)
        fields.append(pa.field(name, data_type, nullable=rules.get("nullable", True)))
    return _Target(pa.schema(fields), inferred, list(names))


# --------------------------------------------------------------------------------------------- the sink

@dataclass
class _SourceCount:
    uri: str
    rows_in: int = 0
    bytes: int = 0
    sha256: str = ""


class _Sink:
    """Writes conformed rows to the output and bad rows to the quarantine, and counts both."""

    def __init__(self, output_path: str, quarantine_path: str, target: _Target):
        self.target = target
        self.quarantine_schema = pa.schema(
            [pa.field(name, pa.string()) for name in target.names if name not in
             {f.name for f in QUARANTINE_FIELDS}] + QUARANTINE_FIELDS
        )
        for path in (output_path, quarantine_path):
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.output = pq.ParquetWriter(output_path, target.schema)
        self.quarantine = pq.ParquetWriter(quarantine_path, self.quarantine_schema)
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.rows_out = 0
        self.reasons: Counter[str] = Counter()

    def add(self, data: pa.RecordBatch | pa.Table, source: _SourceCount, first_row: int) -> None:
        """Conform a batch to the target schema: good rows to the output, bad rows to the quarantine."""
        source.rows_in += data.num_rows
        good, bad = _conform(data, self.target, source.uri, first_row)
        if good.num_rows:
            self.buffer.append(good)
            self.buffered_rows += good.num_rows
            self.rows_out += good.num_rows
            if self.buffered_rows >= ROW_GROUP_ROWS:
                self.flush()
        if bad is not None:
            self.write_quarantine(bad)

    def add_unparsed(self, source: _SourceCount, lines: list[int | None], reasons: list[str],
                     raw: list[str]) -> None:
        """Rows the parser could not read: quarantined with their line and raw text."""
        if not reasons:
            return
        source.rows_in += len(reasons)
        count = len(reasons)
        columns = {name: pa.nulls(count, pa.string()) for name in self.quarantine_schema.names}
        columns.update({
            "_source": pa.array([source.uri] * count, pa.string()),
            "_line": pa.array(lines, pa.int64()),
            "_row": pa.nulls(count, pa.int64()),
            "_reason": pa.array(reasons, pa.string()),
            "_raw": pa.array(raw, pa.string()),
        })
        self.write_quarantine(pa.table(columns, schema=self.quarantine_schema))

    def write_quarantine(self, table: pa.Table) -> None:
        """Write quarantine rows; data columns a batch did not have are null."""
        columns = [table.column(name) if name in table.column_names else pa.nulls(table.num_rows, pa.string())
                   for name in self.quarantine_schema.names]
        self.quarantine.write_table(pa.Table.from_arrays(columns, schema=self.quarantine_schema))
        for reason, count in Counter(table.column("_reason").to_pylist()).items():
            self.reasons[reason] += count

    def flush(self) -> None:
        if self.buffer:
            self.output.write_table(pa.concat_tables(self.buffer))
            self.buffer, self.buffered_rows = [], 0

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.output.close()
            self.quarantine.close()

    @property
    def rows_quarantined(self) -> int:
        return sum(self.reasons.values())


def _conform(data: pa.RecordBatch | pa.Table, target: _Target, uri: str,
             first_row: int) -> tuple[pa.Table, pa.Table | None]:
    """(good rows in the target schema, quarantine rows or None) for one batch, vectorised."""
    count = data.num_rows
    present = set(data.column_names)
    arrays, problems = [], []
    for target_field in target.schema:
        name = target_field.name
        column_problems = []
        if name not in present:
            values = pa.nulls(count, target_field.type)
        else:
            values = _column(data, name)
            if pa.types.is_binary(values.type) or pa.types.is_large_binary(values.type):
                values, bad_text = cast_with_failures(values, pa.string())
                if bad_text is not None:
                    column_problems.append((bad_text, f"{name}: invalid UTF-8"))
            values, bad_value = cast_with_failures(values, target_field.type)
            if bad_value is not None:
                hint = " (type inferred from the first rows; declare the column in a schema)" \
                    if name in target.inferred else ""
                column_problems.append((bad_value, f"{name}: not a valid {type_name(target_field.type)}{hint}"))
        if not target_field.nullable and values.null_count:
            missing = pc.is_null(values)
            for mask, _ in column_problems:  # a value that failed to parse is reported as that, not as null
                missing = pc.and_(missing, pc.invert(mask))
            if pc.any(missing).as_py():
                column_problems.append((missing, f"{name}: null in a non-nullable column"))
        problems += column_problems
        arrays.append(values)
    for name in sorted(present - set(target.names)):
        extra = _column(data, name)
        if extra.null_count < count:
            problems.append((pc.is_valid(extra), f"{name}: unexpected field (not in the schema or first rows)"))
    if not problems:
        return pa.Table.from_arrays(arrays, schema=target.schema), None
    bad = problems[0][0]
    for mask, _ in problems[1:]:
        bad = pc.or_(bad, mask)
    good = pc.invert(bad)
    good_table = pa.Table.from_arrays([pc.filter(array, good) for array in arrays], schema=target.schema)
    reasons = [pc.if_else(pc.filter(mask, bad), reason, pa.scalar(None, pa.string()))
               for mask, reason in problems]
    reason = pc.binary_join_element_wise(*reasons, "; ", null_handling="skip") if len(reasons) > 1 \
        else reasons[0]
    rows = pc.add(pc.indices_nonzero(bad), first_row + 1)
    bad_count = len(rows)
    quarantine = {name: _as_text(pc.filter(_column(data, name), bad)) for name in target.names if name in present}
    quarantine.update({
        "_source": pa.array([uri] * bad_count, pa.string()),
        "_line": pa.nulls(bad_count, pa.int64()),
        "_row": pc.cast(rows, pa.int64()),
        "_reason": reason,
        "_raw": pa.nulls(bad_count, pa.string()),
    })
    return good_table, pa.table(quarantine)


# ------------------------------------------------------------------------------------------ the readers

@dataclass
class _CsvOptions:
    delimiter: str
    null_values: list[str]
    block_size: int


def _read_error(uri: str, error: Exception, block_size: int) -> IngestError:
    """A clear IngestError for an error raised while reading a file's contents."""
    message = str(error)
    if "straddling" in message or "block size" in message.lower():
        return IngestError(
            f"{uri}: a row is larger than batch_size_bytes={block_size:,} (a huge field, or a quote that is "
            "never closed); raise batch_size_bytes above the longest row or fix the quoting"
        )
    if "Empty CSV file" in message or "Empty file" in message:
        return IngestError(f"{uri}: the file is empty (no header row); fix the export or remove the file")
    if isinstance(error, (zlib.error, EOFError, zipfile.BadZipFile)) or any(
            word in message.lower() for word in ("gzip", "zlib", "truncated", "compressed", "bz2", "zstd")):
        return IngestError(
            f"{uri}: the compressed file is truncated or corrupt ({message}); re-download or re-export it"
        )
    if "Parquet" in message or "parquet" in message:
        return IngestError(f"{uri}: not a readable Parquet file ({message}); check the file or file_format")
    return IngestError(f"{uri}: could not be read ({type(error).__name__}: {message})")


_READ_ERRORS = (pa.ArrowException, OSError, EOFError, zipfile.BadZipFile, zlib.error)


@contextmanager
def _decoded(source: SourceFile, on_bytes: Callable[[int], None] | None) -> Iterator[tuple[IO[bytes], HashingReader]]:
    """The decompressed bytes of a source, and the reader hashing its raw bytes."""
    if source.compression == "zip":
        with local_copy(source, on_bytes) as (path, digest), zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist()
                       if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
            if len(members) != 1:
                raise IngestError(
                    f"{source.uri}: a zip source must hold exactly one file, found "
                    f"{[info.filename for info in members]}; unzip it and ingest the folder instead"
                )
            with archive.open(members[0]) as member:
                yield member, digest
        return
    with open_stream(source, on_bytes) as stream:
        if source.compression:
            yield pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), source.compression), stream
        else:
            yield stream, stream


def _csv_header(source: SourceFile, options: _CsvOptions) -> pa.Schema:
    """Column names and inferred types from the first block of a CSV file."""
    with _decoded(source, None) as (stream, _):
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=options.block_size),
            parse_options=pa_csv.ParseOptions(delimiter=options.delimiter, invalid_row_handler=lambda row: "skip"),
            convert_options=pa_csv.ConvertOptions(null_values=options.null_values, strings_can_be_null=True),
        )
        schema = reader.schema
        reader.close()
        return schema


def _csv_plan(source: SourceFile, delimiter: str | None, null_values: list[str],
              block_size: int) -> tuple[_CsvOptions, pa.Schema]:
    """CSV options (with the delimiter sniffed when not given) and the header of the first file."""
    given = bool(delimiter)
    tab_separated = ".tsv" in os.path.basename(source.path).lower()
    options = _CsvOptions(delimiter or ("\t" if tab_separated else ","), null_values, block_size)
    try:
        header = _csv_header(source, options)
        if len(header) == 1:
            found = [candidate for candidate in DELIMITER_CANDIDATES
                     if candidate != options.delimiter and candidate in header.names[0]]
            if found and given:
                raise IngestError(
                    f"{source.uri}: with delimiter {options.delimiter!r} the header is one column "
                    f"{header.names[0]!r}; the file looks {found[0]!r}-delimited: pass delimiter={found[0]!r}"
                )
            if found:
                options.delimiter = found[0]
                header = _csv_header(source, options)
    except IngestError:
        raise
    except _READ_ERRORS as error:
        raise _read_error(source.uri, error, block_size) from None
    return options, header


def _read_csv(source: SourceFile, options: _CsvOptions, sink: _Sink, counts: _SourceCount,
              on_bytes: Callable[[int], None] | None) -> None:
    unparsed: list[tuple[int | None, str, str]] = []

    def quarantine_row(row) -> str:
        line = row.number if row.number and row.number > 0 else None
        unparsed.append((line, f"expected {row.expected_columns} columns, got {row.actual_columns}", row.text))
        return "skip"

    def flush_unparsed() -> None:
        if unparsed:
            lines, reasons, raw = zip(*unparsed)
            sink.add_unparsed(counts, list(lines), list(reasons), list(raw))
            unparsed.clear()

    with _decoded(source, on_bytes) as (stream, digest):
        reader = pa_csv.open_csv(
            stream,
            read_options=pa_csv.ReadOptions(block_size=options.block_size, use_threads=False),
            parse_options=pa_csv.ParseOptions(delimiter=options.delimiter, invalid_row_handler=quarantine_row),
            convert_options=pa_csv.ConvertOptions(
                column_types={name: pa.binary() for name in sink.target.source_columns},
                null_values=options.null_values, strings_can_be_null=True,
            ),
        )
        _check_columns(source, reader.schema.names, sink.target)
        parsed = 0
        for batch in reader:
            flush_unparsed()
            sink.add(batch, counts, parsed)
            parsed += batch.num_rows
        flush_unparsed()
        digest.drain()
    counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()


def _check_columns(source: SourceFile, columns: list[str], target: _Target) -> None:
    """Every file of a CSV or Parquet source has the first file's columns (in any order)."""
    if sorted(columns) != sorted(target.source_columns):
        raise IngestError(
            f"{source.uri}: header {columns} differs from the first file's columns {target.source_columns}; "
            "ingest files with the same columns together"
        )


def _rows_per_batch(parquet: pq.ParquetFile, block_size: int) -> int:
    """Rows per Parquet batch so a batch holds about ``block_size`` uncompressed bytes."""
    metadata = parquet.metadata
    data_bytes = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return max(1024, block_size // max(1, data_bytes // max(1, metadata.num_rows)))


def _read_parquet(source: SourceFile, block_size: int, sink: _Sink, counts: _SourceCount,
                  on_bytes: Callable[[int], None] | None) -> None:
    with local_copy(source, on_bytes) as (path, digest):
        parquet = pq.ParquetFile(path)
        _check_columns(source, parquet.schema_arrow.names, sink.target)
        parsed = 0
        for batch in parquet.iter_batches(batch_size=_rows_per_batch(parquet, block_size)):
            sink.add(batch, counts, parsed)
            parsed += batch.num_rows
    counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()


def _json_blocks(stream: IO[bytes], block_size: int) -> Iterator[bytes]:
    """Blocks of whole lines, each about ``block_size`` bytes (longer when a line is longer)."""
    pending = b""
    while True:
        chunk = stream.read(block_size)
        if not chunk:
            break
        pending += chunk
        cut = pending.rfind(b"\n")
        if cut < 0:
            continue
        yield pending[:cut + 1]
        pending = pending[cut + 1:]
    if pending.strip():
        yield pending if pending.endswith(b"\n") else pending + b"\n"


def _parse_json_block(block: bytes) -> pa.Table:
    return pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=len(block) + 1))


def _json_lines_one_by_one(block: bytes, first_line: int) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """A block the fast reader refused, line by line: bad lines are returned as (line, reason, raw text);
    the good lines are parsed together again, or kept as text (checked by the schema cast) when their
    types clash."""
    good, bad = [], []
    for offset, raw in enumerate(block.split(b"\n")[:-1]):
        if not raw.strip():
            continue
        text = raw.decode("utf-8", "backslashreplace")
        try:
            record = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            bad.append((first_line + offset, f"invalid JSON ({getattr(error, 'msg', 'invalid UTF-8')})", text))
            continue
        if not isinstance(record, dict):
            bad.append((first_line + offset, "not a JSON object", text))
            continue
        good.append((raw, record))
    if not good:
        return pa.table({}), bad
    try:
        return _parse_json_block(b"\n".join(raw for raw, _ in good) + b"\n"), bad
    except pa.ArrowInvalid:
        records = [{key: _python_text(value) for key, value in record.items()} for _, record in good]
        names = list(dict.fromkeys(key for record in records for key in record))
        return pa.table({name: pa.array([record.get(name) for record in records], pa.string())
                         for name in names}), bad


def _json_first_schema(source: SourceFile, block_size: int) -> pa.Schema:
    with _decoded(source, None) as (stream, _):
        for block in _json_blocks(stream, block_size):
            try:
                return _parse_json_block(block).schema
            except pa.ArrowInvalid:
                return _json_lines_one_by_one(block, 1)[0].schema
    raise IngestError(f"{source.uri}: the file is empty (no JSON records); fix the export or remove the file")


def _read_jsonl(source: SourceFile, block_size: int, sink: _Sink, counts: _SourceCount,
                on_bytes: Callable[[int], None] | None) -> None:
    line, parsed = 1, 0
    with _decoded(source, on_bytes) as (stream, digest):
        for block in _json_blocks(stream, block_size):
            try:
                table = _parse_json_block(block)
            except pa.ArrowInvalid:
                table, bad = _json_lines_one_by_one(block, line)
                if bad:
                    lines, reasons, raw = zip(*bad)
                    sink.add_unparsed(counts, list(lines), list(reasons), list(raw))
            sink.add(table, counts, parsed)
            parsed += table.num_rows
            line += block.count(b"\n")
        digest.drain()
    counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()


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
    """Ingest ``source`` (a file, glob or folder; local, file://, gs://, s3://, http(s)://, pkg://) into
    the Parquet file ``output_path``. Rows that cannot be parsed or break ``schema`` (a dmlops schema
    document: dict, JSON text or file path) go to ``quarantine_path`` with a reason. Fails with
    IngestError when the quarantined fraction exceeds ``max_bad_fraction`` or no data rows were found.
    """
    if not 0.0 <= max_bad_fraction <= 1.0:
        raise IngestError(f"max_bad_fraction={max_bad_fraction} must be between 0 and 1")
    if batch_size_bytes < 1024:
        raise IngestError(f"batch_size_bytes={batch_size_bytes} is too small; use at least 1024")
    declared = load_schema(schema)
    files = resolve_sources(source, file_format)
    formats = sorted({item.file_format for item in files})
    if len(formats) > 1:
        raise IngestError(
            f"source {source}: files of different formats {formats}; ingest one format at a time or pass file_format"
        )
    nulls = list(DEFAULT_NULL_VALUES if null_values is None else null_values)
    first = files[0]
    csv_options = None
    if first.file_format == "csv":
        csv_options, header = _csv_plan(first, delimiter, nulls, batch_size_bytes)
    elif first.file_format == "parquet":
        try:
            with local_copy(first) as (path, _):
                header = pq.ParquetFile(path).schema_arrow
        except _READ_ERRORS as error:
            raise _read_error(first.uri, error, batch_size_bytes) from None
    else:
        try:
            header = _json_first_schema(first, batch_size_bytes)
        except _READ_ERRORS as error:
            raise _read_error(first.uri, error, batch_size_bytes) from None
    target = _target(header.names, dict(zip(header.names, header.types)), declared, first.uri)

    sink = _Sink(output_path, quarantine_path, target)
    counts = [_SourceCount(item.uri) for item in files]
    total = sum(item.size for item in files) if all(item.size is not None for item in files) else None
    try:
        with _Progress(progress, total, f"ingest {source}") as bar:
            for item, count in zip(files, counts):
                try:
                    if item.file_format == "csv":
                        _read_csv(item, csv_options, sink, count, bar.advance)
                    elif item.file_format == "parquet":
                        _read_parquet(item, batch_size_bytes, sink, count, bar.advance)
                    else:
                        _read_jsonl(item, batch_size_bytes, sink, count, bar.advance)
                except (IngestError, SchemaError):
                    raise
                except _READ_ERRORS as error:
                    raise _read_error(item.uri, error, batch_size_bytes) from None
    finally:
        sink.close()

    rows_in = sum(count.rows_in for count in counts)
    result = IngestResult(
        rows_in=rows_in,
        rows_out=sink.rows_out,
        rows_quarantined=sink.rows_quarantined,
        quarantine_reasons=dict(sink.reasons.most_common()),
        bytes_in=sum(count.bytes for count in counts),
        bytes_out=os.path.getsize(output_path),
        schema=[{"name": f.name, "type": type_name(f.type), "nullable": f.nullable}
                for f in pq.read_schema(output_path)],
        sources=[{"uri": c.uri, "bytes": c.bytes, "sha256": c.sha256, "rows_in": c.rows_in} for c in counts],
    )
    if result.rows_in != result.rows_out + result.rows_quarantined:
        raise AssertionError(f"row accounting broken: {result}")
    if rows_in == 0:
        raise IngestError(
            f"source {source}: no data rows (header only or empty); check the export that produced it"
        )
    bad_fraction = result.rows_quarantined / rows_in
    if bad_fraction > max_bad_fraction:
        reasons = ", ".join(f"{reason!r}: {n}" for reason, n in list(result.quarantine_reasons.items())[:5])
        raise IngestError(
            f"source {source}: {result.rows_quarantined:,} of {rows_in:,} rows ({bad_fraction:.2%}) could not be "
            f"ingested, more than max_bad_fraction={max_bad_fraction}. Reasons: {reasons}. The rows are in "
            f"{quarantine_path}. Fix the source (or the declared schema), or raise max_bad_fraction to accept them."
        )
    return result
