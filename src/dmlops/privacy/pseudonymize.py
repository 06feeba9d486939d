"""Apply the ``pii`` marks of a schema document to a Parquet dataset: pseudonymize, drop, mask, generalize.

Pseudonyms are HMAC-SHA256 of the value's text under a secret key, as 64 hex characters: deterministic,
so the same person gets the same pseudonym in every dataset and run (joins and Feast entity keys keep
working), and without the key nobody can recompute or reverse them. The key comes from the environment,
never from a parameter: ``DMLOPS_PSEUDONYM_KEY`` or the file ``DMLOPS_PSEUDONYM_KEY_FILE`` names (in a
cluster, a Kubernetes Secret mounted as either).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmlops.data.errors import DataError, SchemaError
from dmlops.data.schema import load_schema, pii_columns
from dmlops.privacy import encryption

KEY_VARIABLE = "DMLOPS_PSEUDONYM_KEY"


def pseudonym_key(required: bool = True) -> bytes | None:
    """The pseudonymization key from ``DMLOPS_PSEUDONYM_KEY`` or ``DMLOPS_PSEUDONYM_KEY_FILE``."""
    if os.environ.get(KEY_VARIABLE):
        return os.environ[KEY_VARIABLE].encode()
    path = os.environ.get(f"{KEY_VARIABLE}_FILE")
    if path:
        try:
            return Path(path).read_bytes().strip()
        except OSError as error:
            raise DataError(f"{KEY_VARIABLE}_FILE={path} cannot be read: {error.strerror}") from None
    if required:
        raise DataError(f"pseudonymization needs a key: set {KEY_VARIABLE} (or {KEY_VARIABLE}_FILE) from a Secret")
    return None


def pseudonym(value: Any, key: bytes) -> str:
    """The pseudonym of one value (its text as Arrow casts it to string)."""
    text = value if isinstance(value, str) else pa.array([value]).cast(pa.string())[0].as_py()
    return _hmac(text, key)


def _hmac(text: str, key: bytes) -> str:
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()


def _mask(text: str, keep: int) -> str:
    """All but the last ``keep`` characters as ``*`` (all of them when the text is not longer than ``keep``)."""
    shown = text[-keep:] if 0 < keep < len(text) else ""
    return "*" * (len(text) - len(shown)) + shown


def _map_text(column: pa.ChunkedArray, function) -> pa.Array:
    """``function`` applied once per distinct text of ``column``; nulls stay null."""
    encoded = pc.dictionary_encode(pc.cast(column, pa.string())).combine_chunks()
    mapped = pa.array([function(text) for text in encoded.dictionary.to_pylist()], pa.string())
    return pc.take(mapped, encoded.indices)


def _generalize(column: pa.ChunkedArray, rule: dict[str, Any], name: str) -> pa.ChunkedArray | pa.Array:
    kind = column.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        step = rule.get("step", 10)
        floored = pc.multiply(pc.floor(pc.divide(pc.cast(column, pa.float64()), float(step))), float(step))
        return pc.cast(floored, kind) if pa.types.is_integer(kind) else floored
    if pa.types.is_temporal(kind):
        return pc.floor_temporal(column, unit=rule.get("unit", "month"))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return pc.utf8_slice_codeunits(column, 0, rule.get("keep", 3))
    raise SchemaError(f"column {name!r}: generalize works on numbers, times and text, not {kind}")


def apply_pii_rules(table: pa.Table, rules: dict[str, dict[str, Any]], key: bytes | None) -> pa.Table:
    """``table`` with each column of ``rules`` pseudonymized, dropped, masked or generalized."""
    for name, rule in rules.items():
        if name not in table.column_names:
            continue
        action, column = rule["action"], table[name]
        if action == "drop":
            table = table.drop_columns([name])
            continue
        if action == "pseudonymize":
            if key is None:
                raise DataError(f"column {name!r} is marked pseudonymize but no {KEY_VARIABLE} is set")
            value = _map_text(column, lambda text: _hmac(text, key))
        elif action == "mask":
            keep = int(rule.get("keep", 4))
            value = _map_text(column, lambda text: _mask(text, keep))
        else:
            value = _generalize(column, rule, name)
        table = table.set_column(table.column_names.index(name), name, value)
    return table


@dataclass
class PseudonymizeResult:
    """What was done to which column, and the row count (unchanged)."""

    rows: int
    actions: dict[str, str] = field(default_factory=dict)
    columns_missing: list[str] = field(default_factory=list)
    encrypted: bool = False

    def metadata(self) -> dict[str, Any]:
        """Flat metadata for a KFP artifact."""
        return asdict(self)


def pseudonymize(input_path: str, output_path: str, schema: dict[str, Any] | str | Path) -> PseudonymizeResult:
    """Write ``input_path`` (encrypted or not) to ``output_path`` with the ``pii`` marks of ``schema`` applied
    (the key, when a column is marked pseudonymize, from :func:`pseudonym_key`), encrypted when the schema
    marks the dataset ``sensitive``."""
    document = load_schema(schema)
    rules = pii_columns(document)
    if not rules:
        raise SchemaError("the schema marks no column pii; add \"pii\": \"pseudonymize\" (or drop, mask, "
                          "generalize) to the columns that hold personal data")
    table = encryption.read_table(input_path)
    needs_key = any(rule["action"] == "pseudonymize" for rule in rules.values())
    written = apply_pii_rules(table, rules, pseudonym_key() if needs_key else None)
    sensitive = document.get("sensitive")
    if sensitive:
        columns = [name for name in sensitive.get("columns") or written.column_names if name in written.column_names]
        encryption.write_encrypted(written, output_path, key_id=sensitive["key_id"], columns=columns)
    else:
        pq.write_table(written, output_path)
    return PseudonymizeResult(
        rows=written.num_rows,
        actions={name: rule["action"] for name, rule in rules.items() if name in table.column_names},
        columns_missing=sorted(name for name in rules if name not in table.column_names),
        encrypted=bool(sensitive),
    )
