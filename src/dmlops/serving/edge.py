"""Edge export: the served model converted for devices, each variant run in its own runtime and gated
against the served model before it may ship.

Variants: for torch models, ONNX float32 (the ONNX file ``train`` exports beside the program) and int8
(onnxruntime's static quantization: QDQ, int8 weights per channel, int8 activations with ranges calibrated
on training rows), run with onnxruntime; for torch and TensorFlow models, TFLite float32 and int8
(TFLiteConverter from the ``torch.export`` program translated to TensorFlow, or from the SavedModel; int8
weights and activations with ai-edge-quantizer, calibrated on training rows), run with LiteRT's interpreter
(``ai-edge-litert``). Every variant takes raw feature values, the served model's preprocessing folded into
its graph (:mod:`dmlops.serving.edge_graphs` says how a device feeds it), predicts the eval rows one row
per call, as a device runs it, and is compared with the served model answering the same rows as requests
(:meth:`dmlops.serving.model.ServedModel.predict_rows`):

- float32 must give the same probabilities: max |Δp| ≤ 1e-5;
- int8 may lose a little: AUC drop ≤ 0.002 and predictions changing class ≤ 0.1 %.

A converter that silently reorders inputs or mangles a layer still produces a model that runs; these
figures are what tells (the question converter users keep asking, e.g. onnx/tensorflow-onnx#2339,
microsoft/onnxruntime#12924).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa

from dmlops.serving.edge_graphs import (
    EdgeConversionError, RawRows, input_description, onnx_with_preprocessing, raw_rows, saved_model_network,
    text_array, tflite_models, torch_network,
)
from dmlops.training.data import Preprocessing, binary_labels, read_table
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.metrics import binary_metrics

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]  # raw numeric, categorical text → probabilities

MAX_FLOAT32_DELTA = 1e-5
MAX_INT8_AUC_DROP = 0.002
MAX_INT8_CLASS_FLIPS = 0.001
VARIANTS = ("onnx_float32", "onnx_int8", "tflite_float32", "tflite_int8")
LATENCY_WARMUP = 20
SERVED_LATENCY_ROWS = 2000  # the served model is timed on the first rows only: its gate reference is one batch
CALIBRATION_ROWS = 5000
CALIBRATION_BATCH = 500


class EdgeGateError(RuntimeError):
    """An edge variant's predictions differ from the served model's beyond its gate."""


@dataclass
class EdgeVariant:
    """One converted model, its file and what its gate measured."""

    name: str
    runtime: str
    precision: str
    path: Path
    size_bytes: int
    sha256: str
    figures: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures

    def metadata(self) -> dict[str, object]:
        """What the variant's Model artifact carries: file, digest, runtime, gate figures and verdict."""
        return {
            "file": self.path.name, "sha256": self.sha256, "size_bytes": self.size_bytes, "runtime": self.runtime,
            "precision": self.precision, **self.figures, "gate": "passed" if self.passed else "; ".join(self.failures),
            **{f"latency_{name}_ms": value for name, value in self.latency_ms.items()},
            **{f"input_{name}": description for name, description in self.inputs.items()},
        }


@dataclass
class EdgeReport:
    """Every variant checked (kept or not), those left out (name → reason) and the served model's figures."""

    variants: list[EdgeVariant]
    left_out: dict[str, str]
    reference: dict[str, float]
    rows: int
    served_format: str
    inputs: dict[str, str]

    def markdown(self) -> str:
        """The variants beside the served model: size, single-row latency p50/p99 and the gate figures."""
        lines = [
            f"# Edge variants\n\nGated on {self.rows:,} eval rows against the served model ({self.served_format}): "
            f"float32 max |Δp| ≤ {MAX_FLOAT32_DELTA:g}; int8 AUC drop ≤ {MAX_INT8_AUC_DROP:g} and class flips ≤ "
            f"{MAX_INT8_CLASS_FLIPS:.1%}, every row predicted alone from its raw feature values (the served model "
            f"answering them as requests). Latency: one row per call, one thread (the served model on the first "
            f"{min(self.rows, SERVED_LATENCY_ROWS):,} rows).\n",
            "Every variant takes raw feature values, the preprocessing in its graph:\n",
            *(f"- `{name}`: {description}" for name, description in self.inputs.items()),
            "",
            "| variant | runtime | size | p50 ms | p99 ms | max \\|Δp\\| | AUC drop | class flips | gate |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
            f"| served ({self.served_format}) | native | {_size(self.reference['size_bytes'])} | "
            f"{self.reference['latency_p50_ms']:.3f} | {self.reference['latency_p99_ms']:.3f} | | | | |",
        ]
        for variant in self.variants:
            figures = variant.figures
            lines.append(
                f"| {variant.name} | {variant.runtime} | {_size(variant.size_bytes)} | {variant.latency_ms['p50']:.3f} | "
                f"{variant.latency_ms['p99']:.3f} | {figures['max_abs_delta_p']:.2e} | {figures['auc_drop']:+.5f} | "
                f"{figures['class_flip_rate']:.3%} | {'passed' if variant.passed else 'left out: ' + ', '.join(variant.failures)} |")
        checked = {variant.name for variant in self.variants}
        not_made = {name: reason for name, reason in self.left_out.items() if name not in checked}
        if not_made:
            lines.append("\nNot made:\n")
            lines.extend(f"- {name}: {reason}" for name, reason in not_made.items())
        return "\n".join(lines) + "\n"


def gate(precision: str, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray,
         threshold: float = 0.5) -> tuple[dict[str, float], list[str]]:
    """The gate figures of ``candidate`` probabilities against the served model's ``reference`` on the same
    rows, and the figures past their limit (each naming the figure, its value and the limit)."""
    reference = np.asarray(reference, dtype=np.float64).reshape(-1)
    candidate = np.asarray(candidate, dtype=np.float64).reshape(-1)
    if reference.shape != candidate.shape:
        return {}, [f"output shape {candidate.shape} differs from the served model's {reference.shape}"]
    delta = float(np.max(np.abs(candidate - reference)))
    flips = float(np.mean((candidate >= threshold) != (reference >= threshold)))
    auc_drop = float(binary_metrics(labels, reference, threshold)["auc"] - binary_metrics(labels, candidate, threshold)["auc"])
    figures = {"max_abs_delta_p": delta, "auc_drop": auc_drop, "class_flip_rate": flips}
    if precision == "float32":
        limits = [("max |Δp|", delta, MAX_FLOAT32_DELTA, "{:.3g}")]
    else:
        limits = [("AUC drop", auc_drop, MAX_INT8_AUC_DROP, "{:.4f}"), ("class flips", flips, MAX_INT8_CLASS_FLIPS, "{:.3%}")]
    failures = [f"{name} {shown.format(value)} > {shown.format(limit)}" for name, value, limit, shown in limits
                if not value <= limit]
    return figures, failures


def _sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64).reshape(-1)))


def onnx_predictor(path: Path, threads: int = 1) -> Predictor:
    """Probabilities from an edge ONNX model (raw inputs ``numeric``, ``categorical``; one logit output) in
    onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return _sigmoid(session.run([output], {"numeric": numeric, "categorical": categorical})[0])

    return predict


def tflite_predictor(path: Path, threads: int = 1) -> Predictor:
    """Probabilities from an edge TFLite model's serving signature (raw inputs ``numeric``, ``categorical``)
    in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner()

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return _sigmoid(next(iter(runner(numeric=numeric, categorical=text_array(categorical)).values())))

    return predict


class _CalibrationRows:
    """onnxruntime's CalibrationDataReader protocol over encoded training rows, in batches."""

    def __init__(self, numeric: np.ndarray, categorical: np.ndarray):
        self._batches = iter([
            {"numeric": numeric[start : start + CALIBRATION_BATCH],
             "categorical": categorical[start : start + CALIBRATION_BATCH]}
            for start in range(0, len(numeric), CALIBRATION_BATCH)
        ])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibration_sample(table: pa.Table, count: int = CALIBRATION_ROWS, seed: int = 0) -> pa.Table:
    """Up to ``count`` rows drawn without replacement (seeded) for calibration."""
    if table.num_rows <= count:
        return table
    return table.take(np.sort(np.random.default_rng(seed).choice(table.num_rows, count, replace=False)))


def convert_onnx(model_dir: Path, metadata: dict, preprocessing: Preprocessing, destinations: dict[str, Path],
                 calibration: pa.Table) -> dict[str, Path]:
    """ONNX float32 (the exported file) and int8 (shape inference and graph optimization as onnxruntime's
    ``quant_pre_process`` does them, then static QDQ quantization calibrated on the ``calibration`` rows with
    the percentile method), each behind the preprocessing front end, in its destination folder."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = model_dir / metadata["model_files"]["onnx"]
    float32 = destinations["onnx_float32"] / "model.onnx"
    int8 = destinations["onnx_int8"] / "model.int8.onnx"
    prepared = destinations["onnx_int8"] / "prepared.onnx"
    quant_pre_process(str(source), str(prepared))
    quantize_static(str(prepared), str(int8), _CalibrationRows(*preprocessing.encode(calibration, "calibration rows")),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile)
    prepared.unlink()
    for network, path in ((source, float32), (int8, int8)):
        onnx.save(onnx_with_preprocessing(onnx.load(str(network)), preprocessing), str(path))
    return {"onnx_float32": float32, "onnx_int8": int8}


def convert_tflite(model_dir: Path, metadata: dict, preprocessing: Preprocessing, destinations: dict[str, Path],
                   calibration: pa.Table) -> dict[str, Path]:
    """TFLite float32 and int8 (static int8 quantization calibrated on the ``calibration`` rows) from the
    ``torch.export`` program (translated op by op) or the SavedModel, behind the preprocessing front end."""
    files = metadata["model_files"]
    if metadata["framework"] == "torch":
        network, keep_alive = torch_network(model_dir / files["torch_export"]), None
    else:
        network, keep_alive = saved_model_network(model_dir / files["saved_model"])
    models = tflite_models(network, keep_alive, preprocessing, raw_rows(calibration, preprocessing), CALIBRATION_BATCH)
    paths = {}
    for name, content in models.items():
        paths[name] = destinations[name] / f"model.{name.split('_')[1]}.tflite"
        paths[name].write_bytes(content)
    return paths


def _latency(seconds: list[float]) -> dict[str, float]:
    measured = np.array(seconds) * 1000
    return {"p50": float(np.percentile(measured, 50)), "p99": float(np.percentile(measured, 99))}


def predict_row_by_row(predict_row: Callable[[int], float], rows: int) -> tuple[np.ndarray, list[float]]:
    """The probability of every row predicted alone (``predict_row(index)``), as a device predicts, and
    each call's seconds, after a few calls that warm the runtime up (its first calls allocate)."""
    for _ in range(LATENCY_WARMUP):
        predict_row(0)
    probabilities = np.empty(rows, dtype=np.float64)
    seconds = []
    for row in range(rows):
        started = time.perf_counter()
        probabilities[row] = predict_row(row)
        seconds.append(time.perf_counter() - started)
    return probabilities, seconds


RUNTIMES = {"onnx": ("onnxruntime", onnx_predictor), "tflite": ("litert", tflite_predictor)}


def check_variant(name: str, path: Path, reference: np.ndarray, rows: RawRows, labels: np.ndarray,
                  threads: int = 1) -> EdgeVariant:
    """Run the variant file at ``path`` on every raw row, one row per call, in its runtime; gate it against
    the served model's ``reference`` probabilities of the same rows and take the calls' latency."""
    family, precision = name.split("_")
    runtime, load = RUNTIMES[family]
    predict = load(path, threads)
    variant = EdgeVariant(name=name, runtime=runtime, precision=precision, path=path, size_bytes=path.stat().st_size,
                          sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    probabilities, seconds = predict_row_by_row(lambda row: predict(*rows.row(row))[0], len(rows))
    variant.figures, variant.failures = gate(precision, reference, probabilities, labels)
    variant.latency_ms = _latency(seconds)
    return variant


ONNX_MODULES, ONNX_EXTRAS = ("onnxruntime", "onnx"), "serve,torch"
TFLITE_MODULES, TFLITE_EXTRAS = ("tensorflow", "ai_edge_litert", "ai_edge_quantizer"), "tf"


def _missing(modules: tuple[str, ...], extras: str) -> str:
    """Why a converter cannot run in this image (its modules missing), or empty."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    return f"needs {', '.join(missing)} in this image: pip install 'dmlops[{extras}]'" if missing else ""


def export_edge(model_uri: str, eval_uri: str, train_uri: str, destinations: dict[str, Path], *,
                on_gate_failure: str = "fail", threads: int = 1) -> EdgeReport:
    """Convert the model at ``model_uri`` into every edge variant its framework allows (each written in
    ``destinations[variant]``, one folder per name in :data:`VARIANTS`; int8 variants calibrated on rows of
    ``train_uri``), run each on the eval rows against the served model and gate it.
    ``on_gate_failure``: ``fail`` raises :class:`EdgeGateError` naming the variant and the figure; ``omit``
    leaves the variant out with the reason. A torch model the TFLite converter cannot translate, or an
    image without TensorFlow, gets no TFLite variants, with the reason. ``threads``: of every runtime."""
    from dmlops.serving.model import ServedModel

    if on_gate_failure not in ("fail", "omit"):
        raise ValueError(f"on_gate_failure {on_gate_failure!r}: choose fail or omit")
    model_dir = fetch(model_uri)
    framework = json.loads((model_dir / METADATA_FILE).read_text())["framework"]
    onnx_missing = _missing(ONNX_MODULES, ONNX_EXTRAS) if framework == "torch" else ""
    tflite_missing = _missing(TFLITE_MODULES, TFLITE_EXTRAS)
    if onnx_missing or (framework != "torch" and tflite_missing):
        raise RuntimeError(f"edge export of a {framework} model {onnx_missing or tflite_missing}")
    served = ServedModel(model_uri, threads=threads)
    if served.target.task != "binary":
        raise ValueError(f"{model_uri}: the edge gates measure binary classifiers; this model's task is "
                         f"{served.target.task}")
    preprocessing = Preprocessing.from_dict(served.metadata["preprocessing"])
    features = [*preprocessing.numeric, *preprocessing.categorical]
    table = read_table(eval_uri, [*features, preprocessing.label])
    labels = binary_labels(table, preprocessing.label, eval_uri)
    requests = table.select(features).to_pylist()
    reference = served.predict_rows(requests)
    rows = raw_rows(table, preprocessing)
    calibration = calibration_sample(read_table(train_uri, features))
    for folder in destinations.values():
        folder.mkdir(parents=True, exist_ok=True)
    left_out: dict[str, str] = {}
    files: dict[str, Path] = {}
    if framework == "torch":
        files.update(convert_onnx(model_dir, served.metadata, preprocessing, destinations, calibration))
    else:
        left_out.update({name: "the TensorFlow export has no ONNX file" for name in VARIANTS[:2]})
    tflite_reason = f"TFLite {tflite_missing}" if tflite_missing else ""
    if not tflite_reason:
        try:
            files.update(convert_tflite(model_dir, served.metadata, preprocessing, destinations, calibration))
        except EdgeConversionError as error:
            tflite_reason = str(error)
    if tflite_reason:
        left_out.update({name: f"not converted: {tflite_reason}" for name in VARIANTS[2:]})
    variants = [check_variant(name, path, reference, rows, labels, threads) for name, path in files.items()]
    inputs = input_description(preprocessing)
    for variant in variants:
        variant.inputs = inputs
    failed = [variant for variant in variants if not variant.passed]
    if failed and on_gate_failure == "fail":
        raise EdgeGateError("; ".join(f"{variant.name} fails its gate: {', '.join(variant.failures)}"
                                      for variant in failed))
    for variant in failed:
        left_out[variant.name] = f"gate failed: {', '.join(variant.failures)}"
        variant.path.unlink()
    timed = requests[:SERVED_LATENCY_ROWS]
    _, served_seconds = predict_row_by_row(lambda row: served.predict_rows(timed[row : row + 1])[0], len(timed))
    served_latency = _latency(served_seconds)
    return EdgeReport(
        variants=variants, left_out=left_out, rows=len(rows), inputs=inputs,
        served_format="torch.export" if framework == "torch" else "SavedModel",
        reference={"latency_p50_ms": served_latency["p50"], "latency_p99_ms": served_latency["p99"],
                   "size_bytes": _served_size(model_dir, served.metadata)},
    )


def _served_size(model_dir: Path, metadata: dict) -> int:
    """Bytes of the served model: the torch.export program or the SavedModel folder."""
    files = metadata["model_files"]
    served = model_dir / (files["torch_export"] if "torch_export" in files else files["saved_model"])
    paths = [served] if served.is_file() else [path for path in served.rglob("*") if path.is_file()]
    return sum(path.stat().st_size for path in paths)


def _size(size_bytes: float) -> str:
    return f"{size_bytes / 1024:.1f} KiB" if size_bytes < 1024 * 1024 else f"{size_bytes / 1024 / 1024:.2f} MiB"
