"""The dmlops table schema: one JSON document shared by ingestion, inference and validation.

A schema is a JSON object a user can edit and keep in git::

    {
      "columns": {
        "dep_delay": {"type": "int64", "nullable": true, "max_null_fraction": 0.05,
                      "min": -60, "max": 1500},
        "carrier":   {"type": "string", "nullable": false, "allowed_values": ["AA", "UA"]},
        "id":        {"type": "int64", "unique": true},
        "email":     {"type": "string", "pii": "pseudonymize"}
      },
      "row_count": {"min": 1000, "max": null},
      "expressions": [{"name": "arrival_after_departure", "expr": "arr_time >= 0",
                       "severity": "error"}]
    }

Types are Arrow type names (``int64``, ``double``, ``string``, ``bool``, ``date32``,
``timestamp[s, tz=UTC]`` ...). Column keys other than ``type`` are optional.

``pii`` marks a column that holds personal data, with what the ``pseudonymize`` step does to it:
``pseudonymize`` (keyed HMAC-SHA256), ``drop``, ``mask`` (all but the last ``keep`` characters, default 4)
or ``generalize`` (numbers down to a multiple of ``step``, default 10; times to the ``unit``, default
``month``; text to its first ``keep`` characters, default 3); options go in an object:
``{"action": "mask", "keep": 2}``. Reports and examples never show the values of a ``pii`` column.
A top-level ``"sensitive": {"key_id": "<master key>", "columns": [...]}`` asks the ``pseudonymize`` step
to write its output with Parquet modular encryption (:mod:`dmlops.privacy.encryption`; ``columns``
defaults to every column).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa

from dmlops.data.errors import SchemaError

COLUMN_KEYS = {
    "type", "nullable", "required", "max_null_fraction", "min", "max",
    "allowed_values", "unique", "severity", "pii",
}
PII_ACTIONS = ("pseudonymize", "drop", "mask", "generalize")
REDACTED = "<pii>"
TOP_LEVEL_KEYS = {"columns", "row_count", "expressions", "sensitive"}

_SIMPLE_TYPES = {
    "bool": pa.bool_(), "boolean": pa.bool_(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float": pa.float32(), "float32": pa.float32(), "float64": pa.float64(), "double": pa.float64(),
    "string": pa.string(), "utf8": pa.string(), "large_string": pa.large_string(),
    "date32": pa.date32(), "date32[day]": pa.date32(), "date": pa.date32(),
}
_TIMESTAMP = re.compile(r"^timestamp\[(s|ms|us|ns)(?:,\s*tz=([^\]]+))?\]$")


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type for a schema type name; a clear SchemaError for an unknown one."""
    key = name.strip().lower()
    if key in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[key]
    match = _TIMESTAMP.match(name.strip())
    if match:
        return pa.timestamp(match.group(1), tz=match.group(2))
    raise SchemaError(
        f"unknown column type {name!r}; use one of {sorted(set(_SIMPLE_TYPES))} "
        "or timestamp[unit, tz=ZONE]"
    )


def type_name(data_type: pa.DataType) -> str:
    """The schema type name of an Arrow type (the inverse of :func:`arrow_type`)."""
    if pa.types.is_date32(data_type):
        return "date32"
    return str(data_type)


def check_schema(schema: dict[str, Any], origin: str = "schema") -> dict[str, Any]:
    """Check the shape of a schema document and return it; errors name the offending key."""
    if not isinstance(schema, dict):
        raise SchemaError(f"{origin}: a schema must be a JSON object, got {type(schema).__name__}")
    unknown = set(schema) - TOP_LEVEL_KEYS
    if unknown:
        raise SchemaError(f"{origin}: unknown top-level keys {sorted(unknown)}; allowed: {sorted(TOP_LEVEL_KEYS)}")
    columns = schema.get("columns", {})
    if not isinstance(columns, dict):
        raise SchemaError(f"{origin}: 'columns' must map column names to their rules")
    for column, rules in columns.items():
        if not isinstance(rules, dict):
            raise SchemaError(f"{origin}: column {column!r} must be an object of rules")
        bad = set(rules) - COLUMN_KEYS
        if bad:
            raise SchemaError(
                f"{origin}: column {column!r} has unknown keys {sorted(bad)}; allowed: {sorted(COLUMN_KEYS)}"
            )
        if "pii" in rules:
            pii_rule(rules["pii"], f"{origin}: column {column!r}")
        if "type" in rules:
            try:
                arrow_type(rules["type"])
            except SchemaError as error:
                raise SchemaError(f"{origin}: column {column!r}: {error}") from None
    sensitive = schema.get("sensitive")
    if sensitive is not None and (not isinstance(sensitive, dict) or not isinstance(sensitive.get("key_id"), str)):
        raise SchemaError(f"{origin}: sensitive must be {{\"key_id\": \"<master key id>\", \"columns\": [...]}}")
    for index, expression in enumerate(schema.get("expressions", [])):
        if not isinstance(expression, dict) or "expr" not in expression:
            raise SchemaError(f"{origin}: expressions[{index}] needs an 'expr' (a SQL boolean expression)")
    return schema


def pii_rule(mark: Any, where: str = "schema") -> dict[str, Any]:
    """A column's ``pii`` mark as ``{"action": ..., options}``; a SchemaError for an unknown action."""
    rule = {"action": mark} if isinstance(mark, str) else mark
    if not isinstance(rule, dict) or rule.get("action") not in PII_ACTIONS:
        raise SchemaError(f"{where}: pii must be one of {list(PII_ACTIONS)} or {{\"action\": ..., options}}, got {mark!r}")
    return dict(rule)


def pii_columns(schema: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The columns a schema marks ``pii``, each with its rule."""
    return {name: pii_rule(rules["pii"], f"column {name!r}")
            for name, rules in ((schema or {}).get("columns") or {}).items() if "pii" in rules}


def arrow_schema(schema: dict[str, Any]) -> pa.Schema:
    """The Arrow schema of the typed columns of a schema document, in document order."""
    fields = []
    for column, rules in schema.get("columns", {}).items():
        if "type" in rules:
            fields.append(pa.field(column, arrow_type(rules["type"]), nullable=rules.get("nullable", True)))
    return pa.schema(fields)


def load_schema(source: str | Path | dict[str, Any] | None) -> dict[str, Any] | None:
    """A schema from a dict, a JSON string or a JSON file path; None/'' gives None."""
    if source is None or source == "":
        return None
    if isinstance(source, dict):
        return check_schema(source)
    text = str(source)
    if text.lstrip().startswith("{"):
        try:
            return check_schema(json.loads(text), "schema JSON")
        except json.JSONDecodeError as error:
            raise SchemaError(f"schema JSON is not valid JSON: {error}") from None
    path = Path(text)
    if not path.exists():
        raise SchemaError(f"schema file {path} does not exist; pass a JSON object or an existing file")
    try:
        return check_schema(json.loads(path.read_text()), str(path))
    except json.JSONDecodeError as error:
        raise SchemaError(f"schema file {path} is not valid JSON: {error}") from None
