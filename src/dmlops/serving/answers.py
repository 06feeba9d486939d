"""What the dmlops model server's answer means for each task, for the rollout's gates and for anyone
reading answers back.

V1 answers one entry per row in ``predictions``: the positive class's probability (``binary``),
``{"label": class, "probabilities": {class: probability, ...}}`` (``multiclass``, classes in the model's
order) or the predicted value (``regression``). A user's export answers its output row: a list of class
scores (probabilities, or logits) for a classifier, a number otherwise. The metrics each task's canary
is judged on are :data:`dmlops.serving.quality.DEFAULT_QUALITY_GATES`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dmlops.training.data import Target


def target_of(metadata: dict[str, Any]) -> Target:
    """The task and classes of an export: a tabular model's preprocessing target, else what the user's
    export declares (``task``, ``classes``; an undeclared task reads as regression: any number)."""
    if "preprocessing" in metadata:
        return Target.from_dict(metadata["preprocessing"].get("target"))
    return Target(task=metadata.get("task", "regression"), classes=list(metadata.get("classes", [])))


def v1_predictions(target: Target, predictions: np.ndarray) -> list[Any]:
    """The V1 ``predictions`` of the task's model outputs (see the module docstring)."""
    if target.task != "multiclass":
        return np.asarray(predictions, dtype=np.float64).reshape(-1).tolist()
    labels = target.decode(predictions)
    names = [str(name) for name in target.classes]
    return [{"label": label, "probabilities": dict(zip(names, row))}
            for label, row in zip(labels.tolist(), np.asarray(predictions, dtype=np.float64).tolist())]


def answer_scores(target: Target, predictions: np.ndarray) -> np.ndarray:
    """One number per row of a model's predictions, whose distribution is watched: the probability of the
    positive class (binary) or of the predicted class (multiclass), the value (regression)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    return predictions.max(axis=1) if target.task == "multiclass" else predictions.reshape(-1)


def answer_value(target: Target, entry: Any) -> float | list[float]:
    """One row's answer as a number (binary probability, regression value) or the class probabilities
    in the model's class order (multiclass); ValueError when the entry is not a valid answer."""
    if isinstance(entry, list) and len(entry) == 1:  # a user's one-output model: its row of one number
        entry = entry[0]
    if isinstance(entry, list):  # a user's model: its output row of class scores
        scores = np.asarray(entry, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"class scores that are not finite numbers: {entry!r:.100}")
        if not (np.all((scores >= 0) & (scores <= 1)) and abs(scores.sum() - 1.0) <= 1e-3):
            scores = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()  # logits
        return scores.tolist()
    if target.task == "multiclass":
        if not isinstance(entry, dict) or not isinstance(entry.get("probabilities"), dict):
            raise ValueError(f"expected {{'label': ..., 'probabilities': {{class: p}}}}, got {entry!r:.100}")
        probabilities = [float(entry["probabilities"][str(name)]) for name in target.classes]
        if not all(0.0 <= value <= 1.0 for value in probabilities) or abs(sum(probabilities) - 1.0) > 1e-3:
            raise ValueError(f"class probabilities are not a distribution: {probabilities}")
        return probabilities
    value = float(entry)
    if target.task == "binary" and not 0.0 <= value <= 1.0:
        raise ValueError(f"a probability outside [0, 1]: {value}")
    if not np.isfinite(value):
        raise ValueError(f"a prediction that is not a finite number: {value}")
    return value
