"""Evaluate an exported model on a labelled Parquet split, using only the exported files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dmlops.training.data import Preprocessing, load_encoded
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.metrics import binary_metrics

PREDICT_BATCH = 65536


class ExportedModel:
    """A model directory written by the training worker: its metadata and a probability predictor."""

    def __init__(self, uri: str):
        self.uri = uri
        self.directory: Path = fetch(uri)
        self.metadata: dict[str, Any] = json.loads((self.directory / METADATA_FILE).read_text())
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
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
                return next(iter(outputs.values())).numpy().reshape(-1)

        self._logits = logits

    def predict_proba(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        """Positive-class probabilities for encoded rows."""
        chunks = [
            self._logits(numeric[start : start + PREDICT_BATCH], categorical[start : start + PREDICT_BATCH])
            for start in range(0, len(numeric), PREDICT_BATCH)
        ]
        return 1.0 / (1.0 + np.exp(-np.concatenate(chunks).astype(np.float64)))


def evaluate_model(model_uri: str, data_uri: str, threshold: float = 0.5) -> dict[str, Any]:
    """Binary metrics (AUC, accuracy, log loss, ROC, confusion matrix) of an exported model on a split."""
    model = ExportedModel(model_uri)
    data = load_encoded(data_uri, model.preprocessing)
    metrics = binary_metrics(data.labels, model.predict_proba(data.numeric, data.categorical), threshold)
    metrics["framework"] = model.metadata["framework"]
    return metrics
