"""Ingest CSV, Parquet or JSON Lines files into one Parquet file, streaming in batches.

Rows that cannot be parsed, or that break the declared schema (type, nullability), go to a quarantine
Parquet file with their source, line/row number, reason and raw values; rows in = rows out + rows
quarantined, always. Every non-empty physical CSV line is one record: a quote left open on its line
quarantines that line, never the lines after it. Undeclared CSV column types are sniffed from every value
of the input (not the first block), so a value's position cannot change a column's type; JSON Lines
types come from the first block, Parquet's from the file. Outputs are written under temporary names and
renamed into place only on success.

The quarantine file has one string column per data column (the raw values) and:
``_source`` (file URI), ``_line`` (line in the file, for CSV records and bad JSON lines),
``_row`` (1-based record number among the records read from that file), ``_reason`` and
``_raw`` (the raw text of a line that could not be parsed, non-UTF-8 bytes escaped).
"""

from __future__ import annotations

import bz2
import csv
import glob
import gzip
import io
import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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

LOG = logging.getLogger(__name__)
_INTEGER_COLUMNS = b"dmlops.integer_columns"  # JSON columns of integers held as text (beyond int64)
_LONG_INTEGER = re.compile(rb"(?<![0-9.eE+-])-?[0-9]{19,}(?![0-9.eE])")
_CAST_PREFIX = "\x00cast:"  # staging columns holding a column's values already cast by the type sniffer
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


def int64_array(values) -> pa.Array:
    """An int64 Arrow array from a sequence of ints, straight from its buffer (``pa.array`` would import
    pandas, a second of start-up in a fresh process)."""
    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


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


_INFERRED = {  # candidate types for a text column, with the pattern a value must match
    "int64": r"^[+-]?[0-9]+$",
    "double": _PARSABLE["floating"],
    "bool": r"^(?i:true|false)$",
    "date32": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
    "timestamp": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?$",
}


class _TypeSniffer:
    """Counts, over every value of the input, the values of each undeclared text column that do not fit each
    candidate type, so a column's type does not depend on where a value sits."""

    def __init__(self, names: list[str], max_bad_fraction: float):
        self.counts: dict[str, Counter[str]] = {name: Counter() for name in names}
        self.strict = max_bad_fraction == 0  # one misfit rules a candidate out: stop looking at it

    def update(self, table: pa.Table) -> dict[str, pa.Array]:
        """Count one batch of text columns; returns the columns that cast whole to a candidate type (int64,
        double or timestamp[s, UTC]), cast, so the second pass need not cast them again."""
        casted = {}
        for name, counts in self.counts.items():
            candidates = [candidate for candidate in _INFERRED
                          if not (self.strict and counts[f"misfit:{candidate}"])]
            if not candidates:
                continue
            text = _column(table, name)
            total = len(text) - text.null_count
            if not total:
                continue
            counts["values"] += total
            fits = {}
            for candidate in candidates:
                if candidate != "int64" and fits.get("int64") == total:
                    fits[candidate] = total if candidate == "double" else 0  # integers are doubles, nothing else
                elif candidate in ("bool", "date32", "timestamp") and fits.get("double") == total:
                    fits[candidate] = 0
                else:
                    fits[candidate], whole = self._fitting(text, candidate, total)
                    if whole is not None and name not in casted:
                        casted[name] = whole
            if fits.get("timestamp") == total and pa.types.is_timestamp(getattr(casted.get(name), "type", None)):
                counts["zoned"] += total  # cast whole to timestamp[s, UTC]: every value zoned, whole seconds
            elif fits.get("timestamp"):
                stamps = pc.filter(text, pc.fill_null(pc.match_substring_regex(text, _INFERRED["timestamp"]), False))
                counts["zoned"] += self._count(stamps, r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)$")
                counts["fractional"] += self._count(stamps, r"\.[0-9]")
            for candidate in candidates:
                counts[f"misfit:{candidate}"] += total - fits[candidate]
        return casted

    @staticmethod
    def _count(text: pa.Array, pattern: str) -> int:
        return pc.sum(pc.match_substring_regex(text, pattern)).as_py() or 0

    def _fitting(self, text: pa.Array, candidate: str, total: int) -> tuple[int, pa.Array | None]:
        """How many values fit a candidate type, and the column cast when all do: a cast first (fast), else a
        pattern count."""
        quick = {"int64": pa.int64(), "double": pa.float64(), "timestamp": pa.timestamp("s", tz="UTC")}
        if candidate in quick:
            try:
                return total, pc.cast(text, quick[candidate])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        return self._count(text, _INFERRED[candidate]), None

    def types(self, rows: int, max_bad_fraction: float) -> dict[str, pa.DataType]:
        """Each column's type: the narrowest candidate every value fits; else the one with the fewest misfits
        when they are a minority within ``max_bad_fraction`` of ``rows`` (they are quarantined); else string."""
        allowed = int(max_bad_fraction * rows)
        found = {}
        for name, counts in self.counts.items():
            misfits = {candidate: counts[f"misfit:{candidate}"] for candidate in _INFERRED}
            chosen = "string"
            if counts["values"]:
                exact = [candidate for candidate, count in misfits.items() if count == 0]
                nearest = min(misfits, key=lambda candidate: misfits[candidate])
                tolerated = misfits[nearest] <= allowed and 2 * misfits[nearest] < counts["values"]
                chosen = exact[0] if exact else nearest if tolerated else "string"
            if chosen == "timestamp":
                unit = "ns" if counts["fractional"] else "s"
                found[name] = pa.timestamp(unit, tz="UTC") if counts["zoned"] else pa.timestamp(unit)
            else:
                found[name] = {"int64": pa.int64(), "bool": pa.bool_(), "date32": pa.date32(),
                               "double": pa.float64(), "string": pa.string()}[chosen]
        return found


# --------------------------------------------------------------------------------------------- the sink

@dataclass
class _SourceCount:
    uri: str
    rows_in: int = 0
    bytes: int = 0
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _Sink:
    """Writes conformed rows to the output and bad rows to the quarantine, and counts both."""

    def __init__(self, output_path: str, quarantine_path: str, names: list[str]):
        self.output_path = output_path
        self.target: _Target | None = None
        self.quarantine_schema = pa.schema(
            [pa.field(name, pa.string()) for name in names if name not in
             {f.name for f in QUARANTINE_FIELDS}] + QUARANTINE_FIELDS
        )
        self.output: pq.ParquetWriter | None = None
        self.quarantine = pq.ParquetWriter(quarantine_path, self.quarantine_schema)
        self.buffer: list[pa.Table] = []
        self.buffered_rows = 0
        self.rows_out = 0
        self.reasons: Counter[str] = Counter()

    def open_output(self, target: _Target) -> None:
        """Start the output once the target schema is known."""
        self.target = target
        self.output = pq.ParquetWriter(self.output_path, target.schema)

    def add(self, data: pa.RecordBatch | pa.Table, source: _SourceCount, first_row: int,
            lines: pa.Array | None = None) -> None:
        """Conform a batch to the target schema: good rows to the output, bad rows to the quarantine."""
        source.rows_in += data.num_rows
        good, bad = _conform(data, self.target, source.uri, first_row, lines)
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
            if self.output is not None:
                self.output.close()
            self.quarantine.close()

    @property
    def rows_quarantined(self) -> int:
        return sum(self.reasons.values())


def _cast_problems(values: pa.Array, failed: pa.Array, name: str, target: pa.DataType,
                   inferred: bool) -> list[tuple[pa.Array, str]]:
    """(mask, reason) for values that did not cast; integers out of the target's range say so."""
    hint = " (type inferred from the data; declare the column in a schema)" if inferred else ""
    reason = f"{name}: not a valid {type_name(target)}{hint}"
    if not (pa.types.is_integer(target) and pa.types.is_string(values.type)):
        return [(failed, reason)]
    digits = pc.fill_null(pc.match_substring_regex(values, _PARSABLE["signed"]), False)
    overflow = pc.and_(failed, digits)
    if not pc.any(overflow).as_py():
        return [(failed, reason)]
    problems = [(overflow, f"{name}: integer out of the {type_name(target)} range (not widened; declare the "
                           "column as string or double to keep it)")]
    rest = pc.and_(failed, pc.invert(digits))
    return problems + [(rest, reason)] if pc.any(rest).as_py() else problems


def _conform(data: pa.RecordBatch | pa.Table, target: _Target, uri: str, first_row: int,
             lines: pa.Array | None = None) -> tuple[pa.Table, pa.Table | None]:
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
            text, (values, bad_value) = values, cast_with_failures(values, target_field.type)
            if bad_value is not None:
                column_problems += _cast_problems(text, bad_value, name, target_field.type,
                                                  name in target.inferred)
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
        "_line": pa.nulls(bad_count, pa.int64()) if lines is None else pc.filter(lines, bad),
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


def shown(value: str | bytes, limit: int = 200) -> str:
    """Text from a source, fit for an error message: non-printable characters and bytes that are not UTF-8
    escaped, and cut to ``limit`` characters."""
    text = value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value
    text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def _read_error(uri: str, error: Exception) -> IngestError:
    """A clear IngestError for an error raised while reading a file's contents."""
    message = shown(str(error))
    if "Empty CSV file" in message or "Empty file" in message:
        return IngestError(f"{uri}: the file is empty (no header row); fix the export or remove the file")
    if isinstance(error, (zlib.error, EOFError, zipfile.BadZipFile, gzip.BadGzipFile)) or any(
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
    """The decompressed bytes of a source, and the reader hashing its raw bytes. gzip and bz2 are
    decompressed by Python's own modules, whose errors are exceptions (Arrow's compressed stream can abort
    the process at exit after reading a corrupt gzip file)."""
    if source.compression == "zip":
        with local_copy(source, on_bytes) as (path, digest), zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist()
                       if not info.is_dir() and not info.filename.startswith("__MACOSX/")]
            if len(members) != 1:
                raise IngestError(
                    f"{source.uri}: a zip source must hold exactly one file, found "
                    f"{[shown(info.filename) for info in members]}; unzip it and ingest the folder instead"
                )
            with archive.open(members[0]) as member:
                yield member, digest
        return
    with open_stream(source, on_bytes) as stream:
        if source.compression == "gzip":
            with gzip.GzipFile(fileobj=stream, mode="rb") as unpacked:
                yield unpacked, stream
        elif source.compression == "bz2":
            with bz2.BZ2File(stream, mode="rb") as unpacked:
                yield unpacked, stream
        elif source.compression:
            yield pa.CompressedInputStream(pa.PythonFile(stream, mode="r"), source.compression), stream
        else:
            yield stream, stream


def _line_blocks(stream: IO[bytes], block_size: int) -> Iterator[bytes]:
    """Blocks of whole lines, each about ``block_size`` bytes (longer when a line is longer), each ending
    with a newline."""
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


def _header_names(uri: str, line: bytes, delimiter: str) -> list[str]:
    """Column names from a CSV header line (a UTF-8 byte order mark is dropped)."""
    try:
        text = line.rstrip(b"\r").decode("utf-8-sig")
    except UnicodeDecodeError:
        raise IngestError(f"{uri}: the header row is not UTF-8 text ('{shown(line)}'); re-export the file as "
                          "UTF-8") from None
    if not text.strip():
        raise IngestError(f"{uri}: the first line is blank, not a header row; remove the leading blank lines")
    if "\r" in text:
        raise IngestError(f"{uri}: lines end with a carriage return only (classic Mac line ends), which is not "
                          "read; convert the line ends to LF or CRLF")
    try:
        return next(csv.reader([text], delimiter=delimiter))
    except csv.Error as error:
        raise IngestError(f"{uri}: the header row cannot be read ({error}): '{shown(text)}'") from None


def _csv_header(source: SourceFile, delimiter: str) -> list[str]:
    with _decoded(source, None) as (stream, _):
        first = next(_line_blocks(stream, 64 * 1024), None)
    if first is None:
        raise IngestError(f"{source.uri}: the file is empty (no header row); fix the export or remove the file")
    return _header_names(source.uri, first.partition(b"\n")[0], delimiter)


def _csv_plan(source: SourceFile, delimiter: str | None, null_values: list[str],
              block_size: int) -> tuple[_CsvOptions, list[str]]:
    """CSV options (with the delimiter sniffed when not given) and the header of the first file."""
    given = bool(delimiter)
    tab_separated = ".tsv" in os.path.basename(source.path).lower()
    options = _CsvOptions(delimiter or ("\t" if tab_separated else ","), null_values, block_size)
    try:
        header = _csv_header(source, options.delimiter)
        if len(header) == 1:
            found = [candidate for candidate in DELIMITER_CANDIDATES
                     if candidate != options.delimiter and candidate in header[0]]
            if found and given:
                raise IngestError(
                    f"{source.uri}: with delimiter {options.delimiter!r} the header is one column "
                    f"'{shown(header[0])}'; the file looks {found[0]!r}-delimited: pass delimiter={found[0]!r}"
                )
            if found:
                options.delimiter = found[0]
                header = _csv_header(source, options.delimiter)
    except IngestError:
        raise
    except _READ_ERRORS as error:
        raise _read_error(source.uri, error) from None
    return options, header


def _fields(text: str, delimiter: str) -> tuple[int, bool]:
    """(number of fields, whether the line ends inside a quoted value) of one CSV line; a quote opens only
    at the start of a field, and ``""`` inside quotes is a quote character."""
    inside, field_start, fields, index = False, True, 1, 0
    while index < len(text):
        char = text[index]
        if inside:
            if char == '"':
                if text[index + 1:index + 2] == '"':
                    index += 2
                    continue
                inside = False
        elif char == delimiter:
            fields += 1
            field_start = True
            index += 1
            continue
        elif char == '"' and field_start:
            inside = True
        field_start = False
        index += 1
    return fields, inside


def _parse_lines(block: bytes, names: list[str], options: _CsvOptions, text: bool) -> tuple[pa.Table, list]:
    """Arrow's CSV parser on whole lines: (the records as string columns, or binary ones when the block is
    not all UTF-8, the rows it refused)."""
    refused = []

    def refuse(row) -> str:
        refused.append(row)
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(block),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=len(block) + 1, use_threads=False),
        parse_options=pa_csv.ParseOptions(delimiter=options.delimiter, invalid_row_handler=refuse),
        convert_options=pa_csv.ConvertOptions(column_types={name: pa.string() if text else pa.binary()
                                                            for name in names}, check_utf8=False,
                                              null_values=options.null_values, strings_can_be_null=True),
    )
    return table, refused


def _line_numbers(block: bytes, first_line: int) -> np.ndarray:
    """The line numbers (in the file) of the non-empty lines of a block of whole lines."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    empty = (lengths == 0) | ((lengths == 1) & (data[starts] == 13))
    return np.flatnonzero(~empty) + first_line


def _parse_csv_block(block: bytes, first_line: int, names: list[str],
                     options: _CsvOptions) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]:
    """One block of whole CSV lines: (records as binary columns, the line of each record, unparsed lines as
    (line, reason, raw text)). Every non-empty physical line is one record or one unparsed line, so a
    quote that is never closed cannot swallow the lines after it."""
    try:
        block.decode("utf-8")
        table, refused = _parse_lines(block, names, options, text=True)
    except (UnicodeDecodeError, pa.ArrowInvalid):
        table, refused = None, None
    if table is not None and table.num_rows + len(refused) == block.count(b"\n"):
        numbers = np.arange(first_line, first_line + table.num_rows + len(refused))  # no empty line: quick
    else:
        numbers = _line_numbers(block, first_line)
    if table is not None and table.num_rows + len(refused) == len(numbers) and all(row.number > 0 for row in refused):
        kept = np.ones(len(numbers), dtype=bool)
        kept[[row.number - 1 for row in refused]] = False
        unparsed = [(int(numbers[row.number - 1]), f"expected {row.expected_columns} columns, got {row.actual_columns}",
                     shown(row.text, 10_000)) for row in refused]
        return table, numbers[kept], unparsed
    lines = block.split(b"\n")
    return _parse_csv_lines([lines[number - first_line] for number in numbers.tolist()], numbers, names, options)


def _parse_csv_lines(lines: list[bytes], numbers: np.ndarray, names: list[str],
                     options: _CsvOptions) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]:
    """The slow path for a block Arrow could not take whole: each line checked on its own for an unclosed
    quote and its field count, the good lines parsed together again."""
    good, good_numbers, unparsed = [], [], []
    for line, number in zip(lines, numbers.tolist()):
        text = line.rstrip(b"\r").decode("latin-1")  # the structure (delimiters, quotes) is ASCII
        fields, open_quote = _fields(text, options.delimiter)
        if open_quote:
            unparsed.append((number, f"unclosed quote: the quoted value opened on line {number} is not closed "
                                     "on that line (values spanning lines are not read)", shown(line, 10_000)))
            continue
        if fields != len(names):
            unparsed.append((number, f"expected {len(names)} columns, got {fields}", shown(line, 10_000)))
            continue
        good.append(line)
        good_numbers.append(number)
    if not good:
        return pa.table({name: pa.array([], pa.binary()) for name in names}), np.array([], np.int64), unparsed
    table, refused = _parse_lines(b"\n".join(good) + b"\n", names, options, text=False)
    if refused or table.num_rows != len(good):
        raise IngestError(f"lines {good_numbers[0]}-{good_numbers[-1]}: the CSV parser read {table.num_rows} "
                          f"records from {len(good)} lines; check the quoting of these lines")
    return table, np.array(good_numbers, np.int64), unparsed


def _quarantine_undecodable(table: pa.Table, lines: np.ndarray, uri: str, first_row: int, sink: _Sink,
                            counts: _SourceCount) -> tuple[pa.Table, np.ndarray]:
    """Records of a block that was not all UTF-8: those with a value that is not UTF-8 to the quarantine,
    the rest as text."""
    names = table.column_names
    text = _Target(pa.schema([pa.field(name, pa.string()) for name in names]), set(), names)
    good, bad = _conform(table, text, uri, first_row, int64_array(lines))
    if bad is None:
        return good, lines
    sink.write_quarantine(bad)
    counts.rows_in += bad.num_rows
    return good, lines[~np.isin(lines, bad.column("_line").to_numpy())]


def _stage_csv(source: SourceFile, options: _CsvOptions, names: list[str], staging_path: str, sink: _Sink,
               counts: _SourceCount, sniffer: _TypeSniffer,
               on_bytes: Callable[[int], None] | None) -> tuple[int, list[set[str]]]:
    """First pass over a CSV file: records to a staging Arrow file of raw values (and their line),
    unparsed lines to the quarantine, values to the type sniffer. The columns the sniffer cast whole in the
    first batch are staged cast as well, where their batch cast whole. Returns the records staged and, per
    staged batch, the columns staged cast."""
    writer, staged, cast_per_batch = None, 0, []
    try:
        with _decoded(source, on_bytes) as (stream, digest):
            blocks = _line_blocks(stream, options.block_size)
            first = next(blocks, None)
            if first is None:
                raise IngestError(f"{source.uri}: the file is empty (no header row); fix the export or remove "
                                  "the file")
            header, _, rest = first.partition(b"\n")
            columns = _header_names(source.uri, header, options.delimiter)
            _check_columns(source, columns, names)
            line = 2
            for block in itertools.chain([rest] if rest else [], blocks):
                table, lines, unparsed = _parse_csv_block(block, line, columns, options)
                line += block.count(b"\n")
                if unparsed:
                    numbers, reasons, raw = zip(*unparsed)
                    sink.add_unparsed(counts, list(numbers), list(reasons), list(raw))
                if any(pa.types.is_binary(column.type) for column in table.schema):
                    table, lines = _quarantine_undecodable(table, lines, source.uri, staged, sink, counts)
                if not table.num_rows:
                    continue
                casted = sniffer.update(table)
                if writer is None:  # the columns cast whole in the first block keep their cast values too
                    cache = {name: array.type for name, array in casted.items()}
                    schema = table.schema.append(pa.field("_line", pa.int64()))
                    for name, data_type in cache.items():
                        schema = schema.append(pa.field(_CAST_PREFIX + name, data_type))
                    writer = pa.ipc.new_file(staging_path, schema)
                kept = {name for name, data_type in cache.items() if getattr(casted.get(name), "type", None) == data_type}
                arrays = [_column(table, name) for name in table.column_names] + [int64_array(lines)]
                arrays += [casted[name] if name in kept else pa.nulls(table.num_rows, data_type)
                           for name, data_type in cache.items()]
                writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
                cast_per_batch.append(kept)
                staged += table.num_rows
            digest.drain()
        counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()
    finally:
        if writer is not None:
            writer.close()
    return staged, cast_per_batch


def _load_staged(staging_path: str, sink: _Sink, counts: _SourceCount, cast_per_batch: list[set[str]]) -> None:
    """Second pass: the staged records conformed to the target schema (cast values used where staged)."""
    if not os.path.exists(staging_path):
        return
    parsed = 0
    with pa.OSFile(staging_path) as handle:  # read, not mapped: memory stays one batch whatever the size
        staged = pa.ipc.open_file(handle)
        for index in range(staged.num_record_batches):
            batch = staged.get_batch(index)
            names = [name for name in batch.schema.names if name != "_line" and not name.startswith(_CAST_PREFIX)]
            arrays = []
            for name in names:
                cast_name = _CAST_PREFIX + name
                use_cast = name in cast_per_batch[index] and \
                    batch.schema.field(cast_name).type == sink.target.schema.field(name).type
                arrays.append(batch.column(cast_name if use_cast else name))
            sink.add(pa.RecordBatch.from_arrays(arrays, names=names), counts, parsed, batch.column("_line"))
            parsed += batch.num_rows


def _check_columns(source: SourceFile, columns: list[str], expected: list[str]) -> None:
    """Every file of a CSV or Parquet source has the first file's columns (in any order)."""
    if sorted(columns) != sorted(expected):
        raise IngestError(
            f"{source.uri}: header {[shown(name) for name in columns]} differs from the first file's columns "
            f"{expected}; "
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


class _Publisher:
    """Temporary names beside the outputs, renamed into place by ``publish`` and removed otherwise; what a
    killed earlier attempt left under those names is removed first."""

    def __init__(self, output_path: str, quarantine_path: str):
        self.final = {"output": output_path, "quarantine": quarantine_path}
        self.partial = {}
        for role, path in self.final.items():
            folder, name = os.path.split(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.partial")):
                os.remove(stale)
            for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.staging-*")):
                shutil.rmtree(stale, ignore_errors=True)
            self.partial[role] = os.path.join(folder, f".{name}.{os.getpid()}.partial")
        folder, name = os.path.split(os.path.abspath(output_path))
        self.staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=folder)

    def publish(self, output: bool) -> None:
        os.replace(self.partial["quarantine"], self.final["quarantine"])
        if output:
            os.replace(self.partial["output"], self.final["output"])

    def __enter__(self) -> _Publisher:
        return self

    def __exit__(self, *exc_info) -> None:
        for path in self.partial.values():
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(self.staging, ignore_errors=True)


def _ingest_files(files: list[SourceFile], source: str, publisher: _Publisher, declared: dict | None,
                  max_bad_fraction: float, delimiter: str | None, nulls: list[str], block_size: int,
                  progress: bool) -> IngestResult:
    """Read every file into the publisher's partial outputs and count the rows.

    CSV is read in two passes: the records as raw text into local staging files while every value is
    sniffed for the column types, then the staged records conformed to those types. Parquet and JSON
    Lines carry their own types and are conformed as they are read.
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
    sink = _Sink(publisher.partial["output"], publisher.partial["quarantine"], target.names)
    counts = [_SourceCount(item.uri, extra=item.extra) for item in files]
    total = sum(item.size for item in files) if all(item.size is not None for item in files) else None
    try:
        with _Progress(progress, total, f"ingest {source}") as bar:
            if csv_options is not None:
                sniffer = _TypeSniffer(sorted(target.inferred), max_bad_fraction)
                staged = [os.path.join(publisher.staging, f"{index}.arrow") for index in range(len(files))]
                rows, casts = 0, []
                for item, count, staging_path in zip(files, counts, staged):
                    with _read_errors(item.uri):
                        staged_rows, cast_per_batch = _stage_csv(item, csv_options, target.source_columns,
                                                                 staging_path, sink, count, sniffer, bar.advance)
                    rows += staged_rows
                    casts.append(cast_per_batch)
                rows += sum(count.rows_in for count in counts)  # the lines quarantined while staging
                target = _target(names, sniffer.types(rows, max_bad_fraction), declared, first.uri)
                sink.open_output(target)
                for count, staging_path, cast_per_batch in zip(counts, staged, casts):
                    _load_staged(staging_path, sink, count, cast_per_batch)
                    if os.path.exists(staging_path):
                        os.remove(staging_path)
            else:
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
    )
    if result.rows_in != result.rows_out + result.rows_quarantined:
        raise AssertionError(f"row accounting broken: {result}")
    return result


@contextmanager
def _read_errors(uri: str) -> Iterator[None]:
    """Errors raised while reading a file's contents, as one clear IngestError."""
    try:
        yield
    except (IngestError, SchemaError):
        raise
    except _READ_ERRORS as error:
        raise _read_error(uri, error) from None
