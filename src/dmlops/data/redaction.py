"""The ``pii`` marks of a schema applied to ingestion's quarantine records, so a quarantine file never holds
the raw value of a column that holds personal data.

A quarantined value of a ``pii`` column gets the column's action (:mod:`dmlops.privacy.pseudonymize`):
its pseudonym, nothing (drop), its mask, or its generalization (for the column's type; a value that does
not parse as that type, or of a column whose type is not known yet, is written as ``<pii>``). Without a
pseudonymization key a pseudonymized column's values are written as ``<pii>``. The ``_raw`` text of a CSV
line that could not be parsed gets the same treatment field by field where it splits into the file's
columns; any other raw line (wrong field count, open quote, JSON) is withheld: ``_raw`` then holds only its
length and sha256.
"""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.conform import cast_with_failures
from dmlops.data.schema import REDACTED, arrow_type, pii_columns

class QuarantineRedaction:
    """The ``pii`` rules of a schema document, applied to quarantine records."""

    def __init__(self, schema: dict[str, Any] | None):
        self.rules = pii_columns(schema)
        columns = (schema or {}).get("columns") or {}
        self.declared_types = {name: arrow_type(columns[name]["type"]) for name in self.rules
                               if "type" in columns[name]}
        self.key, self.warnings = None, []
        pseudonymized = [name for name, rule in self.rules.items() if rule["action"] == "pseudonymize"]
        if pseudonymized:  # imported only here: the module brings cryptography, a quarter second to import
            from dmlops.privacy.pseudonymize import KEY_VARIABLE, pseudonym_key

            self.key = pseudonym_key(required=False)
            if self.key is None:
                self.warnings = [f"column {name!r} is marked pseudonymize but {KEY_VARIABLE} is not set: its "
                                 f"quarantined values are written as {REDACTED}" for name in pseudonymized]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def values(self, name: str, text: pa.Array, data_type: pa.DataType | None) -> pa.Array:
        """The quarantine text of column ``name`` with its rule applied (unchanged for a column not marked);
        ``data_type`` is the column's type where known."""
        rule = self.rules.get(name)
        if rule is None:
            return text
        action = rule["action"]
        if action == "drop":
            return pa.nulls(len(text), pa.string())
        redacted = pc.if_else(pc.is_valid(text), pa.scalar(REDACTED), pa.scalar(None, pa.string()))
        if action == "pseudonymize" and self.key is None:
            return redacted
        values, failed = text, None
        if action == "generalize":
            data_type = data_type or self.declared_types.get(name)
            if data_type is None:
                return redacted
            values, failed = cast_with_failures(text, data_type)
        from dmlops.privacy.pseudonymize import apply_pii_rules

        applied = apply_pii_rules(pa.table({name: values}), {name: rule}, self.key).column(name)
        applied = pc.cast(applied, pa.string()).combine_chunks()
        return applied if failed is None else pc.if_else(failed, redacted, applied)

    def raw_lines(self, raw: list[str | None], csv_columns: list[str] | None, delimiter: str | None) -> list[str | None]:
        """The ``_raw`` texts with the rules applied field by field where a text is a CSV line of
        ``csv_columns``; the others withheld (their length and sha256 only)."""
        fields = [_split(text, len(csv_columns), delimiter) if csv_columns and text is not None else None
                  for text in raw]
        split = [row for row in fields if row is not None]
        if split and csv_columns:
            columns = [list(column) for column in zip(*split)]
            for index, name in enumerate(csv_columns):
                if name in self.rules:
                    text = pa.array([value or None for value in columns[index]], pa.string())
                    columns[index] = [value or "" for value in self.values(name, text, None).to_pylist()]
            split = [list(row) for row in zip(*columns)]
        rows = iter(split)
        return [None if text is None else _withheld(text) if row is None else _join(next(rows), delimiter)
                for text, row in zip(raw, fields)]


def _split(text: str, count: int, delimiter: str) -> list[str] | None:
    """The fields of one CSV line when it is exactly ``count`` well-quoted fields, else None."""
    try:
        rows = list(csv.reader(io.StringIO(text), delimiter=delimiter, strict=True))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 and len(rows[0]) == count else None


def _join(fields: list[str], delimiter: str) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=delimiter, lineterminator="").writerow(fields)
    return buffer.getvalue()


def _withheld(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{REDACTED} raw line withheld: {len(text)} characters, sha256 {digest}"
