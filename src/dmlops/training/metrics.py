"""Metrics of each task (binary, multiclass, regression) and their two outputs: Katib ``name=value``
lines and a metrics file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ROC_POINTS = 201  # at most this many ROC points are kept (KFP draws them; thousands add nothing)


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False positive rates, true positive rates and thresholds, one point per distinct score
    (highest threshold first), starting at (0, 0) with threshold +inf."""
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    true_positives = np.cumsum(labels)[last_of_each_score]
    false_positives = (last_of_each_score + 1) - true_positives
    positives, negatives = labels.sum(), len(labels) - labels.sum()
    tpr = np.r_[0.0, true_positives / positives] if positives else np.zeros(len(true_positives) + 1)
    fpr = np.r_[0.0, false_positives / negatives] if negatives else np.zeros(len(false_positives) + 1)
    return fpr, tpr, np.r_[np.inf, scores[last_of_each_score]]


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """AUC, accuracy, log loss, ROC points and the confusion matrix [[tn, fp], [fn, tp]]."""
    labels = np.asarray(labels, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if labels.shape != probabilities.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels {labels.shape} and probabilities {probabilities.shape} must be equal, non-empty 1-D")
    fpr, tpr, thresholds = roc_curve(labels, probabilities)
    auc = float(np.trapezoid(tpr, fpr)) if 0 < labels.sum() < len(labels) else float("nan")
    clipped = np.clip(probabilities, 1e-7, 1 - 1e-7)
    log_loss = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    predicted = probabilities >= threshold
    actual = labels == 1
    confusion = [
        [int(np.sum(~actual & ~predicted)), int(np.sum(~actual & predicted))],
        [int(np.sum(actual & ~predicted)), int(np.sum(actual & predicted))],
    ]
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_POINTS)).round().astype(int))
    finite_thresholds = np.where(np.isinf(thresholds), 1.0, thresholds)
    return {
        "auc": auc,
        "accuracy": float(np.mean(predicted == actual)),
        "log_loss": log_loss,
        "positive_rate": float(labels.mean()),
        "rows": int(len(labels)),
        "threshold": threshold,
        "confusion_matrix": confusion,
        "roc": {
            "fpr": fpr[keep].tolist(),
            "tpr": tpr[keep].tolist(),
            "thresholds": finite_thresholds[keep].tolist(),
        },
    }


def multiclass_metrics(labels: np.ndarray, probabilities: np.ndarray, classes: list[Any]) -> dict[str, Any]:
    """Accuracy, macro-F1, log loss, macro one-vs-rest AUC (over the classes present in both kinds) and
    the confusion matrix (rows: actual class, columns: predicted class, in ``classes`` order) of class
    indices ``labels`` against probabilities [rows, classes]."""
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(labels) != len(probabilities) or len(labels) == 0:
        raise ValueError(f"labels {labels.shape} and probabilities {probabilities.shape} must be [n] and [n, classes]")
    count = len(classes)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((count, count), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_positives = np.diag(confusion).astype(np.float64)
    support, predicted_count = confusion.sum(axis=1), confusion.sum(axis=0)
    denominator = support + predicted_count
    f1 = np.divide(2 * true_positives, denominator, out=np.zeros(count), where=denominator > 0)
    aucs = [binary_metrics((labels == index).astype(np.float64), probabilities[:, index])["auc"]
            for index in range(count) if 0 < support[index] < len(labels)]
    clipped = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": float(np.mean(f1[denominator > 0])),
        "log_loss": float(-np.mean(np.log(clipped))),
        "auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
        "rows": int(len(labels)),
        "classes": [str(name) for name in classes],
        "confusion_matrix": confusion.tolist(),
    }


def regression_metrics(labels: np.ndarray, predictions: np.ndarray) -> dict[str, Any]:
    """RMSE, MAE and R² of ``predictions`` against ``labels`` (both in the label's units)."""
    labels = np.asarray(labels, dtype=np.float64)
    predictions = np.asarray(predictions, dtype=np.float64)
    if labels.shape != predictions.shape or labels.ndim != 1 or len(labels) == 0:
        raise ValueError(f"labels {labels.shape} and predictions {predictions.shape} must be equal, non-empty 1-D")
    errors = predictions - labels
    variance = float(np.sum((labels - labels.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1.0 - float(np.sum(errors**2)) / variance if variance > 0 else float("nan"),
        "label_mean": float(labels.mean()),
        "rows": int(len(labels)),
    }


def task_metrics(task: str, labels: np.ndarray, predictions: np.ndarray, classes: list[Any] | None = None,
                 threshold: float = 0.5) -> dict[str, Any]:
    """The metrics of ``task``: :func:`binary_metrics` of probabilities, :func:`multiclass_metrics` of
    class indices and probabilities, :func:`regression_metrics` of values; with ``task`` added."""
    if task == "binary":
        metrics = binary_metrics(labels, predictions, threshold)
    elif task == "multiclass":
        metrics = multiclass_metrics(labels, predictions, list(classes or range(np.shape(predictions)[1])))
    elif task == "regression":
        metrics = regression_metrics(labels, predictions)
    else:
        raise ValueError(f"unknown task {task!r}; choose binary, multiclass or regression")
    return {"task": task, **metrics}


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The plain numbers of a metrics dict (what Katib and KFP Metrics take)."""
    return {
        name: float(value)
        for name, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def katib_lines(metrics: dict[str, Any], prefix: str = "") -> list[str]:
    """``name=value`` lines in the format Katib's StdOut and File metrics collectors parse."""
    return [f"{prefix}{name}={value:.6g}" for name, value in scalar_metrics(metrics).items()]


def log_classification(artifact: Any, metrics: dict[str, Any]) -> None:
    """Log the ROC curve and the confusion matrix (class names ``classes``, or 0 and 1) of ``metrics``,
    those it has, on a KFP ``ClassificationMetrics`` artifact."""
    if "roc" in metrics:
        artifact.log_roc_curve(metrics["roc"]["fpr"], metrics["roc"]["tpr"], metrics["roc"]["thresholds"])
    if "confusion_matrix" in metrics:
        artifact.log_confusion_matrix(metrics.get("classes", ["0", "1"]), metrics["confusion_matrix"])


def write_metrics_file(path: str | Path, metrics: dict[str, Any]) -> None:
    """Write metrics as Katib ``name=value`` lines, and the full dict beside it as ``<path>.json``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(katib_lines(metrics)) + "\n")
    Path(f"{path}.json").write_text(json.dumps(metrics, indent=2))


def markdown_report(title: str, metrics: dict[str, Any], details: dict[str, Any] | None = None) -> str:
    """A Markdown summary for the KFP UI: the scalar metrics, the confusion matrix and run details."""
    lines = [f"# {title}", "", "| metric | value |", "| --- | --- |"]
    lines += [f"| {name} | {value:.6g} |" for name, value in scalar_metrics(metrics).items()]
    if "confusion_matrix" in metrics and "classes" in metrics:
        classes = metrics["classes"]
        lines += ["", "Confusion matrix (rows: actual, columns: predicted):", "",
                  "| actual \\ predicted | " + " | ".join(classes) + " |", "| --- |" + " --- |" * len(classes)]
        lines += [f"| {name} | " + " | ".join(str(count) for count in row) + " |"
                  for name, row in zip(classes, metrics["confusion_matrix"])]
    elif "confusion_matrix" in metrics:
        (tn, fp), (fn, tp) = metrics["confusion_matrix"]
        lines += ["", f"Confusion matrix at threshold {metrics.get('threshold', 0.5)}:", "",
                  "| actual \\ predicted | 0 | 1 |", "| --- | --- | --- |",
                  f"| 0 | {tn} | {fp} |", f"| 1 | {fn} | {tp} |"]
    if details:
        lines += ["", "| setting | value |", "| --- | --- |"]
        lines += [f"| {name} | {value} |" for name, value in details.items()]
    return "\n".join(lines) + "\n"
