"""Drift and training/serving skew between two Parquet datasets, per column.

Numeric columns: Population Stability Index over bins cut at the reference deciles. Categorical columns
(strings, booleans): Jensen–Shannon distance (base 2, in [0, 1]) or the chi-square test's p-value over
the categories seen in either dataset. Nulls count as a bin/category of their own, so a change in the
null rate is drift too. The reference is read twice (deciles, then bin counts), the current data once.
An engine measures the deciles and counts (DuckDB here, Spark in :mod:`dmlops.data.spark.drift`);
:func:`compare` scores them and builds the report for both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dmlops.data.engines import check_engine
from dmlops.data.errors import DataError
from dmlops.data.statistics import (
    CATEGORICAL, NUMERIC, TEMPORAL, ParquetSource, column_kind, connect, double_literal, open_parquet,
    quote_identifier, run_aggregates,
)

CATEGORICAL_METHODS = ("jensen-shannon", "chi-square")
DECILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
PSI_FLOOR = 1e-4
NULL_BIN = "(null)"


@dataclass
class ColumnDrift:
    """The drift of one column: the distance (``score``), its threshold, and both distributions as
    proportions over the same ``bins``. For ``chi-square`` the score is a p-value: drift is a p-value
    below the threshold; for ``psi`` and ``jensen-shannon`` a score above it."""

    column: str
    kind: str
    method: str
    score: float
    threshold: float
    drifted: bool
    bins: list[str]
    reference: list[float]
    current: list[float]


@dataclass
class DriftReport:
    """Drift of every compared column between a reference and a current dataset."""

    reference_path: str
    current_path: str
    reference_rows: int
    current_rows: int
    columns: list[ColumnDrift]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def drifted(self) -> bool:
        """True when any compared column drifted."""
        return any(column.drifted for column in self.columns)

    @property
    def drifted_columns(self) -> list[str]:
        return [column.column for column in self.columns if column.drifted]

    def summary(self) -> str:
        verdict = f"drift in {', '.join(self.drifted_columns)}" if self.drifted else "no drift"
        return f"{self.current_path} against {self.reference_path}: {verdict} ({len(self.columns)} columns compared)"

    def metrics(self) -> dict[str, float]:
        """Flat metrics for KFP: drifted, counts, and each column's score named by its method."""
        metrics = {
            "drifted": float(self.drifted), "drifted_columns": float(len(self.drifted_columns)),
            "columns_compared": float(len(self.columns)),
            "reference_rows": float(self.reference_rows), "current_rows": float(self.current_rows),
        }
        for column in self.columns:
            metrics[f"{column.method}.{column.column}"] = float(column.score)
        return metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference_path, "current": self.current_path,
            "reference_rows": self.reference_rows, "current_rows": self.current_rows,
            "drifted": self.drifted, "drifted_columns": self.drifted_columns,
            "columns": [asdict(column) for column in self.columns], "skipped": self.skipped,
        }

    def to_html(self) -> str:
        """A self-contained HTML report: summary and, per column, the score and both distributions."""
        from dmlops.data.report import drift_html

        return drift_html(self)


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """Population Stability Index of two proportion vectors over the same bins (empty bins floored)."""
    reference, current = np.maximum(reference, PSI_FLOOR), np.maximum(current, PSI_FLOOR)
    return float(np.sum((current - reference) * np.log(current / reference)))


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2, in [0, 1]) of two proportion vectors over the same bins."""
    middle = (reference + current) / 2

    def divergence(shares: np.ndarray) -> float:
        present = shares > 0
        return float(np.sum(shares[present] * np.log2(shares[present] / middle[present])))

    return math.sqrt(max((divergence(reference) + divergence(current)) / 2, 0.0))


def chi_square_p_value(reference_counts: list[int], current_counts: list[int]) -> float:
    """The p-value of the chi-square test that both count vectors come from one distribution."""
    from scipy.stats import chi2_contingency  # scipy takes seconds to import: only for this method

    return float(chi2_contingency(np.array([reference_counts, current_counts])).pvalue)


def _value_sql(name: str, data_type: pa.DataType) -> tuple[str, str]:
    """The SQL of a binned column's value as DOUBLE (time as epoch seconds) and of its missing test."""
    column = quote_identifier(name)
    if column_kind(data_type) == TEMPORAL:
        return f"epoch({column})", f"{column} IS NULL"
    if pa.types.is_floating(data_type):
        return f"CAST({column} AS DOUBLE)", f"({column} IS NULL OR isnan({column}))"
    return f"CAST({column} AS DOUBLE)", f"{column} IS NULL"


def _bin_labels(edges: list[float], temporal: bool) -> list[str]:
    def show(edge: float) -> str:
        return datetime.fromtimestamp(edge, timezone.utc).isoformat() if temporal else f"{edge:.6g}"

    labels = [f"≤ {show(edges[0])}"]
    labels += [f"({show(low)}, {show(high)}]" for low, high in zip(edges, edges[1:])]
    labels.append(f"> {show(edges[-1])}")
    return labels


def _binned(counts: dict[float, int], edges: list[float]) -> list[int]:
    """Counts per bin from DuckDB's ``histogram(value, edges)`` map (upper edge -> count; the bin above
    the last edge appears only when it holds values)."""
    above = sum(n for edge, n in counts.items() if edge not in set(edges))
    return [counts.get(edge, 0) for edge in edges] + [above]


def _select_columns(
    reference: ParquetSource, current: ParquetSource, columns: list[str] | None,
) -> tuple[dict[str, pa.DataType], dict[str, str]]:
    """The columns to compare (name -> reference type) and the columns skipped with the reason."""
    reference_types = {arrow_field.name: arrow_field.type for arrow_field in reference.schema}
    current_types = {arrow_field.name: arrow_field.type for arrow_field in current.schema}
    skipped: dict[str, str] = {}
    if columns:
        for name in columns:
            for source, types in ((reference, reference_types), (current, current_types)):
                if name not in types:
                    raise DataError(f"column {name!r} is not in {source.path}; its columns are {sorted(types)}")
        names = list(columns)
    else:
        names = [name for name in reference_types if name in current_types]
        for name in reference_types.keys() ^ current_types.keys():
            side = "current" if name in reference_types else "reference"
            skipped[name] = f"missing from the {side} dataset"
    selected = {}
    for name in names:
        kind, current_kind = column_kind(reference_types[name]), column_kind(current_types[name])
        if kind != current_kind:
            skipped[name] = f"{kind} in the reference but {current_kind} in the current dataset"
        elif kind == TEMPORAL and not columns:
            skipped[name] = "time column (later data differs by construction); name it in columns to compare it"
        elif kind not in (NUMERIC, CATEGORICAL, TEMPORAL):
            skipped[name] = f"type {reference_types[name]} has no distribution to compare"
        else:
            selected[name] = reference_types[name]
    return selected, skipped


@dataclass
class Distributions:
    """What an engine counted in one dataset: its rows, and per compared column the counts per bin
    (numeric and time columns: ``len(edges) + 1`` bins, a value in the first bin whose upper edge is at or
    above it, the last bin above every edge) or per category text, and the missing (null or NaN) values."""

    rows: int
    counts: dict[str, list[int] | dict[str, int]]
    missing: dict[str, int]


def _distribution_aggregates(
    selected: dict[str, pa.DataType], edges: dict[str, list[float]],
) -> dict[str, str]:
    """Aggregates giving each column's bin (or category) counts and missing count in one scan."""
    aggregates = {"rows": "count(*)"}
    for index, (name, data_type) in enumerate(selected.items()):
        if name in edges:
            value, missing = _value_sql(name, data_type)
            boundaries = "[" + ", ".join(map(double_literal, edges[name])) + "]"
            aggregates[f"c{index}_counts"] = f"histogram({value}, {boundaries}) FILTER (WHERE NOT {missing})"
        else:
            column = quote_identifier(name)
            missing = f"{column} IS NULL"
            aggregates[f"c{index}_counts"] = f"histogram(CAST({column} AS VARCHAR))"
        aggregates[f"c{index}_missing"] = f"count_if({missing})"
    return aggregates


def _cuts(reference: ParquetSource, selected: dict[str, pa.DataType]) -> dict[str, Any]:
    """DuckDB: per column, the reference's distinct count (categorical) or its exact deciles (None when it
    has no values)."""
    profile = {"rows": "count(*)"}
    for index, (name, data_type) in enumerate(selected.items()):
        if column_kind(data_type) == CATEGORICAL:
            profile[f"c{index}"] = f"count(DISTINCT {quote_identifier(name)})"
        else:
            value, missing = _value_sql(name, data_type)
            profile[f"c{index}"] = f"quantile_cont({value}, {DECILES}) FILTER (WHERE NOT {missing})"
    cuts = run_aggregates(connect(reference.path), reference, profile)
    return {name: cuts[f"c{index}"] for index, name in enumerate(selected)}


def _distributions(
    source: ParquetSource, selected: dict[str, pa.DataType], edges: dict[str, list[float]],
) -> Distributions:
    """DuckDB: the bin and category counts of ``source`` in one scan."""
    values = run_aggregates(connect(source.path), source, _distribution_aggregates(selected, edges))
    counts: dict[str, list[int] | dict[str, int]] = {}
    for index, name in enumerate(selected):
        found = values[f"c{index}_counts"] or {}
        counts[name] = _binned(found, edges[name]) if name in edges else found
    return Distributions(values["rows"], counts,
                         {name: values[f"c{index}_missing"] for index, name in enumerate(selected)})


def compare(
    reference_path: str | Path,
    current_path: str | Path,
    *,
    columns: list[str] | None = None,
    psi_threshold: float = 0.2,
    categorical_threshold: float = 0.1,
    categorical_method: str = "jensen-shannon",
    max_categories: int = 1000,
    engine: str = "duckdb",
) -> DriftReport:
    """Compare the distribution of each column of ``current_path`` with ``reference_path``.

    ``columns`` defaults to every numeric and categorical column in both datasets (time columns only when
    named). A numeric column drifts when its PSI exceeds ``psi_threshold``; a categorical column when its
    Jensen–Shannon distance exceeds ``categorical_threshold`` (``categorical_method="jensen-shannon"``) or
    its chi-square p-value is below it (``"chi-square"``). Categorical columns with more than
    ``max_categories`` distinct reference values are skipped: for identifier-like columns the distance
    mostly measures sampling noise. ``engine`` (``duckdb`` or ``spark``) counts; both cut the bins at the
    same exact deciles.
    """
    check_engine(engine)
    if categorical_method not in CATEGORICAL_METHODS:
        raise ValueError(f"categorical_method must be one of {CATEGORICAL_METHODS}, got {categorical_method!r}")
    reference, current = open_parquet(reference_path), open_parquet(current_path)
    selected, skipped = _select_columns(reference, current, columns)
    if engine == "spark":
        from dmlops.data.spark.drift import cuts as measure_cuts
        from dmlops.data.spark.drift import distributions as measure_distributions
    else:
        measure_cuts, measure_distributions = _cuts, _distributions
    cuts = measure_cuts(reference, selected)
    edges: dict[str, list[float]] = {}
    for name, data_type in list(selected.items()):
        value = cuts[name]
        if column_kind(data_type) == CATEGORICAL:
            if value > max_categories:
                skipped[name] = f"{value} distinct values in the reference, more than max_categories={max_categories}"
                del selected[name]
        elif value is None:
            skipped[name] = "no values in the reference dataset"
            del selected[name]
        else:
            edges[name] = sorted({float(cut) for cut in value if math.isfinite(cut)})

    reference_counts = measure_distributions(reference, selected, edges)
    current_counts = measure_distributions(current, selected, edges)
    report = DriftReport(reference.path, current.path, reference_counts.rows, current_counts.rows, [], skipped)
    if not report.reference_rows or not report.current_rows:
        empty = reference.path if not report.reference_rows else current.path
        raise DataError(f"{empty} has no rows; drift needs rows in both datasets")
    for name, data_type in selected.items():
        kind = column_kind(data_type)
        ref_map, cur_map = reference_counts.counts[name], current_counts.counts[name]
        if name in edges:
            bins = _bin_labels(edges[name], kind == TEMPORAL)
            ref_counts, cur_counts = list(ref_map), list(cur_map)
            method, threshold = "psi", psi_threshold
        else:
            bins = sorted(ref_map.keys() | cur_map.keys(), key=lambda key: (-ref_map.get(key, 0), key))
            ref_counts = [ref_map.get(key, 0) for key in bins]
            cur_counts = [cur_map.get(key, 0) for key in bins]
            method, threshold = categorical_method, categorical_threshold
        ref_missing, cur_missing = reference_counts.missing[name], current_counts.missing[name]
        if ref_missing or cur_missing:
            bins, ref_counts, cur_counts = [*bins, NULL_BIN], [*ref_counts, ref_missing], [*cur_counts, cur_missing]
        ref_share = np.array(ref_counts, dtype=float) / report.reference_rows
        cur_share = np.array(cur_counts, dtype=float) / report.current_rows
        if method == "psi":
            score = psi(ref_share, cur_share)
            drifted = score > threshold
        elif method == "jensen-shannon":
            score = jensen_shannon(ref_share, cur_share)
            drifted = score > threshold
        else:
            score = chi_square_p_value(ref_counts, cur_counts) if len(bins) > 1 else 1.0
            drifted = score < threshold
        report.columns.append(ColumnDrift(
            name, kind, method, score, threshold, bool(drifted), bins,
            [float(share) for share in ref_share], [float(share) for share in cur_share],
        ))
    return report
