"""Binary classification metrics and the Katib output format."""

import re

import numpy as np
import pytest

from dmlops.training.metrics import binary_metrics, katib_lines, write_metrics_file

# Katib's default StdOut/File metrics filter (pkg/metricscollector/v1beta1/common/const.go)
KATIB_FILTER = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")


def pairwise_auc(labels, scores):
    """AUC by its definition: P(score of a positive > score of a negative), ties count one half."""
    positives, negatives = scores[labels == 1], scores[labels == 0]
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return (greater + 0.5 * ties) / (len(positives) * len(negatives))


def test_auc_matches_its_pairwise_definition_with_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = np.round(rng.random(400) * 0.5 + labels * 0.3, 2)  # rounded: many ties
    assert binary_metrics(labels, scores)["auc"] == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_accuracy_log_loss_confusion_matrix_and_roc_ends():
    labels = np.array([0, 0, 1, 1, 1])
    probabilities = np.array([0.1, 0.6, 0.4, 0.8, 0.9])
    metrics = binary_metrics(labels, probabilities)
    assert metrics["confusion_matrix"] == [[1, 1], [1, 2]]
    assert metrics["accuracy"] == pytest.approx(3 / 5)
    expected_loss = -np.mean(np.log([0.9, 0.4, 0.4, 0.8, 0.9]))
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    roc = metrics["roc"]
    assert (roc["fpr"][0], roc["tpr"][0]) == (0.0, 0.0) and (roc["fpr"][-1], roc["tpr"][-1]) == (1.0, 1.0)
    assert binary_metrics(labels, probabilities, threshold=0.95)["confusion_matrix"] == [[2, 0], [3, 0]]


def test_roc_is_thinned_for_large_inputs():
    rng = np.random.default_rng(1)
    metrics = binary_metrics(rng.integers(0, 2, 5000), rng.random(5000))
    assert len(metrics["roc"]["fpr"]) <= 201
    assert np.all(np.diff(metrics["roc"]["fpr"]) >= 0)


def test_katib_collectors_parse_every_scalar(tmp_path):
    metrics = binary_metrics(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9])) | {"train_loss": 1.5e-05}
    parsed = {}
    for line in katib_lines(metrics):
        for name, value, *_ in KATIB_FILTER.findall(line):
            parsed[name] = float(value)
    assert parsed["auc"] == 1.0 and parsed["train_loss"] == pytest.approx(1.5e-05)
    assert "roc" not in parsed and "confusion_matrix" not in parsed
    write_metrics_file(tmp_path / "metrics.txt", metrics)
    assert (tmp_path / "metrics.txt").read_text().splitlines() == katib_lines(metrics)
