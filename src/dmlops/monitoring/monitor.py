"""A production window against the training reference: drift, realized and estimated performance.

- **Feature drift** and **prediction drift**: the window's logged features and predicted probabilities
  against the reference dataset, per column, with :func:`dmlops.data.drift.compare` (PSI, Jensen–Shannon).
  Prediction drift needs a ``prediction`` column in the reference (the model's probabilities on it).
- **Realized performance** (ROC AUC, accuracy at 0.5) on the window's rows whose labels have arrived
  (the labelled production set of :mod:`dmlops.monitoring.feedback`).
- **Estimated performance** before labels arrive, confidence-based as NannyML's CBPE: a calibrated
  probability p is the chance that the row is positive, so each row adds p to the expected positives
  and 1 - p to the expected negatives above every threshold; the expected ROC curve gives the estimated
  AUC and the mean of max(p, 1 - p) the estimated accuracy. The probabilities are first calibrated on
  the reference (isotonic regression of its labels on its predictions, :func:`isotonic_calibration`)
  when it has both.
- **Label join lag**: median and 95th percentile of label time - prediction time.

``drifted``: any feature or the prediction drifted. ``degraded``: the performance (realized where at
least ``min_labelled_rows`` labels arrived, else estimated) is more than ``max_auc_drop`` below the
baseline AUC (given, or realized on the reference).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from scipy.stats import rankdata

from dmlops.data.drift import DriftReport, compare
from dmlops.data.errors import DataError
from dmlops.serving.log_layout import read_log

PREDICTION = "prediction"


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC (Mann–Whitney, ties averaged); None when only one class is present."""
    positives = int(labels.sum())
    negatives = len(labels) - positives
    if not positives or not negatives:
        return None
    ranks = rankdata(scores)
    return float((ranks[labels == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def estimated_auc(probabilities: np.ndarray) -> float | None:
    """The AUC expected if ``probabilities`` are calibrated (CBPE): the area under the expected ROC curve."""
    p = np.sort(np.asarray(probabilities, dtype=float))[::-1]
    expected_positives, expected_negatives = p.sum(), (1 - p).sum()
    if len(p) == 0 or expected_positives == 0 or expected_negatives == 0:
        return None
    # thresholds between distinct values only: tied rows move together along the curve
    last_of_value = np.r_[p[1:] != p[:-1], True]
    tpr = np.r_[0.0, np.cumsum(p)[last_of_value] / expected_positives]
    fpr = np.r_[0.0, np.cumsum(1 - p)[last_of_value] / expected_negatives]
    return float(np.trapezoid(tpr, fpr))


def _binary(labels: pd.Series, where: str) -> np.ndarray:
    values = labels.astype(float).to_numpy()
    if not np.isin(values, (0.0, 1.0)).all():
        raise DataError(f"{where}: the labels must be 0/1 or booleans for binary performance")
    return values


@dataclass
class MonitorReport:
    """The figures of one monitored window (see the module docstring)."""

    rows: int
    labelled_rows: int
    feature_drift: DriftReport
    prediction_drift: dict[str, Any] | None
    realized_auc: float | None
    realized_accuracy: float | None
    estimated_auc: float | None
    estimated_accuracy: float | None
    baseline_auc: float | None
    label_lag_seconds: dict[str, float]
    max_auc_drop: float
    min_labelled_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def performance_source(self) -> str:
        return "realized" if self.labelled_rows >= self.min_labelled_rows and self.realized_auc is not None \
            else "estimated"

    @property
    def auc(self) -> float | None:
        """The AUC the degraded verdict uses: realized with enough labels, else estimated."""
        return self.realized_auc if self.performance_source == "realized" else self.estimated_auc

    @property
    def drifted_features(self) -> list[str]:
        return [column for column in self.feature_drift.drifted_columns if column != PREDICTION]

    @property
    def drifted(self) -> bool:
        return bool(self.drifted_features) or bool(self.prediction_drift and self.prediction_drift["drifted"])

    @property
    def degraded(self) -> bool:
        return self.baseline_auc is not None and self.auc is not None and \
            self.baseline_auc - self.auc > self.max_auc_drop

    def metrics(self) -> dict[str, float]:
        """Flat figures for KFP's Metrics (missing figures are left out)."""
        figures: dict[str, float | None] = {
            "drifted": float(self.drifted), "degraded": float(self.degraded), "rows": self.rows,
            "labelled_rows": self.labelled_rows, "labelled_fraction": self.labelled_rows / self.rows if self.rows else 0.0,
            "drifted_features": len(self.drifted_features), "realized_auc": self.realized_auc,
            "realized_accuracy": self.realized_accuracy, "estimated_auc": self.estimated_auc,
            "estimated_accuracy": self.estimated_accuracy, "baseline_auc": self.baseline_auc,
            "prediction_drift_score": self.prediction_drift["score"] if self.prediction_drift else None,
            **{f"label_lag_{name}_seconds": value for name, value in self.label_lag_seconds.items()},
        }
        for column in self.feature_drift.columns:
            if column.column != PREDICTION:
                figures[f"drift.{column.method}.{column.column}"] = column.score
        return {name: float(value) for name, value in figures.items() if value is not None}

    def to_html(self, title: str = "Production monitor") -> str:
        from dmlops.monitoring.report import monitor_html

        return monitor_html(self, title)


def isotonic_calibration(scores: np.ndarray, labels: np.ndarray):
    """The isotonic regression of 0/1 ``labels`` on ``scores`` (pool adjacent violators), as a function
    that maps scores to calibrated probabilities (linear between the fitted blocks, clipped outside)."""
    order = np.argsort(scores, kind="stable")
    means: list[float] = []
    weights: list[float] = []
    centres: list[float] = []
    for score, label in zip(scores[order].tolist(), labels[order].tolist()):
        means.append(label)
        weights.append(1.0)
        centres.append(score)
        while len(means) > 1 and means[-2] >= means[-1]:  # a violation (or a tie): pool the two blocks
            weight = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / weight
            centres[-2] = (centres[-2] * weights[-2] + centres[-1] * weights[-1]) / weight
            weights[-2] = weight
            del means[-1], weights[-1], centres[-1]
    return lambda values: np.interp(values, centres, means)


def _calibrator(reference: pd.DataFrame, label_name: str):
    return isotonic_calibration(reference[PREDICTION].to_numpy(float), _binary(reference[label_name], "reference"))


def monitor(
    reference_path: str | Path,
    log_uri: str,
    *,
    labelled_path: str | Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    label_name: str = "label",
    baseline_auc: float | None = None,
    max_auc_drop: float = 0.05,
    min_labelled_rows: int = 200,
    psi_threshold: float = 0.2,
    categorical_threshold: float = 0.1,
) -> MonitorReport:
    """Monitor the predictions logged under ``log_uri`` in ``[since, until)`` against the reference
    dataset (Parquet: the training features, ``label_name``, optionally ``prediction``); labels from
    the labelled production set at ``labelled_path`` (:func:`dmlops.monitoring.feedback.join_labels`)."""
    window = read_log(log_uri, since=since, until=until)
    if not window.num_rows:
        raise DataError(f"no predictions logged under {log_uri} in the window; nothing to monitor")
    logged = window.to_pandas()
    production = pd.DataFrame.from_records([json.loads(text) for text in logged["features"]])
    production[PREDICTION] = logged[PREDICTION].to_numpy()
    scoring = [name for name in (PREDICTION, label_name) if name in pq.read_schema(reference_path).names]
    reference = pq.read_table(reference_path, columns=scoring).to_pandas()
    notes = []
    with tempfile.TemporaryDirectory() as scratch:
        current_path = Path(scratch) / "production.parquet"
        pq.write_table(pa.Table.from_pandas(production, preserve_index=False), current_path)
        drift = compare(reference_path, current_path, psi_threshold=psi_threshold,
                        categorical_threshold=categorical_threshold)
    drift.current_path = f"{log_uri} ({len(production)} rows)"
    prediction_drift = next(({"method": c.method, "score": c.score, "threshold": c.threshold, "drifted": c.drifted}
                             for c in drift.columns if c.column == PREDICTION), None)
    if prediction_drift is None:
        notes.append("prediction drift not measured: the reference has no prediction column")

    probabilities = production[PREDICTION].dropna().to_numpy(float)
    has_scored_reference = PREDICTION in reference and label_name in reference
    if has_scored_reference:
        scored = reference.dropna(subset=[PREDICTION, label_name])
        probabilities = _calibrator(scored, label_name)(probabilities)
        if baseline_auc is None:
            baseline_auc = roc_auc(scored[PREDICTION].to_numpy(float), _binary(scored[label_name], "reference"))
    else:
        notes.append("probabilities used as they are: the reference has no prediction and label to calibrate on")
    if baseline_auc is None:
        notes.append("no baseline AUC (give one, or a reference with prediction and label): degraded is not judged")

    realized_auc = realized_accuracy = None
    lag: dict[str, float] = {}
    labelled_rows = 0
    if labelled_path:
        labelled = pq.read_table(labelled_path).to_pandas()
        keys = set(zip(logged["request_id"], logged["row"].astype("int64")))
        labelled = labelled[[key in keys for key in zip(labelled["request_id"], labelled["row"])]]
        labelled = labelled.dropna(subset=[PREDICTION, label_name])
        labelled_rows = len(labelled)
        if labelled_rows:
            truth = _binary(labelled[label_name], str(labelled_path))
            scores = labelled[PREDICTION].to_numpy(float)
            realized_auc = roc_auc(scores, truth)
            realized_accuracy = float(((scores >= 0.5) == (truth == 1)).mean())
            lag = {"p50": float(labelled["label_lag_seconds"].quantile(0.5)),
                   "p95": float(labelled["label_lag_seconds"].quantile(0.95))}
    return MonitorReport(
        rows=len(production), labelled_rows=labelled_rows, feature_drift=drift, prediction_drift=prediction_drift,
        realized_auc=realized_auc, realized_accuracy=realized_accuracy, estimated_auc=estimated_auc(probabilities),
        estimated_accuracy=float(np.maximum(probabilities, 1 - probabilities).mean()) if len(probabilities) else None,
        baseline_auc=baseline_auc, label_lag_seconds=lag, max_auc_drop=max_auc_drop,
        min_labelled_rows=min_labelled_rows, notes=notes,
    )


def parse_window(start: str = "", end: str = "", hours: float = 0.0) -> tuple[datetime | None, datetime | None]:
    """``[since, until)`` from ISO 8601 times (UTC when they name no zone): ``start``/``end`` as given, or
    the ``hours`` before ``end`` (default now) when ``start`` is empty; no bound where neither is set."""
    def moment(text: str) -> datetime:
        value = datetime.fromisoformat(text)
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    until = moment(end) if end else None
    since = moment(start) if start else None
    if since is None and hours > 0:
        since = (until or datetime.now(timezone.utc)) - timedelta(hours=hours)
    return since, until
