"""An exported dmlops model loaded for serving: its metadata, feature contract and predictor.

The export and its loader are the training worker's (:class:`dmlops.training.evaluate.ExportedModel`:
digests checked, the ``torch.export`` program for torch models, SavedModel for TensorFlow models). Serving adds the
request feature contract, a bound on the runtime's threads, and the ONNX file of torch exports as an
alternative format (with onnxruntime).
"""

from __future__ import annotations

import json
from typing import Any, Callable

import numpy as np

from dmlops.platform import storage
from dmlops.serving.features import FeatureContract
from dmlops.training.evaluate import ExportedModel as TrainedModel
from dmlops.training.export import METADATA_FILE

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
FORMATS = ("", "native", "onnx")


def _limit_threads(framework: str, threads: int) -> None:
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    elif framework == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)


def _onnx_predictor(path: str, threads: int) -> Predictor:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("serving the ONNX model needs onnxruntime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        logits = session.run([output], {"numeric": numeric, "categorical": categorical})[0].reshape(-1)
        return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))

    return predict


class ServedModel:
    """A model directory (local path or URI, :mod:`dmlops.platform.storage`) ready to predict probabilities
    from request rows.

    ``model_format``: ``""``/``"native"`` (``torch.export`` program or SavedModel) or ``"onnx"`` (torch exports).
    """

    def __init__(self, uri: str, model_format: str = "", threads: int = 1):
        if model_format not in FORMATS:
            raise ValueError(f"model format {model_format!r}: choose native or onnx")
        try:
            filesystem, directory = storage.filesystem(uri)
            with filesystem.open(f"{directory.rstrip('/')}/{METADATA_FILE}") as handle:
                framework = json.load(handle).get("framework", "")
        except FileNotFoundError:
            framework = ""  # the loader below says what is missing
        _limit_threads(framework, threads)  # before the runtime initializes
        trained = TrainedModel(uri)
        self.metadata: dict[str, Any] = trained.metadata
        self.contract = FeatureContract.from_metadata(self.metadata)
        if model_format == "onnx":
            files = self.metadata["model_files"]
            if "onnx" not in files:
                raise ValueError(f"{uri}: this export has no ONNX file, only {sorted(files)}; serve it natively")
            self.predict_encoded = _onnx_predictor(str(trained.directory / files["onnx"]), threads)
        else:
            self.predict_encoded = trained.predict_proba

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """Positive-class probabilities (float64) for rows already checked against the contract."""
        return self.predict_encoded(*self.contract.encode(rows))
