"""Schema inference and validation of Parquet datasets against the dmlops schema document.

:func:`infer_schema` profiles a dataset and writes the schema a user edits and keeps in git;
:func:`validate` checks a dataset against it. Every check is one aggregate (offending rows, and the
first offending row numbers) in the single statistics scan of
:func:`dmlops.data.statistics.compute_statistics`. Only failures cost more: one query fetches the
example rows of every failed check, and each failed allowed_values/unique check runs one query for
its most frequent offending values.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from dmlops.data.errors import SchemaError, ValidationFailed
from dmlops.data.schema import REDACTED, arrow_type, load_schema, pii_columns, type_name
from dmlops.data.engines import check_engine
from dmlops.data.statistics import (
    NUMERIC, ROW_NUMBER, ColumnStatistics, DatasetStatistics, ParquetSource, compute_statistics, connect,
    jsonable, open_parquet, quote_identifier, quote_literal,
)

SEVERITIES = ("error", "warn")
FAIL_ON = ("error", "warn", "never")
EXAMPLES = 5


@dataclass
class Finding:
    """One failed check: which column and check, how bad, what was expected and what was seen.
    ``examples`` are offending rows (``{"row": 0-based position in the file, column: value ...}``) or
    ``[value, count]`` pairs of offending or repeated values."""

    check: str
    column: str | None
    severity: str
    expected: Any
    observed: Any
    count: int
    message: str
    examples: list = field(default_factory=list)


@dataclass
class ValidationReport:
    """The result of validating a dataset: findings, per-column statistics and the number of checks."""

    dataset: str
    rows: int
    checks: int
    findings: list[Finding]
    statistics: dict[str, ColumnStatistics]

    @property
    def errors(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.severity == "warn"]

    @property
    def passed(self) -> bool:
        """True when no check of severity ``error`` failed."""
        return not self.errors

    def summary(self) -> str:
        """One line: rows, checks, errors and warnings."""
        verdict = "passed" if self.passed else "FAILED"
        return (f"{self.dataset}: {verdict}: {self.rows} rows, {self.checks} checks, "
                f"{len(self.errors)} errors, {len(self.warnings)} warnings")

    def raise_for(self, fail_on: str = "error") -> None:
        """Raise :class:`ValidationFailed` listing the failed checks when findings of severity ``fail_on``
        (``error``; ``warn`` also fails on warnings; ``never`` does not fail) are present."""
        if fail_on not in FAIL_ON:
            raise ValueError(f"fail_on must be one of {FAIL_ON}, got {fail_on!r}")
        failing = {"error": self.errors, "warn": self.findings, "never": []}[fail_on]
        if failing:
            lines = [f"- [{finding.severity}] {finding.message}" for finding in failing]
            raise ValidationFailed("\n".join([self.summary(), *lines]))

    def metrics(self) -> dict[str, float]:
        """Flat metrics for KFP: rows, checks, errors, warnings, passed, and each column's null fraction."""
        metrics = {
            "rows": float(self.rows), "checks": float(self.checks), "errors": float(len(self.errors)),
            "warnings": float(len(self.warnings)), "passed": float(self.passed),
        }
        for name, stats in self.statistics.items():
            metrics[f"null_fraction.{name}"] = float(stats.null_fraction)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset, "passed": self.passed, "rows": self.rows, "checks": self.checks,
            "errors": len(self.errors), "warnings": len(self.warnings),
            "findings": [asdict(finding) for finding in self.findings],
            "statistics": {name: stats.to_dict() for name, stats in self.statistics.items()},
        }

    def to_html(self) -> str:
        """A self-contained HTML report (summary, findings, per-column statistics with histograms)."""
        from dmlops.data.report import validation_html

        return validation_html(self)


def _round_up(value: float, digits: int = 4) -> float:
    scale = 10 ** digits
    return math.ceil(value * scale) / scale


def _logical_type(data_type: pa.DataType) -> pa.DataType:
    """The type a schema speaks of: dictionary columns by their values, large strings as strings."""
    if pa.types.is_dictionary(data_type):
        data_type = data_type.value_type
    if pa.types.is_large_string(data_type):
        return pa.string()
    return data_type


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Whether a column's type is the schema's; timestamps compare by time zone only, since Parquet
    stores seconds as milliseconds."""
    actual, expected = _logical_type(actual), _logical_type(expected)
    if pa.types.is_timestamp(actual) and pa.types.is_timestamp(expected):
        return actual.tz == expected.tz
    return actual == expected


def infer_schema(
    dataset_path: str | Path,
    *,
    max_categories: int = 50,
    null_fraction_margin: float = 0.05,
    min_rows_ratio: float = 0.1,
    max_rows_ratio: float = 10.0,
    engine: str = "duckdb",
) -> dict[str, Any]:
    """Infer a schema document from a Parquet dataset.

    Each column gets its type and nullability; columns with nulls a ``max_null_fraction`` of the observed
    fraction plus ``null_fraction_margin``; numeric columns their observed ``min``/``max``; string columns
    with at most ``max_categories`` distinct values their ``allowed_values``; integer and string columns
    without nulls or repeats ``unique``. ``row_count`` allows ``min_rows_ratio`` to ``max_rows_ratio``
    times the observed rows. Time columns get no range: new data is expected to be later. ``engine``
    (``duckdb`` or ``spark``) profiles the dataset.
    """
    check_engine(engine)
    if engine == "spark":
        from dmlops.data.spark.statistics import compute_statistics as profile
    else:
        profile = compute_statistics
    stats = profile(dataset_path, top_values=max_categories + 1)
    schema = open_parquet(dataset_path).schema
    columns: dict[str, dict[str, Any]] = {}
    for arrow_field in schema:
        column = stats.columns[arrow_field.name]
        data_type = _logical_type(arrow_field.type)
        rules: dict[str, Any] = {}
        try:
            arrow_type(type_name(data_type))
            rules["type"] = type_name(data_type)
        except SchemaError:
            pass  # a type the schema language cannot name (lists, structs ...): checked for nulls only
        rules["nullable"] = column.nulls > 0
        if column.nulls:
            rules["max_null_fraction"] = min(1.0, _round_up(column.null_fraction + null_fraction_margin))
        if column.kind == NUMERIC and column.min is not None:
            rules["min"], rules["max"] = column.min, column.max
        is_string = pa.types.is_string(data_type)
        if is_string and column.count and column.distinct <= max_categories:
            rules["allowed_values"] = sorted(value for value, _ in column.top_values)
        if ((is_string or pa.types.is_integer(data_type)) and stats.rows > 1 and column.nulls == 0
                and column.distinct == stats.rows):
            rules["unique"] = True
        columns[arrow_field.name] = rules
    return {
        "columns": columns,
        "row_count": {"min": math.ceil(stats.rows * min_rows_ratio), "max": math.floor(stats.rows * max_rows_ratio)},
        "expressions": [],
    }


def schema_json(schema: dict[str, Any]) -> str:
    """The schema document as pretty JSON, keys in document order, ending with a newline."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _literal(value: Any) -> str:
    """A SQL literal for a schema value (DuckDB casts text to a column's date or time type)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote_literal(value)
    raise SchemaError(f"schema value {value!r} must be a number, text or true/false")


def _severity(rules: dict[str, Any], where: str) -> str:
    severity = rules.get("severity", "error")
    if severity not in SEVERITIES:
        raise SchemaError(f"{where}: severity must be one of {SEVERITIES}, got {severity!r}")
    return severity


@dataclass
class _Check:
    """A value check evaluated as one aggregate (the count of offending rows) in the statistics scan."""

    check: str
    column: str | None
    severity: str
    expected: Any
    label: str
    violation: str  # SQL condition true for an offending row
    examples: str  # "rows" (example rows), "values" (offending values) or "duplicates" (repeated values)
    counted: str = ""  # SQL aggregate of offending rows, when not count_if(violation)

    def aggregates(self) -> dict[str, str]:
        """The count of offending rows and, for row examples, the first offending row numbers."""
        aggregates = {self.label: self.counted or f"count_if({self.violation})"}
        if self.examples == "rows":
            aggregates[f"{self.label} (example rows)"] = f"min({ROW_NUMBER}, {EXAMPLES}) FILTER (WHERE {self.violation})"
        return aggregates


def _value_checks(name: str, data_type: pa.DataType, rules: dict[str, Any], severity: str) -> list[_Check]:
    column = quote_identifier(name)
    checks = []
    if rules.get("min") is not None or rules.get("max") is not None:
        low, high = rules.get("min"), rules.get("max")
        outside = []
        if low is not None:
            outside.append(f"{column} < {_literal(low)}")
        if high is not None:
            outside.append(f"{column} > {_literal(high)}")
        violation = " OR ".join(outside)
        if pa.types.is_floating(data_type):  # NaN is no value (counted in the statistics), as NULL
            violation = f"NOT isnan({column}) AND ({violation})"
        checks.append(_Check("range", name, severity, {"min": low, "max": high},
                             f"the min/max of column {name!r} in the schema", violation, "rows"))
    if rules.get("allowed_values") is not None:
        allowed = rules["allowed_values"]
        if not isinstance(allowed, list) or not allowed:
            raise SchemaError(f"column {name!r}: allowed_values must be a non-empty list")
        listed = ", ".join(_literal(value) for value in allowed)
        checks.append(_Check("allowed_values", name, severity, allowed,
                             f"the allowed_values of column {name!r} in the schema",
                             f"{column} IS NOT NULL AND {column} NOT IN ({listed})", "values"))
    if rules.get("unique"):
        checks.append(_Check("unique", name, severity, "no repeated values", f"unique column {name!r} in the schema",
                             "", "duplicates", counted=f"count({column}) - count(DISTINCT {column})"))
    return checks


def _expression_checks(schema: dict[str, Any]) -> list[_Check]:
    checks = []
    for index, expression in enumerate(schema.get("expressions", [])):
        name = expression.get("name") or f"expressions[{index}]"
        severity = _severity(expression, f"expression {name!r}")
        checks.append(_Check("expression", name, severity, expression["expr"],
                             f"expression {name!r} ({expression['expr']}) in the schema",
                             f"NOT ({expression['expr']})", "rows"))
    return checks


def _example_rows(connection, source_sql: str, row_numbers: set[int]) -> dict[int, dict[str, Any]]:
    """The rows at these positions (one query for the examples of every check), each with its "row"."""
    if not row_numbers:
        return {}
    cursor = connection.execute(
        f"SELECT * FROM {source_sql} WHERE {ROW_NUMBER} IN ({', '.join(map(str, sorted(row_numbers)))})")
    names = [description[0] for description in cursor.description]
    rows = {}
    for values in cursor.fetchall():
        record = dict(zip(names, jsonable(list(values))))
        number = record.pop(ROW_NUMBER)
        rows[number] = {"row": number, **record}
    return rows


def _example_values(connection, source_sql: str, check: _Check) -> list:
    """The most frequent offending (or repeated) values with their counts."""
    column = quote_identifier(check.column)
    where = f"WHERE {check.violation}" if check.examples == "values" else ""
    having = "HAVING count(*) > 1" if check.examples == "duplicates" else ""
    rows = connection.execute(
        f"SELECT {column}, count(*) AS n FROM {source_sql} {where} GROUP BY {column} {having} "
        f"ORDER BY n DESC, {column} LIMIT {EXAMPLES}"
    ).fetchall()
    return [[jsonable(value), n] for value, n in rows]


def _describe(check: _Check, count: int, rows: int) -> str:
    where = f"column {check.column!r}" if check.check != "expression" else f"expression {check.column!r}"
    if check.check == "range":
        return f"{where}: {count} of {rows} rows outside [{check.expected['min']}, {check.expected['max']}]"
    if check.check == "allowed_values":
        return f"{where}: {count} of {rows} rows have values not in allowed_values"
    if check.check == "unique":
        return f"{where}: {count} rows repeat a value of an earlier row"
    return f"{where}: {count} of {rows} rows break {check.expected}"


def _measure_checks(
    source: ParquetSource, checks: list[_Check], statistics: bool,
) -> tuple[DatasetStatistics, dict[str, list]]:
    """DuckDB: the dataset's statistics with each check's count of offending rows in ``aggregates`` (by
    its label), and the examples of each failed check: offending rows (``{"row": n, column: value ...}``,
    the first ones in the file) or ``[value, count]`` pairs."""
    connection = connect(source.path)
    stats = compute_statistics(
        source.path, aggregates={name: sql for check in checks for name, sql in check.aggregates().items()},
        distributions=statistics, connection=connection,
    )
    failed = [check for check in checks if stats.aggregates[check.label]]
    example_rows = _example_rows(connection, source.sql, {
        number for check in failed if check.examples == "rows"
        for number in stats.aggregates[f"{check.label} (example rows)"]})
    examples = {}
    for check in failed:
        if check.examples == "rows":
            examples[check.label] = [example_rows[number]
                                     for number in stats.aggregates[f"{check.label} (example rows)"]]
        else:
            examples[check.label] = _example_values(connection, source.sql, check)
    return stats, examples


def validate(
    dataset_path: str | Path, schema: dict[str, Any] | str | Path, *, statistics: bool = True,
    engine: str = "duckdb",
) -> ValidationReport:
    """Validate a Parquet dataset against a schema (a dict, JSON text or a JSON file path).

    Checks types, required columns, nullability and null fractions, ranges, allowed values, uniqueness,
    the row count and each SQL expression (a row breaks it when the expression is false; NULL passes, as
    in a SQL CHECK constraint). Columns not in the schema give a warning. ``statistics=False`` leaves
    out the distribution statistics (min/max, mean, quantiles, histograms, top values) of the report
    and computes only what the checks need. The values of columns marked ``pii`` never appear in the
    report: examples show them as ``<pii>`` and their min/max, quantiles, histogram and top values are left
    out. ``engine`` (``duckdb`` or ``spark``) measures the dataset; the schema's SQL expressions are in
    that engine's dialect (:mod:`dmlops.data.engines`).
    """
    check_engine(engine)
    document = load_schema(schema)
    if document is None:
        raise SchemaError("validate needs a schema; run infer_schema to start one")
    source = open_parquet(dataset_path)
    actual_types = {arrow_field.name: arrow_field.type for arrow_field in source.schema}
    findings: list[Finding] = []
    checks_run = 0
    value_checks: list[_Check] = []
    null_rules: dict[str, tuple[dict[str, Any], str]] = {}
    for name, rules in document.get("columns", {}).items():
        severity = _severity(rules, f"column {name!r}")
        if name not in actual_types:
            checks_run += 1
            if rules.get("required", True):
                findings.append(Finding("required", name, severity, "present", "missing", 0,
                                        f"column {name!r} is required but missing from {source.path}"))
            continue
        actual = actual_types[name]
        if "type" in rules:
            checks_run += 1
            expected = arrow_type(rules["type"])
            if not _same_type(actual, expected):
                findings.append(Finding(
                    "type", name, severity, rules["type"], type_name(_logical_type(actual)), 0,
                    f"column {name!r} has type {type_name(_logical_type(actual))}, the schema says "
                    f"{rules['type']} (its value checks were skipped)"))
                null_rules[name] = (rules, severity)
                continue
        null_rules[name] = (rules, severity)
        value_checks.extend(_value_checks(name, actual, rules, severity))
    value_checks.extend(_expression_checks(document))

    if engine == "spark":
        from dmlops.data.spark.validation import measure_checks
    else:
        measure_checks = _measure_checks
    stats, examples = measure_checks(source, value_checks, statistics)
    rows = stats.rows
    for name, (rules, severity) in null_rules.items():
        column = stats.columns[name]
        if rules.get("nullable", True) is False:
            checks_run += 1
            if column.nulls:
                findings.append(Finding("nullable", name, severity, "no nulls", column.nulls, column.nulls,
                                        f"column {name!r} is not nullable but has {column.nulls} nulls"))
        limit = rules.get("max_null_fraction")
        if limit is not None:
            checks_run += 1
            if column.null_fraction > limit:
                findings.append(Finding(
                    "max_null_fraction", name, severity, limit, round(column.null_fraction, 6), column.nulls,
                    f"column {name!r} is {column.null_fraction:.2%} null, more than max_null_fraction {limit}"))
    checks_run += len(value_checks)
    pii = set(pii_columns(document))
    for name in pii & set(stats.columns):  # quantiles and histogram bounds are values of the column too
        stats.columns[name].min = stats.columns[name].max = None
        stats.columns[name].top_values, stats.columns[name].quantiles, stats.columns[name].histogram = [], {}, []
    for check in value_checks:
        count = stats.aggregates[check.label]
        if not count:
            continue
        if check.examples == "rows":
            check_examples = [{**row, **{name: REDACTED for name in pii if name in row}}
                              for row in examples[check.label]]
        elif check.column in pii:
            check_examples = [[REDACTED, n] for _, n in examples[check.label]]
        else:
            check_examples = examples[check.label]
        findings.append(Finding(check.check, check.column, check.severity, check.expected, count, count,
                                _describe(check, count, rows), check_examples))
    bounds = document.get("row_count") or {}
    if bounds.get("min") is not None or bounds.get("max") is not None:
        checks_run += 1
        low, high = bounds.get("min"), bounds.get("max")
        if (low is not None and rows < low) or (high is not None and rows > high):
            wanted = []
            if low is not None:
                wanted.append(f"at least {low}")
            if high is not None:
                wanted.append(f"at most {high}")
            findings.append(Finding(
                "row_count", None, _severity(bounds, "row_count"), {"min": low, "max": high}, rows, 0,
                f"{source.path} has {rows} rows; the schema's row_count asks for {' and '.join(wanted)}"))
    for name in actual_types:
        if name not in document.get("columns", {}):
            findings.append(Finding("unexpected_column", name, "warn", "not present", "present", 0,
                                    f"column {name!r} is not in the schema; add it there to check it"))
    return ValidationReport(source.path, rows, checks_run, findings, stats.columns)
