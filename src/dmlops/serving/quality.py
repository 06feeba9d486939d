"""Quality gates of a canary: metrics chosen by name, each with the margin by which the canary may be
worse than the stable model on the same labelled rows.

A gate spec is text, ``"auc:0.01,log_loss:2%"``: a metric name from :data:`QUALITY_METRICS` and its
margin, absolute (in the metric's units) or relative to the stable model's value (``%``). A task kind
without a spec gets :data:`DEFAULT_QUALITY_GATES`. Another metric is added by name to the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from dmlops.training.metrics import binary_metrics, multiclass_metrics


@dataclass(frozen=True)
class QualityMetric:
    """A metric of predictions against labels and which way is better."""

    name: str
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]


def _classification(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Binary metrics of probabilities [n], or multiclass metrics of class probabilities [n, classes]
    against class indices (AUC one-vs-rest)."""
    if predictions.ndim == 1:
        return binary_metrics(labels, predictions)
    metrics = multiclass_metrics(labels.astype(np.int64), predictions, list(range(predictions.shape[1])))
    return {**metrics, "auc": metrics["auc_ovr"]}


def _rmse(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.sqrt(np.mean((predictions - labels) ** 2)))


def _mae(labels: np.ndarray, predictions: np.ndarray) -> float:
    return float(np.mean(np.abs(predictions - labels)))


QUALITY_METRICS: dict[str, QualityMetric] = {metric.name: metric for metric in [
    QualityMetric("auc", True, lambda labels, predictions: _classification(labels, predictions)["auc"]),
    QualityMetric("accuracy", True, lambda labels, predictions: _classification(labels, predictions)["accuracy"]),
    QualityMetric("log_loss", False, lambda labels, predictions: _classification(labels, predictions)["log_loss"]),
    QualityMetric("rmse", False, _rmse),
    QualityMetric("mae", False, _mae),
]}

# the metrics each task's canary is compared on by default, the main one first
DEFAULT_QUALITY_GATES = {"binary": "auc:0.01,log_loss:0.02", "multiclass": "log_loss:0.02,accuracy:0.01",
                         "regression": "rmse:2%"}


@dataclass(frozen=True)
class QualityGate:
    """One metric's gate: the canary may be worse than the stable by at most ``margin`` (a fraction of
    the stable's value when ``relative``)."""

    metric: QualityMetric
    margin: float
    relative: bool = False

    def limit(self, stable_value: float) -> float:
        """The canary's worst acceptable value given the stable's."""
        allowance = abs(stable_value) * self.margin if self.relative else self.margin
        return stable_value - allowance if self.metric.higher_is_better else stable_value + allowance

    def passes(self, canary_value: float, stable_value: float) -> bool:
        """Whether the canary's value is within the margin (False when it is NaN)."""
        limit = self.limit(stable_value)
        return canary_value >= limit if self.metric.higher_is_better else canary_value <= limit


def parse_quality_gates(spec: str, task: str = "binary") -> list[QualityGate]:
    """The gates of ``spec`` (``"auc:0.01,log_loss:2%"``); ``""`` takes the task's default."""
    if not spec.strip():
        if task not in DEFAULT_QUALITY_GATES:
            raise ValueError(f"no default quality gates for task {task!r}: give them, e.g. 'rmse:2%'")
        spec = DEFAULT_QUALITY_GATES[task]
    gates = []
    for item in spec.split(","):
        name, separator, margin = (part.strip() for part in item.partition(":"))
        if name not in QUALITY_METRICS:
            raise ValueError(f"quality gate {item.strip()!r}: unknown metric {name!r}; choose from {sorted(QUALITY_METRICS)}")
        relative = margin.endswith("%")
        try:
            value = float(margin.rstrip("%")) / (100 if relative else 1)
        except ValueError:
            raise ValueError(f"quality gate {item.strip()!r}: give a margin, e.g. '{name}:0.01' or '{name}:2%'") from None
        if not separator or value < 0:
            raise ValueError(f"quality gate {item.strip()!r}: give a margin of at least 0, e.g. '{name}:0.01'")
        gates.append(QualityGate(QUALITY_METRICS[name], value, relative))
    return gates
