"""Evaluate an exported model on a labelled Parquet split, using only the exported files.

A dmlops tabular export carries its preprocessing and task; the split has its feature and label columns.
Any other export written through :func:`dmlops.training.runtime.export` declares named input tensors
(``{"dtype", "shape": [-1, ...]}``); its split has one column per input holding each row's value (a
number, or a list for a vector input), and a label column (the ``label`` the export declares, or the one
given). Its task is the one given, the one the export declares (``task``, with ``classes`` for a
classifier whose labels are not the output indices), or multiclass when the model answers one score
per class. Class scores or a binary score are taken as probabilities when they already are
(distributions, values in [0, 1]), else as logits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dmlops.data.errors import DataError
from dmlops.training.data import Preprocessing, Target, load_encoded, read_schema, read_table
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.metrics import task_metrics

PREDICT_BATCH = 65536
TENSOR_DTYPES = {"float32": np.float32, "float64": np.float64, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


def tensor_inputs(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The input tensors an export declares, ``{name: {"dtype", "shape"}}`` in the model's argument order."""
    return {name: spec for name, spec in metadata.get("inputs", {}).items()
            if isinstance(spec, dict) and "shape" in spec and spec.get("dtype") in TENSOR_DTYPES}


def load_program(directory: Path, metadata: dict[str, Any], inputs: list[str]) -> Callable[[list[np.ndarray]], np.ndarray]:
    """The exported model's forward pass: arrays in ``inputs`` order in, its output out. torch: the
    ``torch.export`` program; TensorFlow: the SavedModel's serving signature, inputs matched by name
    (else by order)."""
    files = metadata["model_files"]
    if metadata["framework"] == "torch":
        import torch

        module = torch.export.load(str(directory / files["torch_export"])).module()

        def run(arrays: list[np.ndarray]) -> np.ndarray:
            with torch.inference_mode():
                return module(*(torch.from_numpy(array) for array in arrays)).numpy()

        return run
    import tensorflow as tf

    serve = tf.saved_model.load(str(directory / files["saved_model"])).signatures["serving_default"]
    keys = list(serve.structured_input_signature[1])
    if sorted(keys) == sorted(inputs):
        keys = list(inputs)
    elif len(keys) != len(inputs):
        raise ValueError(f"{directory}: the SavedModel takes {keys}, the metadata declares {inputs}")

    def run(arrays: list[np.ndarray]) -> np.ndarray:
        outputs = serve(**{key: tf.constant(array) for key, array in zip(keys, arrays)})
        return next(iter(outputs.values())).numpy()

    return run


class ExportedModel:
    """A tabular model directory written by the training worker: its metadata and its predictions."""

    def __init__(self, uri: str):
        self.uri = uri
        self.directory: Path = fetch(uri)
        self.metadata: dict[str, Any] = json.loads((self.directory / METADATA_FILE).read_text())
        self.preprocessing = Preprocessing.from_dict(self.metadata["preprocessing"])
        self.target = self.preprocessing.target
        run = load_program(self.directory, self.metadata, ["numeric", "categorical"])
        self._logits = lambda numeric, categorical: run([numeric, categorical])

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


def _probabilities(task: str, outputs: np.ndarray) -> np.ndarray:
    """A user model's binary or class scores as probabilities: as they are when they already are, else
    through the sigmoid or softmax (:func:`activate`)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    within = bool(np.all((outputs >= 0) & (outputs <= 1)))
    if task == "binary" and within:
        return outputs.reshape(-1)
    if task == "multiclass" and within and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4):
        return outputs
    return activate(task, outputs)


def evaluate_tensors(model_uri: str, data_uri: str, threshold: float = 0.5, label: str = "",
                     task: str = "") -> dict[str, Any]:
    """The metrics of a user's export (see the module docstring) on a split of its inputs and labels."""
    directory = fetch(model_uri)
    metadata = json.loads((directory / METADATA_FILE).read_text())
    inputs = tensor_inputs(metadata)
    label = label or metadata.get("label", "")
    if not inputs:
        raise ValueError(f"{model_uri}: the metadata declares no input tensors ({{name: {{dtype, shape}}}})")
    if not label:
        raise ValueError(f"{model_uri}: the export declares no label column; give the label to evaluate on")
    missing = [name for name in [*inputs, label] if name not in read_schema(data_uri).names]
    if missing:
        raise DataError(f"{data_uri}: columns {missing} are missing; the model takes the inputs {list(inputs)} "
                        f"and is evaluated on the label {label!r}")
    table = read_table(data_uri, [*inputs, label])
    arrays = []
    for name, spec in inputs.items():
        array = np.asarray(table[name].to_pylist(), dtype=TENSOR_DTYPES[spec["dtype"]])
        shape = spec["shape"]
        if array.ndim != len(shape) or any(size not in (-1, actual) for size, actual in zip(shape, array.shape)):
            raise DataError(f"{data_uri}: column {name!r} holds rows of shape {list(array.shape)}; "
                            f"the model's input {name!r} is {shape}")
        arrays.append(array)
    run = load_program(directory, metadata, list(inputs))
    outputs = np.concatenate([run([array[start : start + PREDICT_BATCH] for array in arrays])
                              for start in range(0, table.num_rows, PREDICT_BATCH)])
    task = task or metadata.get("task") or ("multiclass" if outputs.ndim == 2 and outputs.shape[1] > 1 else "")
    if not task:
        raise ValueError(f"{model_uri}: the model answers one number per row; give the task (binary or regression)")
    target = Target(task, classes=list(metadata.get("classes") or range(outputs.shape[1] if task == "multiclass" else 0)))
    values = table[label].to_pylist()
    if task == "multiclass":
        index = {name: position for position, name in enumerate(target.classes)}
        unknown = [value for value in values if value not in index]
        if unknown:
            raise DataError(f"{data_uri}: label {label!r} has values {sorted(set(unknown))[:5]} outside the model's "
                            f"classes {target.classes}")
        labels = np.array([index[value] for value in values], dtype=np.int64)
        predictions = _probabilities(task, outputs)
    else:
        labels = np.asarray(values, dtype=np.float64)
        predictions = _probabilities(task, outputs) if task == "binary" else outputs.astype(np.float64).reshape(-1)
    metrics = task_metrics(task, labels, predictions, target.classes, threshold)
    metrics["framework"] = metadata["framework"]
    return metrics


def evaluate_model(model_uri: str, data_uri: str, threshold: float = 0.5, label: str = "",
                   task: str = "") -> dict[str, Any]:
    """The metrics of an exported model's task on a labelled split (:func:`~dmlops.training.metrics.task_metrics`:
    binary AUC, accuracy, log loss, ROC and confusion matrix at ``threshold``; multiclass accuracy,
    macro-F1, log loss, one-vs-rest AUC and confusion matrix; regression RMSE, MAE and R²). A dmlops
    tabular export knows its label and task; a user's export is evaluated by :func:`evaluate_tensors`
    with ``label`` and ``task`` when it does not declare them."""
    directory = fetch(model_uri)
    if "preprocessing" not in json.loads((directory / METADATA_FILE).read_text()):
        return evaluate_tensors(model_uri, data_uri, threshold, label, task)
    model = ExportedModel(model_uri)
    data = load_encoded(data_uri, model.preprocessing)
    target = model.target
    labels = data.labels * target.std + target.mean if target.task == "regression" else data.labels
    metrics = task_metrics(target.task, labels, model.predict(data.numeric, data.categorical), target.classes,
                           threshold)
    metrics["framework"] = model.metadata["framework"]
    return metrics
