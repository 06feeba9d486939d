"""An exported dmlops model loaded for serving: its metadata, feature contract and one framework runner.

The export (``dmlops.training.export``) holds TorchScript ``model.pt`` and ONNX ``model.onnx`` for torch
models, a SavedModel for TensorFlow models, and ``metadata.json``. Every runner takes the encoded
(numeric float32, categorical int64) arrays and returns the positive-class logit per row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dmlops.serving.features import FeatureContract
from dmlops.training.export import METADATA_FILE, fetch

Runner = Callable[[np.ndarray, np.ndarray], np.ndarray]
FORMATS = ("torchscript", "onnx", "savedmodel")
_DEFAULT_FORMAT = {"torch": "torchscript", "tensorflow": "savedmodel", "tf": "savedmodel"}


def _torchscript_runner(path: Path, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    module = torch.jit.load(str(path), map_location="cpu").eval()

    def run(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(numeric), torch.from_numpy(categorical)).numpy()

    return run


def _onnx_runner(path: Path, threads: int) -> Runner:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("serving the ONNX model needs onnxruntime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def run(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return session.run([output], {"numeric": numeric, "categorical": categorical})[0].reshape(-1)

    return run


def _savedmodel_runner(path: Path, threads: int) -> Runner:
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    signature = tf.saved_model.load(str(path)).signatures["serving_default"]

    def run(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        outputs = signature(numeric=tf.constant(numeric), categorical=tf.constant(categorical))
        return next(iter(outputs.values())).numpy().reshape(-1)

    return run


_RUNNERS = {"torchscript": _torchscript_runner, "onnx": _onnx_runner, "savedmodel": _savedmodel_runner}


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


class ExportedModel:
    """A model directory (local path or fsspec URI) ready to predict probabilities from request rows."""

    def __init__(self, uri: str, model_format: str = "", threads: int = 1):
        self.directory = fetch(uri)
        self.metadata: dict[str, Any] = json.loads((self.directory / METADATA_FILE).read_text())
        self.contract = FeatureContract.from_metadata(self.metadata)
        framework = self.metadata.get("framework", "")
        self.format = model_format or _DEFAULT_FORMAT.get(framework, "")
        files = self.metadata.get("model_files", {})
        if self.format not in FORMATS or self.format not in files:
            raise ValueError(
                f"{uri}: no {self.format or framework!r} model file; this export has {sorted(files)} "
                f"(choose one of them as the model format)"
            )
        self.runner = _RUNNERS[self.format](self.directory / files[self.format], threads)

    def logits(self, numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return self.runner(numeric, categorical)

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Positive-class probabilities (float64) for rows already checked against the contract."""
        return sigmoid(self.logits(*self.contract.encode(rows)))

