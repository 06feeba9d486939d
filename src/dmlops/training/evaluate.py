"""Evaluate an exported model on a labelled Parquet split, using only the exported files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dmlops.training.data import Preprocessing, load_encoded
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.metrics import task_metrics

PREDICT_BATCH = 65536


class ExportedModel:
    """A tabular model directory written by the training worker: its metadata and its predictions."""

    def __init__(self, uri: str):
        self.uri = uri
        self.directory: Path = fetch(uri)
        self.metadata: dict[str, Any] = json.loads((self.directory / METADATA_FILE).read_text())
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.target = self.preprocessing.target
        files = self.metadata["model_files"]
        if self.metadata["framework"] == "torch":
            import torch

            module = torch.export.load(str(self.directory / files["torch_export"])).module()

            def logits(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
                with torch.inference_mode():
                    return module(torch.from_numpy(numeric), torch.from_numpy(categorical)).numpy()
        else:
            import tensorflow as tf

            serve = tf.saved_model.load(str(self.directory / files["saved_model"])).signatures["serving_default"]

            def logits(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
                outputs = serve(numeric=tf.constant(numeric), categorical=tf.constant(categorical))
                return next(iter(outputs.values())).numpy()

        self._logits = logits

    def predict(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """The task's predictions for encoded rows (float64): positive-class probabilities [n] (binary),
        class probabilities [n, classes] (multiclass) or values in the label's units [n] (regression)."""
        chunks = [
            self._logits(numeric[start : start + PREDICT_BATCH], categorical[start : start + PREDICT_BATCH])
            for start in range(0, len(numeric), PREDICT_BATCH)
        ]
        return activate(self.target.task, np.concatenate(chunks))

    def predict_proba(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Probabilities for encoded rows: of the positive class [n], or of each class [n, classes]."""
        if self.target.task == "regression":
            raise ValueError(f"{self.uri}: a regression model predicts values, not probabilities")
        return self.predict(numeric, categorical)


def activate(task: str, outputs: np.ndarray) -> np.ndarray:
    """A model's raw outputs as the task's predictions: sigmoid of binary logits [n], softmax of class
    logits [n, classes], regression values as they are [n]."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if task == "binary":
        return 1.0 / (1.0 + np.exp(-outputs.reshape(-1)))
    if task == "multiclass":
        exponentials = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return exponentials / exponentials.sum(axis=1, keepdims=True)
    return outputs.reshape(-1)


def evaluate_model(model_uri: str, data_uri: str, threshold: float = 0.5) -> dict[str, Any]:
    """The metrics of an exported model's task on a labelled split (:func:`~dmlops.training.metrics.task_metrics`:
    binary AUC, accuracy, log loss, ROC and confusion matrix at ``threshold``; multiclass accuracy,
    macro-F1, log loss, one-vs-rest AUC and confusion matrix; regression RMSE, MAE and R²)."""
    model = ExportedModel(model_uri)
    data = load_encoded(data_uri, model.preprocessing)
    target = model.target
    labels = data.labels * target.std + target.mean if target.task == "regression" else data.labels
    metrics = task_metrics(target.task, labels, model.predict(data.numeric, data.categorical), target.classes,
                           threshold)
    metrics["framework"] = model.metadata["framework"]
    return metrics
