"""An exported model loaded for serving: a dmlops tabular model (its metadata, feature contract and
predictor) or any model a user's code exported through the training runtime (named input tensors).

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
from dmlops.serving.features import FeatureContract, RequestError
from dmlops.training.evaluate import ExportedModel as TrainedModel
from dmlops.training.evaluate import TENSOR_DTYPES as _TENSOR_DTYPES
from dmlops.training.evaluate import activate, load_program, tensor_inputs
from dmlops.training.export import METADATA_FILE, fetch

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]
FORMATS = ("", "native", "onnx")


def _limit_threads(framework: str, threads: int) -> None:
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
    elif framework == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started in this process: its thread pools are fixed
            pass


def _onnx_predictor(path: str, threads: int, task: str) -> Predictor:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeError("serving the ONNX model needs onnxruntime: pip install onnxruntime") from None
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name
    # the ONNX exporter drops an input the graph does not use (no categorical columns)
    names = [item.name for item in session.get_inputs()]

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        feeds = {name: array for name, array in (("numeric", numeric), ("categorical", categorical)) if name in names}
        return activate(task, session.run([output], feeds)[0])

    return predict


class ServedModel:
    """A model directory (local path or URI, :mod:`dmlops.platform.storage`) ready to predict from request
    rows: its task's predictions (:meth:`dmlops.training.evaluate.ExportedModel.predict`).

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
        self.target = trained.target
        if model_format == "onnx":
            files = self.metadata["model_files"]
            if "onnx" not in files:
                raise ValueError(f"{uri}: this export has no ONNX file, only {sorted(files)}; serve it natively")
            self.predict_encoded = _onnx_predictor(str(trained.directory / files["onnx"]), threads, self.target.task)
        else:
            self.predict_encoded = trained.predict

    def predict_rows(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The task's predictions (float64) for rows already checked against the contract: positive-class
        probabilities [n], class probabilities [n, classes] or values [n]."""
        return self.predict_encoded(*self.contract.encode(rows))


_V2_DATATYPES = {"float32": "FP32", "float64": "FP64", "int32": "INT32", "int64": "INT64", "bool": "BOOL"}


class TensorModel:
    """A user's export (:func:`dmlops.training.runtime.export`, no dmlops preprocessing): the named input
    tensors its metadata declares (``{"dtype", "shape": [-1, ...]}``) in, the model's output rows out.

    torch exports load the ``torch.export`` program, TensorFlow ones the SavedModel's serving signature.
    """

    def __init__(self, uri: str, threads: int = 1):
        directory = fetch(uri)
        self.metadata: dict[str, Any] = json.loads((directory / METADATA_FILE).read_text())
        framework = self.metadata["framework"]
        _limit_threads(framework, threads)
        self.inputs = tensor_inputs(self.metadata)
        if not self.inputs:
            raise ValueError(f"{uri}: the metadata declares no input tensors ({{name: {{dtype, shape}}}}) to serve")
        self._run = load_program(directory, self.metadata, list(self.inputs))

    def describe(self) -> list[dict[str, Any]]:
        """The V2 metadata of the inputs."""
        return [{"name": name, "datatype": _V2_DATATYPES[spec["dtype"]], "shape": spec["shape"]}
                for name, spec in self.inputs.items()]

    def arrays(self, columns: dict[str, Any]) -> list[np.ndarray]:
        """The request's inputs (name to rows) as arrays in the declared order, dtype and shape."""
        unknown = sorted(set(columns) - set(self.inputs))
        missing = [name for name in self.inputs if name not in columns]
        if unknown or missing:
            raise RequestError(f"inputs {unknown or missing} are {'unknown' if unknown else 'missing'}; "
                               f"the model takes {list(self.inputs)}")
        arrays = []
        for name, spec in self.inputs.items():
            try:
                array = np.asarray(columns[name], dtype=_TENSOR_DTYPES[spec["dtype"]])
            except (TypeError, ValueError):
                raise RequestError(f"input {name!r}: the values are not {spec['dtype']}") from None
            expected = spec["shape"]
            if array.ndim != len(expected) or any(size not in (-1, actual) for size, actual in zip(expected, array.shape)):
                raise RequestError(f"input {name!r}: shape {list(array.shape)} does not fit {expected}")
            arrays.append(array)
        if len({len(array) for array in arrays}) > 1:
            raise RequestError("the inputs have different row counts; every input needs one entry per row")
        return arrays

    def arrays_from_instances(self, instances: Any) -> list[np.ndarray]:
        """V1 instances: one entry per row, ``{input: value}`` or, for a one-input model, the value itself."""
        if not isinstance(instances, list) or not instances:
            raise RequestError("instances must be a non-empty list with one entry per row")
        if len(self.inputs) == 1 and not isinstance(instances[0], dict):
            return self.arrays({next(iter(self.inputs)): instances})
        if not all(isinstance(row, dict) for row in instances):
            raise RequestError(f"every instance must be an object {{input: value}} with the inputs {list(self.inputs)}")
        names = {name for row in instances for name in row}
        return self.arrays({name: [row.get(name) for row in instances] for name in names})

    def predict(self, arrays: list[np.ndarray]) -> np.ndarray:
        """The model's output, one entry per row."""
        return self._run(arrays)


def open_model(uri: str, model_format: str = "", threads: int = 1) -> ServedModel | TensorModel:
    """A dmlops tabular export (its metadata has the fitted preprocessing) as a :class:`ServedModel`, any
    other export written by the training runtime as a :class:`TensorModel`."""
    filesystem, directory = storage.filesystem(uri)
    with filesystem.open(f"{directory.rstrip('/')}/{METADATA_FILE}") as handle:
        metadata = json.load(handle)
    if "preprocessing" in metadata:
        return ServedModel(uri, model_format, threads)
    if model_format == "onnx":
        raise ValueError(f"{uri}: this export has no ONNX file, only {sorted(metadata['model_files'])}; serve it natively")
    return TensorModel(uri, threads)
