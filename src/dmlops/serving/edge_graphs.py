"""The graphs of the edge variants: the served model's preprocessing folded in front of the network, so a
device feeds raw feature values and needs nothing else; and the ``torch.export`` program translated to
TensorFlow, op by op, so a torch model gets TFLite variants.

Raw inputs of every edge variant (ONNX and TFLite alike):

- ``numeric``: float32 [n, k], the metadata's numeric columns in order (``inputs.numeric.columns``); NaN
  for a missing value, booleans as 0/1. The graph fills NaN with the training mean and standardises.
- ``categorical``: string [n, c], the categorical columns in order; each value's text as the served model
  reads it (``"5"`` for the integer 5, ``"true"`` for a boolean). The graph looks it up in the training
  vocabulary; a value outside it (``""`` for a missing one) is the unknown category, index 0.

The ONNX front end uses ``IsNaN``/``Where``/``Sub``/``Div`` and ``ai.onnx.ml.LabelEncoder``; the TFLite one
``tf.where`` and ``tf.lookup.StaticHashTable`` (LiteRT's builtin hash-table ops). The torch translation
covers the aten ops a dmlops tabular network exports to (:data:`TORCH_TO_TF`); a program with any other op
is refused by name (:class:`EdgeConversionError`), before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dmlops.training.data import UNKNOWN_CATEGORY, Preprocessing

NUMERIC, CATEGORICAL = "numeric", "categorical"
ML_DOMAIN, ML_OPSET = "ai.onnx.ml", 2  # LabelEncoder-2: keys_strings, values_int64s, default_int64


class EdgeConversionError(RuntimeError):
    """A model the edge converter cannot translate; the message names what it lacks."""


@dataclass
class RawRows:
    """Feature values as a device holds them: numeric float32 [n, k] (NaN = missing), categorical text
    [n, c] (``""`` = missing), in the model's column order."""

    numeric: np.ndarray
    categorical: np.ndarray

    def __len__(self) -> int:
        return len(self.numeric)

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.numeric[index : index + 1], self.categorical[index : index + 1]


def raw_rows(table: pa.Table, preprocessing: Preprocessing) -> RawRows:
    """The model's feature columns of ``table`` as raw edge inputs (the text of a categorical value is its
    Arrow cast to string, as the training encoding reads it)."""
    numeric = np.empty((table.num_rows, len(preprocessing.numeric)), dtype=np.float32)
    for index, name in enumerate(preprocessing.numeric):
        numeric[:, index] = pc.cast(table[name], pa.float64()).to_numpy(zero_copy_only=False)
    categorical = np.empty((table.num_rows, len(preprocessing.categorical)), dtype=object)
    for index, name in enumerate(preprocessing.categorical):
        categorical[:, index] = pc.fill_null(pc.cast(table[name], pa.string()), "").to_numpy(zero_copy_only=False)
    return RawRows(numeric, categorical)


def input_description(preprocessing: Preprocessing) -> dict[str, str]:
    """What a device feeds each input of an edge variant: dtype, shape and columns in order."""
    numeric, categorical = list(preprocessing.numeric), list(preprocessing.categorical)
    return {
        NUMERIC: f"float32 [n, {len(numeric)}], NaN when missing: {', '.join(numeric)}",
        CATEGORICAL: f"string [n, {len(categorical)}], the value's text, empty when missing: {', '.join(categorical)}",
    }


def _statistics(preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    means = np.array([stats["mean"] for stats in preprocessing.numeric.values()], dtype=np.float32)
    stds = np.array([stats["std"] for stats in preprocessing.numeric.values()], dtype=np.float32)
    return means, stds


def _require_categorical(preprocessing: Preprocessing) -> None:
    if not preprocessing.categorical:
        raise EdgeConversionError("the edge graphs need at least one categorical column; this model has none")


def onnx_with_preprocessing(model, preprocessing: Preprocessing):
    """``model`` (an ``onnx.ModelProto`` taking the encoded ``numeric`` and ``categorical`` inputs) behind a
    front end that encodes raw inputs as the served model does; the inputs keep their names."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    _require_categorical(preprocessing)
    graph = model.graph
    encoded = {NUMERIC: "numeric_standardized", CATEGORICAL: "categorical_index"}
    for node in graph.node:
        node.input[:] = [encoded.get(name, name) for name in node.input]
    rows = graph.input[[item.name for item in graph.input].index(NUMERIC)].type.tensor_type.shape.dim[0]
    rows = rows.dim_param or rows.dim_value
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(NUMERIC, TensorProto.FLOAT, [rows, len(preprocessing.numeric)]),
        helper.make_tensor_value_info(CATEGORICAL, TensorProto.STRING, [rows, len(preprocessing.categorical)]),
    ])
    means, stds = _statistics(preprocessing)
    constants = [numpy_helper.from_array(means, "numeric_mean"), numpy_helper.from_array(stds, "numeric_std"),
                 numpy_helper.from_array(np.array([1], dtype=np.int64), "column_axis")]
    nodes = [
        helper.make_node("IsNaN", [NUMERIC], ["numeric_missing"]),
        helper.make_node("Where", ["numeric_missing", "numeric_mean", NUMERIC], ["numeric_filled"]),
        helper.make_node("Sub", ["numeric_filled", "numeric_mean"], ["numeric_centered"]),
        helper.make_node("Div", ["numeric_centered", "numeric_std"], [encoded[NUMERIC]]),
    ]
    columns = []
    for index, (name, vocabulary) in enumerate(preprocessing.categorical.items()):
        constants.append(numpy_helper.from_array(np.array(index, dtype=np.int64), f"{name}_position"))
        nodes += [
            helper.make_node("Gather", [CATEGORICAL, f"{name}_position"], [f"{name}_text"], axis=1),
            helper.make_node("LabelEncoder", [f"{name}_text"], [f"{name}_index"], domain=ML_DOMAIN,
                             keys_strings=vocabulary, values_int64s=list(range(1, len(vocabulary) + 1)),
                             default_int64=UNKNOWN_CATEGORY),
            helper.make_node("Unsqueeze", [f"{name}_index", "column_axis"], [f"{name}_column"]),
        ]
        columns.append(f"{name}_column")
    nodes.append(helper.make_node("Concat", columns, [encoded[CATEGORICAL]], axis=1))
    graph.initializer.extend(constants)
    network = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + network)
    if not any(opset.domain == ML_DOMAIN for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(ML_DOMAIN, ML_OPSET))
    onnx.checker.check_model(model)
    return model


def _index(dim: int, item: Any) -> tuple:
    """A subscript applying ``item`` on axis ``dim`` (negative counts from the end)."""
    return (slice(None),) * dim + (item,) if dim >= 0 else (Ellipsis, item) + (slice(None),) * (-dim - 1)


def _slice(x, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1):
    return x[_index(dim, slice(start, None if end is None or end >= 2**62 else end, step))]


def _linear(x, weight, bias=None):
    import tensorflow as tf

    result = tf.matmul(x, weight, transpose_b=True)
    return result if bias is None else result + bias


def _dropout(x, probability: float, train: bool):
    if train:
        raise EdgeConversionError("the program applies dropout in training mode; export the model in eval mode")
    return x


def _tf_ops() -> dict[Any, Callable]:
    """aten op → its TensorFlow equivalent (torch's argument order): the ops of a tabular network."""
    import tensorflow as tf
    import torch

    aten = torch.ops.aten
    return {
        aten.slice.Tensor: _slice,
        aten.select.int: lambda x, dim, index: x[_index(dim, index)],
        aten.embedding.default: lambda weight, indices, *_: tf.gather(weight, indices),
        aten.cat.default: lambda tensors, dim=0: tf.concat(tensors, axis=dim),
        aten.linear.default: _linear,
        aten.relu.default: tf.nn.relu,
        aten.dropout.default: _dropout,
        aten.squeeze.dim: lambda x, dim: tf.squeeze(x, axis=dim),
    }


TORCH_TO_TF = ("slice", "select", "embedding", "cat", "linear", "relu", "dropout (eval)", "squeeze")


def torch_network(program_path: Path) -> Callable:
    """The ``torch.export`` program at ``program_path`` as a TensorFlow function of the encoded inputs
    (``numeric`` float32 [n, k], ``categorical`` int64 [n, c]) returning its output; refuses a program with
    an op outside :data:`TORCH_TO_TF`, naming it."""
    import tensorflow as tf
    import torch
    from torch.export.graph_signature import InputKind
    from torch.fx.node import map_arg

    program = torch.export.load(str(program_path))
    ops = _tf_ops()
    unknown = sorted({str(node.target) for node in program.graph.nodes
                      if node.op == "call_function" and node.target not in ops})
    if unknown:
        raise EdgeConversionError(f"the torch program uses {', '.join(unknown)}, which the TFLite converter does "
                                  f"not translate (it knows {', '.join(TORCH_TO_TF)})")
    tensors = {**program.state_dict, **program.constants}
    signature = program.graph_signature
    constants = {spec.arg.name: tf.constant(tensors[spec.target].detach().numpy())
                 for spec in signature.input_specs if spec.kind != InputKind.USER_INPUT}
    user_inputs = list(signature.user_inputs)

    def run(numeric, categorical):
        values = {**constants, **dict(zip(user_inputs, (numeric, categorical)))}
        for node in program.graph.nodes:
            if node.op == "call_function":
                args, kwargs = map_arg((node.args, node.kwargs), lambda arg: values[arg.name])
                values[node.name] = ops[node.target](*args, **kwargs)
            elif node.op == "output":
                return map_arg(node.args[0], lambda arg: values[arg.name])[0]
        raise EdgeConversionError(f"{program_path}: the program has no output")

    return run


def saved_model_network(saved_model_path: Path) -> tuple[Callable, Any]:
    """The SavedModel's serving signature as a TensorFlow function of the encoded inputs, and the loaded
    object that must outlive it."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(saved_model_path))
    serve = loaded.signatures["serving_default"]
    index_type = serve.structured_input_signature[1][CATEGORICAL].dtype

    def run(numeric, categorical):
        outputs = serve(numeric=numeric, categorical=tf.cast(categorical, index_type))
        return next(iter(outputs.values()))

    return run, loaded


def text_array(categorical: np.ndarray) -> np.ndarray:
    """Categorical text as a NumPy unicode array, which LiteRT's string tensors and TensorFlow's calibrator
    take (an object array of several strings makes the calibrator fail)."""
    return categorical.astype(str)


QUANTIZED_TFLITE_OPS = ("FULLY_CONNECTED", "GATHER", "CONCATENATION")


def quantize_tflite(float32: bytes, calibration: RawRows, batch: int) -> bytes:
    """Static int8 quantization of a TFLite model with ai-edge-quantizer: int8 weights (per channel) and
    int8 activations of the network's ops (:data:`QUANTIZED_TFLITE_OPS`: the dense layers, the embedding
    lookups and their concatenation), activation ranges calibrated on the ``calibration`` rows in batches
    of ``batch``; the preprocessing front end stays float (a NaN has no int8 value).

    TensorFlow's own calibrator cannot feed string inputs (TF 2.21 fails with ``basic_string::_M_create``);
    ai-edge-quantizer's profiler-based calibration runs LiteRT, which can. Its ranges are moving averages of
    each call's min and max, hence batches, not single rows."""
    from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager

    recipe = recipe_manager.RecipeManager()
    for op in QUANTIZED_TFLITE_OPS:
        recipe.add_static_config(regex=".*", operation_name=qtyping.TFLOperationName[op],
                                 activation_num_bits=8, weight_num_bits=8)
    model = quantizer.Quantizer(float32)
    model.load_quantization_recipe(recipe.get_quantization_recipe())
    batches = [{NUMERIC: calibration.numeric[start : start + batch],
                CATEGORICAL: text_array(calibration.categorical[start : start + batch])}
               for start in range(0, len(calibration), batch)]
    ranges = model.calibrate({"serving_default": batches}, num_threads=1,
                             mode=calibrator.CalibrationMode.CALIBRATION_PROFILER_BASED)
    return model.quantize(ranges, enable_progress_bar=False, enable_progress_report=False).quantized_model


def tflite_models(network: Callable, keep_alive: Any, preprocessing: Preprocessing,
                  calibration: RawRows, batch: int) -> dict[str, bytes]:
    """``network`` (encoded inputs → logit) behind the preprocessing front end, converted to TFLite float32
    and int8 (:func:`quantize_tflite`, calibrated on the ``calibration`` rows)."""
    import tensorflow as tf

    _require_categorical(preprocessing)
    means, stds = _statistics(preprocessing)

    class EdgeModel(tf.Module):
        def __init__(self):
            super().__init__()
            self.network_owner = keep_alive
            self.tables = [
                tf.lookup.StaticHashTable(
                    tf.lookup.KeyValueTensorInitializer(
                        tf.constant(vocabulary, tf.string),
                        tf.range(1, len(vocabulary) + 1, dtype=tf.int64)),
                    default_value=tf.constant(UNKNOWN_CATEGORY, tf.int64))
                for vocabulary in preprocessing.categorical.values()
            ]

        @tf.function(input_signature=[
            tf.TensorSpec([None, len(preprocessing.numeric)], tf.float32, name=NUMERIC),
            tf.TensorSpec([None, len(preprocessing.categorical)], tf.string, name=CATEGORICAL)])
        def serve(self, numeric, categorical):
            filled = tf.where(tf.math.is_nan(numeric), means, numeric)
            index = tf.stack([table.lookup(categorical[:, column]) for column, table in enumerate(self.tables)], axis=1)
            index = tf.reshape(index, [-1, len(self.tables)])  # a known rank: LiteRT's hash-table output has none
            return {"logit": network((filled - means) / stds, index)}

    model = EdgeModel()
    float32 = tf.lite.TFLiteConverter.from_concrete_functions([model.serve.get_concrete_function()], model).convert()
    return {"tflite_float32": float32, "tflite_int8": quantize_tflite(float32, calibration, batch)}
