"""Parquet and JSON Lines for ingestion: both carry their own types (JSON Lines from the first block,
Parquet from the file) and are conformed as they are read."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from dmlops.data.conform import _python_text
from dmlops.data.errors import IngestError
from dmlops.data.sink import _Sink, _SourceCount
from dmlops.data.source_stream import _check_columns, _decoded, _line_blocks
from dmlops.data.sources import SourceFile, local_copy

_INTEGER_COLUMNS = b"dmlops.integer_columns"  # JSON columns of integers held as text (beyond int64)
_LONG_INTEGER = re.compile(rb"(?<![0-9.eE+-])-?[0-9]{19,}(?![0-9.eE])")


def _rows_per_batch(parquet: pq.ParquetFile, block_size: int) -> int:
    """Rows per Parquet batch so a batch holds about ``block_size`` uncompressed bytes."""
    metadata = parquet.metadata
    data_bytes = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    return max(1024, block_size // max(1, data_bytes // max(1, metadata.num_rows)))


def _read_parquet(source: SourceFile, block_size: int, sink: _Sink, counts: _SourceCount,
                  on_bytes: Callable[[int], None] | None) -> None:
    with local_copy(source, on_bytes) as (path, digest):
        parquet = pq.ParquetFile(path)
        _check_columns(source, parquet.schema_arrow.names, sink.target.source_columns)
        parsed = 0
        for batch in parquet.iter_batches(batch_size=_rows_per_batch(parquet, block_size)):
            sink.add(batch, counts, parsed)
            parsed += batch.num_rows
    counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()


def _parse_json_block(block: bytes) -> pa.Table:
    """Arrow's JSON reader on whole lines; refused (ArrowInvalid) where it turned an integer beyond int64 into
    a double, losing digits."""
    table = pa_json.read_json(io.BytesIO(block), read_options=pa_json.ReadOptions(block_size=len(block) + 1))
    for column in table.columns:  # a widened integer shows as a double beyond int64 (the text is searched then)
        if pa.types.is_floating(column.type) and (pc.max(pc.abs(column)).as_py() or 0) >= 2 ** 63 \
                and _LONG_INTEGER.search(block):
            raise pa.ArrowInvalid("an integer beyond int64")
    return table


def _records_table(records: list[dict]) -> pa.Table:
    """JSON records as a table, column by column: a column of integers beyond int64 as their text (marked in
    the schema metadata as integers, so the cast to int64 quarantines them), a column of clashing types
    as text."""
    names = list(dict.fromkeys(key for record in records for key in record))
    columns, integers = {}, []
    for name in names:
        values = [record.get(name) for record in records]
        present = [value for value in values if value is not None]
        if present and all(type(value) is int for value in present) and \
                any(not -2 ** 63 <= value < 2 ** 63 for value in present):
            integers.append(name)
            columns[name] = pa.array([None if value is None else str(value) for value in values], pa.string())
            continue
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            columns[name] = pa.array([_python_text(value) for value in values], pa.string())
    table = pa.table(columns)
    return table.replace_schema_metadata({_INTEGER_COLUMNS: json.dumps(integers)}) if integers else table


def json_types(table: pa.Table) -> dict[str, pa.DataType]:
    """The column types a JSON table stands for: its own, int64 for integer columns held as text."""
    integers = json.loads((table.schema.metadata or {}).get(_INTEGER_COLUMNS, b"[]"))
    return {field.name: pa.int64() if field.name in integers else field.type for field in table.schema}


def _json_lines_one_by_one(block: bytes, first_line: int) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """A block the fast reader refused, line by line: bad lines are returned as (line, reason, raw text);
    the good lines are parsed together again, or column by column (text where types clash or integers
    exceed int64, checked by the schema cast)."""
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
        return _records_table([record for _, record in good]), bad


def _json_first_schema(source: SourceFile, block_size: int) -> pa.Schema:
    with _decoded(source, None) as (stream, _):
        for block in _line_blocks(stream, block_size):
            try:
                table = _parse_json_block(block)
            except pa.ArrowInvalid:
                table = _json_lines_one_by_one(block, 1)[0]
            return pa.schema(list(json_types(table).items()))
    raise IngestError(f"{source.uri}: the file is empty (no JSON records); fix the export or remove the file")


def _read_jsonl(source: SourceFile, block_size: int, sink: _Sink, counts: _SourceCount,
                on_bytes: Callable[[int], None] | None) -> None:
    line, parsed = 1, 0
    with _decoded(source, on_bytes) as (stream, digest):
        for block in _line_blocks(stream, block_size):
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
