"""monitor: a production window against the training reference (drift, realized and CBPE-estimated AUC,
label lag), its HTML page, and its figures pushed to a real Pushgateway."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from dmlops.monitoring import metrics
from dmlops.monitoring.feedback import join_labels
from dmlops.monitoring.monitor import estimated_auc, isotonic_calibration, monitor, roc_auc
from monitoring_data import START, traffic, write_labels, write_log, write_reference


def window(tmp_path, name: str, labelled: bool = True, **shape) -> dict:
    records, labels = traffic(3000, **shape)
    write_log(tmp_path / name / "log", records)
    paths = {"log_uri": str(tmp_path / name / "log")}
    if labelled:
        paths["labelled_path"] = tmp_path / name / "labelled.parquet"
        join_labels(paths["log_uri"], str(write_labels(tmp_path / name / "labels.parquet", labels)),
                    paths["labelled_path"], as_of=START + timedelta(days=5))
    return paths


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return write_reference(tmp_path_factory.mktemp("reference") / "train.parquet")


def test_auc_and_its_confidence_based_estimate():
    labels = np.array([0, 0, 1, 1, 0, 1])
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9]), labels) == pytest.approx(8 / 9)
    assert roc_auc(np.array([0.5] * 6), labels) == 0.5 and roc_auc(np.array([0.3, 0.6]), np.array([1, 1])) is None
    # labels drawn from the probabilities themselves: the estimate meets the realized AUC
    rng = np.random.default_rng(0)
    p = rng.beta(2, 3, 50_000)
    assert estimated_auc(p) == pytest.approx(roc_auc(p, (rng.random(p.size) < p).astype(int)), abs=0.01)
    assert estimated_auc(np.array([0.5, 0.5])) == 0.5 and estimated_auc(np.zeros(3)) is None


def test_isotonic_calibration_recovers_the_true_probability():
    """Scores whose true positive rate is score²: the calibration maps them back, monotonically."""
    rng = np.random.default_rng(1)
    scores = rng.random(50_000)
    calibrate = isotonic_calibration(scores, (rng.random(scores.size) < scores ** 2).astype(float))
    grid = np.linspace(0.05, 0.95, 19)
    assert np.abs(calibrate(grid) - grid ** 2).max() < 0.03
    assert np.all(np.diff(calibrate(np.linspace(0, 1, 1000))) >= 0)
    assert calibrate(np.array([-1.0, 2.0])).tolist() == [calibrate(np.array([0.0]))[0], calibrate(np.array([1.0]))[0]]


def test_a_steady_window_neither_drifts_nor_degrades(tmp_path, reference):
    report = monitor(reference, **window(tmp_path, "steady", seed=11))
    assert not report.drifted and not report.degraded
    assert report.rows == report.labelled_rows == 3000 and report.performance_source == "realized"
    assert report.estimated_auc == pytest.approx(report.realized_auc, abs=0.02)
    assert report.baseline_auc == pytest.approx(report.realized_auc, abs=0.03)
    assert 2 * 3600 <= report.label_lag_seconds["p50"] <= report.label_lag_seconds["p95"] <= 6 * 3600
    figures = report.metrics()
    assert figures["drifted"] == 0.0 and figures["labelled_fraction"] == 1.0 and "drift.psi.x" in figures
    assert set(report.feature_drift.skipped) == {"label"}  # compared: x, carrier and the prediction


def test_shifted_inputs_drift_and_worse_labels_degrade(tmp_path, reference):
    report = monitor(reference, **window(tmp_path, "worse", seed=12, shift=1.5, label_noise=0.6))
    assert report.drifted and report.drifted_features == ["x"] and report.prediction_drift["drifted"]
    assert report.degraded and report.baseline_auc - report.realized_auc > 0.1
    page = report.to_html()
    assert page.startswith("<!DOCTYPE html>") and "DRIFTED" in page and "DEGRADED" in page


def test_without_labels_the_estimate_judges_a_shift_the_model_handles(tmp_path, reference):
    """Covariate shift with a calibrated model: drift, but the estimated AUC stays near the baseline."""
    report = monitor(reference, **window(tmp_path, "unlabelled", labelled=False, seed=13, shift=1.0))
    assert report.drifted and not report.degraded
    assert report.labelled_rows == 0 and report.realized_auc is None and report.performance_source == "estimated"
    assert report.estimated_auc == pytest.approx(report.baseline_auc, abs=0.05)
    assert report.label_lag_seconds == {} and "realized_auc" not in report.metrics()


def test_the_figures_reach_a_pushgateway(tmp_path, reference, pushgateway):
    report = monitor(reference, **window(tmp_path, "pushed", seed=14, shift=1.5, label_noise=0.6))
    metrics.push(pushgateway, metrics.monitor_registry(report), model="delay", job=metrics.MONITOR_JOB)
    counts = join_labels(str(tmp_path / "pushed" / "log"), str(tmp_path / "pushed" / "labels.parquet"),
                         tmp_path / "again.parquet", as_of=START + timedelta(days=5))
    metrics.push(pushgateway, metrics.feedback_registry(counts), model="delay", job=metrics.FEEDBACK_JOB)
    samples = {}
    for family in text_string_to_metric_families(requests.get(f"{pushgateway}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.labels.get("model") == "delay":
                key = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("model", "instance")))
                samples[sample.name, key] = sample.value
    monitor_job = (("job", "dmlops-monitor"),)
    assert samples[metrics.DRIFTED, monitor_job] == 1.0 and samples[metrics.DEGRADED, monitor_job] == 1.0
    assert samples[metrics.AUC, (("job", "dmlops-monitor"), ("kind", "realized"))] == pytest.approx(report.realized_auc)
    assert samples[metrics.FEATURE_DRIFT, (("feature", "x"), ("job", "dmlops-monitor"), ("method", "psi"))] > 0.2
    assert samples[metrics.LABEL_LAG, (("job", "dmlops-monitor"), ("quantile", "0.95"))] <= 6 * 3600
    # the feedback job's push did not replace the monitor's figures
    feedback_job = (("job", "dmlops-feedback"),)
    assert samples[metrics.FEEDBACK_ROWS, (("job", "dmlops-feedback"), ("state", "joined"))] == 3000
    assert samples[metrics.FEEDBACK_JOINED_FRACTION, feedback_job] == 1.0
