"""Components that close the loop in production: delayed labels joined to the prediction log, and the
production window monitored against the training reference."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Dataset, Input, Metrics, Output

from dmlops.images import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def feedback(
    predictions_uri: str,
    labels: Input[Dataset],
    labelled: Output[Dataset],
    metrics: Output[Metrics],
    max_label_delay_hours: float = 24.0,
    window_start: str = "",
    window_end: str = "",
    as_of: str = "",
    label_name: str = "label",
    model: str = "",
    pushgateway: str = "",
) -> NamedTuple("FeedbackOutputs", [("joined", int), ("pending", int), ("expired", int)]):
    """Join delayed labels to the logged predictions by request id (and row) and write the labelled
    production set; every prediction is counted once as joined, pending or expired, every label once as
    joined, duplicate (the last label of a prediction wins) or unmatched.

    Args:
        predictions_uri: The predictor's prediction log (``--prediction_log``): folder, gs:// or s3:// URI.
        labels: Parquet with request_id, the label (label_name), label_time and optionally row.
        labelled: The labelled production set (Parquet): request_id, row, model_name, model_version,
            prediction_time, the logged features, prediction, the label, label_time, label_lag_seconds.
            Metadata: rows and the counts.
        metrics: predictions, joined, pending, expired, duplicate_predictions, labels, duplicate_labels,
            unmatched_labels, later_labels (label_time after as_of: not arrived yet then) and joined_fraction
            (joined among the predictions whose label is due).
        max_label_delay_hours: A prediction without a label after this long is expired (its label lost).
        window_start: Only predictions logged at or after this ISO 8601 time (UTC unless it says); empty:
            from the first.
        window_end: Only predictions logged before this ISO 8601 time; empty: to the last.
        as_of: The ISO 8601 time pending and expired are judged at; empty: now.
        label_name: The label column of labels, kept under this name in the labelled set.
        model: The model name the figures are pushed under (the Pushgateway's grouping key).
        pushgateway: A Prometheus Pushgateway (host:port or URL) to push the counts to; empty: no push.

    Returns:
        joined: Predictions with a label.
        pending: Predictions still waiting for their label.
        expired: Predictions whose label did not arrive within max_label_delay_hours.
    """
    from collections import namedtuple
    from dataclasses import asdict

    from dmlops.monitoring import metrics as figures
    from dmlops.monitoring.feedback import join_labels
    from dmlops.monitoring.monitor import parse_window

    since, until = parse_window(window_start, window_end)
    counts = join_labels(
        predictions_uri, labels.path, labelled.path, max_label_delay_hours=max_label_delay_hours,
        as_of=parse_window(as_of)[0], since=since, until=until, label_name=label_name,
    )
    labelled.metadata.update({"rows": counts.joined, **asdict(counts)})
    for name, value in counts.metrics().items():
        metrics.log_metric(name, value)
    if pushgateway:
        figures.push(pushgateway, figures.feedback_registry(counts), model=model or "model", job=figures.FEEDBACK_JOB)
    print(f"{counts.predictions} predictions: {counts.joined} joined, {counts.pending} pending, "
          f"{counts.expired} expired; {counts.labels} labels: {counts.duplicate_labels} duplicate, "
          f"{counts.unmatched_labels} unmatched, {counts.later_labels} later than as_of")
    return namedtuple("FeedbackOutputs", ["joined", "pending", "expired"])(counts.joined, counts.pending, counts.expired)


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def monitor(
    reference: Input[Dataset],
    predictions_uri: str,
    metrics: Output[Metrics],
    html: Output[HTML],
    labelled: Input[Dataset] = None,
    window_hours: float = 24.0,
    window_start: str = "",
    window_end: str = "",
    label_name: str = "label",
    baseline_auc: float = 0.0,
    max_auc_drop: float = 0.05,
    min_labelled_rows: int = 200,
    psi_threshold: float = 0.2,
    categorical_threshold: float = 0.1,
    model: str = "",
    pushgateway: str = "",
) -> NamedTuple("MonitorOutputs", [("drifted", bool), ("degraded", bool)]):
    """Monitor a window of logged predictions against the training reference: feature and prediction
    drift, realized AUC where labels arrived, AUC estimated from the probabilities (confidence-based,
    CBPE) where they have not, and the label lag.

    Args:
        reference: The training reference (Parquet): the features, the label and, for prediction drift and
            calibration, the model's probabilities in a ``prediction`` column.
        predictions_uri: The predictor's prediction log (``--prediction_log``): folder, gs:// or s3:// URI.
        metrics: drifted and degraded (1 or 0), rows, labelled_rows, labelled_fraction, drifted_features,
            realized_auc, estimated_auc, baseline_auc, accuracies, prediction_drift_score, label lag
            (label_lag_p50_seconds, label_lag_p95_seconds) and each feature's score as
            ``drift.<method>.<feature>``; figures that could not be measured are left out.
        html: The report: verdicts, performance, label lag and each feature's two distributions.
        labelled: The labelled production set from feedback; without it performance is only estimated.
        window_hours: The window is the last this many hours before window_end (or now).
        window_start: The window's start (ISO 8601, UTC unless it says); set, it replaces window_hours.
        window_end: The window's end (ISO 8601); empty: now.
        label_name: The label column of the reference and the labelled set (0/1 or booleans).
        baseline_auc: The AUC the model is held to; 0 takes the AUC of the reference's prediction column.
        max_auc_drop: degraded when the AUC (realized with at least min_labelled_rows labels, else
            estimated) is more than this below the baseline.
        min_labelled_rows: Labelled rows needed to judge on the realized AUC instead of the estimate.
        psi_threshold: A numeric feature (or the prediction) drifts when its PSI is above this.
        categorical_threshold: A categorical feature drifts when its Jensen-Shannon distance is above this.
        model: The model name the figures are pushed under (the Pushgateway's grouping key).
        pushgateway: A Prometheus Pushgateway (host:port or URL) to push the figures to; empty: no push.

    Returns:
        drifted: True when a feature or the prediction drifted.
        degraded: True when the AUC fell more than max_auc_drop below the baseline.
    """
    from collections import namedtuple

    from dmlops.monitoring import metrics as figures
    from dmlops.monitoring.monitor import monitor as measure
    from dmlops.monitoring.monitor import parse_window

    since, until = parse_window(window_start, window_end, window_hours)
    report = measure(
        reference.path, predictions_uri, labelled_path=labelled.path if labelled else None, since=since,
        until=until, label_name=label_name, baseline_auc=baseline_auc or None, max_auc_drop=max_auc_drop,
        min_labelled_rows=min_labelled_rows, psi_threshold=psi_threshold,
        categorical_threshold=categorical_threshold,
    )
    for name, value in report.metrics().items():
        metrics.log_metric(name, value)
    with open(html.path, "w", encoding="utf-8") as file:
        file.write(report.to_html(f"Production monitor: {model or predictions_uri}"))
    if pushgateway:
        figures.push(pushgateway, figures.monitor_registry(report), model=model or "model", job=figures.MONITOR_JOB)
    auc = "n/a" if report.auc is None else f"{report.auc:.4f}"
    print(f"{report.rows} predictions, {report.labelled_rows} labelled: drifted={report.drifted} "
          f"({', '.join(report.drifted_features) or 'no feature'}), degraded={report.degraded} "
          f"({report.performance_source} AUC {auc})")
    return namedtuple("MonitorOutputs", ["drifted", "degraded"])(report.drifted, report.degraded)
