"""The monitor's and the feedback join's figures as Prometheus gauges, pushed to a Pushgateway.

A batch step cannot be scraped, so it pushes (``prometheus_client.push_to_gateway``) under the job
``dmlops-monitor`` (the feedback join under ``dmlops-feedback``) and the grouping key ``model``: each push
replaces that model's previous figures of that job.
The names are the contract of the alert rules in ``manifests/base/monitoring-rule.yaml``.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from dmlops.monitoring.feedback import FeedbackCounts
from dmlops.monitoring.monitor import MonitorReport

MONITOR_JOB = "dmlops-monitor"
FEEDBACK_JOB = "dmlops-feedback"
DRIFTED = "dmlops_monitor_drifted"
DEGRADED = "dmlops_monitor_degraded"
AUC = "dmlops_monitor_auc"
FEATURE_DRIFT = "dmlops_monitor_feature_drift_score"
PREDICTION_DRIFT = "dmlops_monitor_prediction_drift_score"
ROWS = "dmlops_monitor_rows"
LABELLED_FRACTION = "dmlops_monitor_labelled_fraction"
LABEL_LAG = "dmlops_monitor_label_lag_seconds"
LAST_RUN = "dmlops_monitor_last_run_timestamp_seconds"
FEEDBACK_ROWS = "dmlops_feedback_rows"
FEEDBACK_JOINED_FRACTION = "dmlops_feedback_joined_fraction"
FEEDBACK_LAST_RUN = "dmlops_feedback_last_run_timestamp_seconds"
AUC_KINDS = ("realized", "estimated", "baseline")
FEEDBACK_STATES = ("joined", "pending", "expired")


def monitor_registry(report: MonitorReport) -> CollectorRegistry:
    """The monitor report as gauges (a figure that was not measured is left out)."""
    registry = CollectorRegistry()
    Gauge(DRIFTED, "1 when a feature or the prediction drifted in the last monitored window.",
          registry=registry).set(float(report.drifted))
    Gauge(DEGRADED, "1 when the model's AUC fell below the baseline by more than the allowed drop.",
          registry=registry).set(float(report.degraded))
    auc = Gauge(AUC, "AUC of the last window: realized (labelled rows), estimated (CBPE) and the baseline.",
                ["kind"], registry=registry)
    for kind, value in zip(AUC_KINDS, (report.realized_auc, report.estimated_auc, report.baseline_auc)):
        if value is not None:
            auc.labels(kind).set(value)
    features = Gauge(FEATURE_DRIFT, "Drift score of each feature (PSI or Jensen-Shannon) against the reference.",
                     ["feature", "method"], registry=registry)
    for column in report.feature_drift.columns:
        if column.column != "prediction":
            features.labels(column.column, column.method).set(column.score)
    if report.prediction_drift:
        Gauge(PREDICTION_DRIFT, "Drift score of the predicted probability against the reference.",
              registry=registry).set(report.prediction_drift["score"])
    Gauge(ROWS, "Predictions in the last monitored window.", registry=registry).set(report.rows)
    Gauge(LABELLED_FRACTION, "Share of the window's predictions whose label has arrived.",
          registry=registry).set(report.labelled_rows / report.rows if report.rows else 0.0)
    lag = Gauge(LABEL_LAG, "Label time minus prediction time of the window's labelled rows.", ["quantile"],
                registry=registry)
    for name, value in report.label_lag_seconds.items():
        lag.labels({"p50": "0.5", "p95": "0.95"}[name]).set(value)
    Gauge(LAST_RUN, "When the monitor last ran (Unix time).", registry=registry).set(time.time())
    return registry


def feedback_registry(counts: FeedbackCounts) -> CollectorRegistry:
    """The feedback join's counts as gauges."""
    registry = CollectorRegistry()
    rows = Gauge(FEEDBACK_ROWS, "Logged predictions by label state: joined, pending, expired (label lost).",
                 ["state"], registry=registry)
    for state in FEEDBACK_STATES:
        rows.labels(state).set(getattr(counts, state))
    Gauge(FEEDBACK_JOINED_FRACTION, "Joined among the predictions whose label is due (joined + expired).",
          registry=registry).set(counts.joined_fraction)
    Gauge(FEEDBACK_LAST_RUN, "When the feedback join last ran (Unix time).", registry=registry).set(time.time())
    return registry


def push(gateway: str, registry: CollectorRegistry, model: str, job: str) -> None:
    """Replace ``model``'s figures under ``job`` on the Pushgateway at ``gateway`` (host:port or URL)."""
    push_to_gateway(gateway, job=job, registry=registry, grouping_key={"model": model}, timeout=10)
