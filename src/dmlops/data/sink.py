"""Where ingested rows go: conformed rows to the output Parquet file, bad rows to the quarantine file, both
counted per source.

The quarantine file has one string column per data column (the raw values) and:
``_source`` (file URI), ``_line`` (line in the file, for CSV records and bad JSON lines),
``_row`` (1-based record number among the records read from that file), ``_reason`` and
``_raw`` (the raw text of a line that could not be parsed, non-UTF-8 bytes escaped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.conform import _column, _conform, _Target
from dmlops.data.redaction import QuarantineRedaction

ROW_GROUP_ROWS = 128 * 1024


QUARANTINE_FIELDS = [
    pa.field("_source", pa.string()), pa.field("_line", pa.int64()), pa.field("_row", pa.int64()),
    pa.field("_reason", pa.string()), pa.field("_raw", pa.string()),
]


@dataclass
class _SourceCount:
    uri: str
    rows_in: int = 0
    bytes: int = 0
    sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class _Sink:
    """Writes conformed rows to the output and bad rows to the quarantine (with the ``pii`` rules of
    ``redaction`` applied), and counts both."""

    def __init__(self, output_path: str, quarantine_path: str, names: list[str],
                 redaction: QuarantineRedaction | None = None):
        self.output_path = output_path
        self.redaction = redaction
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
                     raw: list[str], csv_columns: list[str] | None = None, delimiter: str | None = None) -> None:
        """Rows the parser could not read: quarantined with their line and raw text (CSV lines of
        ``csv_columns`` split by ``delimiter`` where ``pii`` rules apply)."""
        if not reasons:
            return
        if self.redaction:
            raw = self.redaction.raw_lines(raw, csv_columns, delimiter)
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
        if self.redaction:
            types = {column.name: column.type for column in self.target.schema} if self.target is not None else {}
            columns = [self.redaction.values(name, _column(table, name), types.get(name))
                       if name in self.redaction.rules and name in table.column_names else column
                       for name, column in zip(self.quarantine_schema.names, columns)]
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
