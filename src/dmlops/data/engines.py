"""The engines that run dmlops's data operations, and the SQL dialect each takes.

- ``duckdb`` (the default): DuckDB in the step's own process. Column expressions, quarantine rules,
  schema expressions and feature means are DuckDB SQL, evaluated sandboxed (:mod:`dmlops.data.sandbox`);
  intervals (``gap``, ``period``, ``available_after``) are DuckDB intervals such as ``'1 day'``.
- ``spark``: Apache Spark (:mod:`dmlops.data.spark`), embedded ``local[*]`` or a cluster's. The same
  inputs are Spark SQL expressions (identifiers quoted with backticks, not double quotes; ANSI mode,
  so a bad cast or a division by zero fails the step instead of giving NULL), checked before they run
  (:mod:`dmlops.data.spark.sandbox`); intervals are fixed lengths, e.g. ``'1 day'``, ``'6 hours'``.

Both engines give the same reports: the same counts, and statistics, quantiles and drift scores equal
to within floating-point rounding (exact quantiles by linear interpolation in both).
"""

from __future__ import annotations

ENGINES = ("duckdb", "spark")


def check_engine(engine: str) -> str:
    """``engine`` when it is one of :data:`ENGINES`, else a ValueError naming them."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    return engine
