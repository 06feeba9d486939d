"""Prometheus metrics of the dmlops predictor, served on the model server's ``/metrics``.

The names are the contract of the alerting rules and dashboards in ``manifests/``: request outcomes (error
rate), request latency, the distribution of predicted probabilities (drift of the served model), and the
rows the prediction log wrote or dropped (:mod:`dmlops.serving.prediction_log`).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = "dmlops_serving_requests_total"
REQUEST_SECONDS = "dmlops_serving_request_seconds"
PREDICTION = "dmlops_serving_prediction"
ROWS = "dmlops_serving_rows_total"
FEATURE_LOOKUP_SECONDS = "dmlops_serving_feature_lookup_seconds"
OUT_OF_DOMAIN = "dmlops_serving_out_of_domain_total"
LOG_ROWS_WRITTEN = "dmlops_serving_log_rows_written_total"
LOG_ROWS_DROPPED = "dmlops_serving_log_rows_dropped_total"
LOG_DROP_REASONS = ("buffer_full", "write_failed")
OUTCOMES = ("ok", "rejected", "error")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
PROBABILITY_BUCKETS = tuple(round(0.1 * step, 1) for step in range(1, 11))

requests_total = Counter(
    REQUESTS.removesuffix("_total"),
    "Prediction requests by model, protocol (v1, v2) and outcome (ok, rejected = 4xx, error = 5xx).",
    ["model", "protocol", "outcome"],
)
request_seconds = Histogram(
    REQUEST_SECONDS, "Time to check, encode and predict one request.", ["model", "protocol"],
    buckets=LATENCY_BUCKETS,
)
prediction = Histogram(
    PREDICTION, "Predicted probability of the positive class, one observation per row.", ["model"],
    buckets=PROBABILITY_BUCKETS,
)
rows_total = Counter(ROWS.removesuffix("_total"), "Rows predicted.", ["model"])
feature_lookup_seconds = Histogram(
    FEATURE_LOOKUP_SECONDS, "Time to fetch online features from the feature store for one request.", ["model"],
    buckets=LATENCY_BUCKETS,
)
out_of_domain = Counter(
    OUT_OF_DOMAIN.removesuffix("_total"),
    "Request values outside the feature's training domain by feature and kind (range, category, null; "
    "empty: a row of nulls, feature ''), counted under every domain policy.",
    ["model", "feature", "kind"],
)
log_rows_written = Counter(
    LOG_ROWS_WRITTEN.removesuffix("_total"), "Predicted rows written to the prediction log.", ["model"],
)
log_rows_dropped = Counter(
    LOG_ROWS_DROPPED.removesuffix("_total"),
    "Predicted rows the prediction log dropped: buffer_full (the store is slower than the traffic) or write_failed.",
    ["model", "reason"],
)
