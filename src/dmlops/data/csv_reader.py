"""CSV for ingestion: the header and delimiter, every non-empty physical line accounted as one record or one
unparsed line (a quote left open on its line quarantines that line, never the lines after it), and the two
passes: records staged as raw text while the type sniffer sees every value, then conformed to the types."""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from dmlops.data.conform import _column, _conform, _target, _Target, int64_array
from dmlops.data.errors import IngestError
from dmlops.data.sink import _Sink, _SourceCount
from dmlops.data.source_stream import (_READ_ERRORS, _check_columns, _decoded, _line_blocks, _read_error, _read_errors,
                                      shown)
from dmlops.data.sources import SourceFile
from dmlops.data.type_sniffer import _TypeSniffer

# Types Arrow's CSV converter reads as a cast from text does (bar the spaces it trims, see _padded).
_PARSED_TYPES = (pa.int64(), pa.float64(), pa.timestamp("s", tz="UTC"))
_CAST_PREFIX = "\x00cast:"  # staging columns holding a column's values already cast by the type sniffer
DELIMITER_CANDIDATES = ("\t", ";", "|")


@dataclass
class _CsvOptions:
    delimiter: str
    null_values: list[str]
    block_size: int


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


def _parse_lines(block: bytes, names: list[str], options: _CsvOptions, text: bool,
                 typed: dict[str, pa.DataType] | None = None) -> tuple[pa.Table, list]:
    """Arrow's CSV parser on whole lines: (the records as string columns, or binary ones when the block is
    not all UTF-8, or the types of ``typed`` where given; the rows it refused)."""
    refused = []

    def refuse(row) -> str:
        refused.append(row)
        return "skip"

    table = pa_csv.read_csv(
        io.BytesIO(block),
        read_options=pa_csv.ReadOptions(column_names=names, block_size=len(block) + 1, use_threads=False),
        parse_options=pa_csv.ParseOptions(delimiter=options.delimiter, invalid_row_handler=refuse),
        convert_options=pa_csv.ConvertOptions(column_types={name: (typed or {}).get(name, pa.string()) if text
                                                            else pa.binary() for name in names}, check_utf8=False,
                                              null_values=options.null_values, strings_can_be_null=True),
    )
    return table, refused


def _parse_text(block: bytes, names: list[str], options: _CsvOptions,
                typed: dict[str, pa.DataType]) -> tuple[pa.Table, list]:
    """A UTF-8 block parsed with the columns of ``typed`` converted to their types by Arrow's CSV converter
    where every value of the block converts, else as text (a value with a space or tab at either end is read
    as text too: the converter trims it, a cast does not)."""
    if typed and not _padded(block, options.delimiter):
        try:
            return _parse_lines(block, names, options, text=True, typed=typed)
        except pa.ArrowInvalid:
            pass
    return _parse_lines(block, names, options, text=True)


def _padded(block: bytes, delimiter: str) -> bool:
    """Whether a value of the block may start or end with a space or tab."""
    if b" " not in block and b"\t" not in block:
        return False
    edge = re.escape(delimiter.encode())
    return re.search(rb'(?m)(?:^|' + edge + rb')"?[ \t]|[ \t]"?(?:' + edge + rb'|\r?$)', block) is not None


def _line_numbers(block: bytes, first_line: int) -> np.ndarray:
    """The line numbers (in the file) of the non-empty lines of a block of whole lines."""
    data = np.frombuffer(block, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    lengths = ends - starts
    empty = (lengths == 0) | ((lengths == 1) & (data[starts] == 13))
    return np.flatnonzero(~empty) + first_line


def _parse_csv_block(block: bytes, first_line: int, newlines: int, names: list[str], options: _CsvOptions,
                     typed: dict[str, pa.DataType]) -> tuple[pa.Table, np.ndarray, list[tuple[int, str, str]]]:
    """One block of whole CSV lines holding ``newlines`` line ends: (records as text columns, binary ones
    when the block is not all UTF-8, or the types of ``typed`` where the whole block converts; the line of
    each record; unparsed lines as (line, reason, raw text)). Every non-empty physical line is one record or
    one unparsed line, so a quote that is never closed cannot swallow the lines after it."""
    try:
        block.decode("utf-8")
        table, refused = _parse_text(block, names, options, typed)
    except (UnicodeDecodeError, pa.ArrowInvalid):
        table, refused = None, None
    if table is not None and table.num_rows + len(refused) == newlines:
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


def read_csv(files: list[SourceFile], options: _CsvOptions, header: _Target, declared: dict | None,
             max_bad_fraction: float, new_sink: Callable[[], _Sink], staging: str,
             on_bytes: Callable[[int], None] | None) -> tuple[_Sink, list[_SourceCount]]:
    """Every record of the CSV files conformed to types sniffed from every value, into a sink from
    ``new_sink`` (returned closed, with the per-file counts).

    One pass when the types sniffed from the first records hold for the whole input (the types are still
    checked on every value); otherwise two: the records staged as raw text under ``staging`` while every
    value is sniffed, then the staged records conformed to the sniffed types."""
    sink, counts = new_sink(), [_SourceCount(item.uri, extra=item.extra) for item in files]
    try:
        held = _one_pass(files, options, header, declared, max_bad_fraction, sink, counts, on_bytes)
    finally:
        sink.close()
    if held:
        return sink, counts
    sink, counts = new_sink(), [_SourceCount(item.uri, extra=item.extra) for item in files]
    try:
        _two_passes(files, options, header, declared, max_bad_fraction, sink, counts, staging, on_bytes)
    finally:
        sink.close()
    return sink, counts


def _one_pass(files: list[SourceFile], options: _CsvOptions, header: _Target, declared: dict | None,
              max_bad_fraction: float, sink: _Sink, counts: list[_SourceCount],
              on_bytes: Callable[[int], None] | None) -> bool:
    """Records conformed as they are read to the types sniffed from the first block; the blocks after it
    parsed straight to those types where Arrow's CSV converter reads them as a cast would (a block it
    refuses is read as text). Returns whether the types sniffed from the whole input are those."""
    sniffer = _TypeSniffer(sorted(header.inferred), max_bad_fraction)
    guess, typed = None, {}
    for item, count in zip(files, counts):
        with _read_errors(item.uri):
            for table, lines, first_row in _csv_records(item, options, header.source_columns, sink, count, typed,
                                                        on_bytes):
                casted = sniffer.update(table)
                if guess is None:
                    rows = sum(other.rows_in for other in counts) + table.num_rows
                    guess = _target(header.source_columns, sniffer.types(rows, max_bad_fraction), declared, item.uri)
                    sink.open_output(guess)
                    typed.update({column.name: column.type for column in guess.schema
                                  if any(column.type == parsed for parsed in _PARSED_TYPES)})
                arrays = [casted[name] if name in casted and casted[name].type == guess.schema.field(name).type
                          else _column(table, name) for name in table.column_names]
                sink.add(pa.Table.from_arrays(arrays, names=table.column_names), count, first_row,
                         int64_array(lines))
    rows = sum(count.rows_in for count in counts)
    final = _target(header.source_columns, sniffer.types(rows, max_bad_fraction), declared, files[0].uri)
    if guess is None:
        sink.open_output(final)
        return True
    return final.schema.equals(guess.schema) and sniffer.settled()


def _two_passes(files: list[SourceFile], options: _CsvOptions, header: _Target, declared: dict | None,
                max_bad_fraction: float, sink: _Sink, counts: list[_SourceCount], staging: str,
                on_bytes: Callable[[int], None] | None) -> None:
    """The records staged as raw text while every value is sniffed, then conformed to the sniffed types."""
    sniffer = _TypeSniffer(sorted(header.inferred), max_bad_fraction)
    staged = [os.path.join(staging, f"{index}.arrow") for index in range(len(files))]
    rows, casts = 0, []
    for item, count, staging_path in zip(files, counts, staged):
        with _read_errors(item.uri):
            staged_rows, cast_per_batch = _stage_csv(item, options, header.source_columns, staging_path, sink,
                                                     count, sniffer, on_bytes)
        rows += staged_rows
        casts.append(cast_per_batch)
    rows += sum(count.rows_in for count in counts)  # the lines quarantined while staging
    sink.open_output(_target(header.source_columns, sniffer.types(rows, max_bad_fraction), declared, files[0].uri))
    for count, staging_path, cast_per_batch in zip(counts, staged, casts):
        _load_staged(staging_path, sink, count, cast_per_batch)
        if os.path.exists(staging_path):
            os.remove(staging_path)


def _csv_records(source: SourceFile, options: _CsvOptions, names: list[str], sink: _Sink, counts: _SourceCount,
                 typed: dict[str, pa.DataType], on_bytes: Callable[[int], None] | None
                 ) -> Iterator[tuple[pa.Table, np.ndarray, int]]:
    """The records of a CSV file, a block at a time: (records, the line of each, the records before them).
    Unparsed lines and records with values that are not UTF-8 go to the quarantine. Columns in ``typed`` (read
    at each block) are parsed to their type where the whole block converts, the others as text."""
    with _decoded(source, on_bytes) as (stream, digest):
        blocks = _line_blocks(stream, options.block_size)
        first = next(blocks, None)
        if first is None:
            raise IngestError(f"{source.uri}: the file is empty (no header row); fix the export or remove "
                              "the file")
        header, _, rest = first.partition(b"\n")
        columns = _header_names(source.uri, header, options.delimiter)
        _check_columns(source, columns, names)
        line, records = 2, 0
        for block in itertools.chain([rest] if rest else [], blocks):
            newlines = block.count(b"\n")
            table, lines, unparsed = _parse_csv_block(block, line, newlines, columns, options, typed)
            line += newlines
            if unparsed:
                numbers, reasons, raw = zip(*unparsed)
                sink.add_unparsed(counts, list(numbers), list(reasons), list(raw), columns, options.delimiter)
            if any(pa.types.is_binary(column.type) for column in table.schema):
                table, lines = _quarantine_undecodable(table, lines, source.uri, records, sink, counts)
            if table.num_rows:
                yield table, lines, records
                records += table.num_rows
        digest.drain()
    counts.bytes, counts.sha256 = digest.bytes_read, digest.sha256.hexdigest()


def _stage_csv(source: SourceFile, options: _CsvOptions, names: list[str], staging_path: str, sink: _Sink,
               counts: _SourceCount, sniffer: _TypeSniffer,
               on_bytes: Callable[[int], None] | None) -> tuple[int, list[set[str]]]:
    """First pass over a CSV file: records to a staging Arrow file of raw values (and their line),
    unparsed lines to the quarantine, values to the type sniffer. The columns the sniffer cast whole in the
    first batch are staged cast as well, where their batch cast whole. Returns the records staged and, per
    staged batch, the columns staged cast."""
    writer, staged, cast_per_batch = None, 0, []
    try:
        for table, lines, _ in _csv_records(source, options, names, sink, counts, {}, on_bytes):
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
