"""Type checking for ingestion: the output schema of an ingestion (declared types, reader types elsewhere)
and each batch conformed to it, vectorised, with every value that does not fit flagged and given a reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.errors import IngestError, SchemaError
from dmlops.data.schema import arrow_type, type_name


# Values that match these patterns may parse; anything else certainly does not (checked vectorised).
_PARSABLE = {
    "signed": r"^-?[0-9]+$",
    "unsigned": r"^[0-9]+$",
    "floating": r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$|^[+-]?(?i:nan|inf|infinity)$",
    "boolean": r"^(?i:true|false|1|0)$",
    "temporal": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}",
}


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
