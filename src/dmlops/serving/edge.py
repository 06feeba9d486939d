"""Edge export: the served model converted for devices, each variant run in its own runtime and gated
against the served model before it may ship.

Variants: ONNX float32 (the ONNX file ``train`` exports beside a torch model) and int8 (onnxruntime's
static quantization: QDQ, int8 weights per channel, int8 activations with ranges calibrated on training
rows), run with onnxruntime; for TensorFlow models, TFLite float32 and int8 (TFLiteConverter,
dynamic-range quantization), run with LiteRT's interpreter (``ai-edge-litert``). Every variant predicts
the eval rows one row per call, as a device runs it (a variant that quantizes activations at run time
answers a row differently inside a batch), and is compared with the served model (torch.export or
SavedModel, as :class:`dmlops.serving.model.ServedModel` loads it):

- float32 must give the same probabilities: max |Δp| ≤ 1e-5;
- int8 may lose a little: AUC drop ≤ 0.002 and predictions changing class ≤ 0.1 %.

A converter that silently reorders inputs or mangles a layer still produces a model that runs; these
figures are what tells (the question converter users keep asking, e.g. onnx/tensorflow-onnx#2339,
microsoft/onnxruntime#12924). Inputs of every variant are the model's encoded inputs (``numeric``
float32 [n, k] standardised, ``categorical`` int64 [n, c] vocabulary indices), as for the served model;
the encoding is in the model's metadata.json (``preprocessing``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dmlops.training.data import EncodedData, Preprocessing, load_encoded
from dmlops.training.export import METADATA_FILE, fetch
from dmlops.training.metrics import binary_metrics

Predictor = Callable[[np.ndarray, np.ndarray], np.ndarray]

MAX_FLOAT32_DELTA = 1e-5
MAX_INT8_AUC_DROP = 0.002
MAX_INT8_CLASS_FLIPS = 0.001
VARIANTS = ("onnx_float32", "onnx_int8", "tflite_float32", "tflite_int8")
LATENCY_WARMUP = 20
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

    @property
    def passed(self) -> bool:
        return not self.failures

    def metadata(self) -> dict[str, object]:
        """What the variant's Model artifact carries: file, digest, runtime, gate figures and verdict."""
        return {
            "file": self.path.name, "sha256": self.sha256, "size_bytes": self.size_bytes, "runtime": self.runtime,
            "precision": self.precision, **self.figures, "gate": "passed" if self.passed else "; ".join(self.failures),
            **{f"latency_{name}_ms": value for name, value in self.latency_ms.items()},
        }


@dataclass
class EdgeReport:
    """Every variant checked (kept or not), those left out (name → reason) and the served model's figures."""

    variants: list[EdgeVariant]
    left_out: dict[str, str]
    reference: dict[str, float]
    rows: int
    served_format: str

    def markdown(self) -> str:
        """The variants beside the served model: size, single-row latency p50/p99 and the gate figures."""
        lines = [
            f"# Edge variants\n\nGated on {self.rows:,} eval rows against the served model ({self.served_format}): "
            f"float32 max |Δp| ≤ {MAX_FLOAT32_DELTA:g}; int8 AUC drop ≤ {MAX_INT8_AUC_DROP:g} and class flips ≤ "
            f"{MAX_INT8_CLASS_FLIPS:.1%}, every row predicted alone. Latency: one row per call, one thread.\n",
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
    """Probabilities from an ONNX model (inputs ``numeric``, ``categorical``; one logit output) in onnxruntime."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output = session.get_outputs()[0].name

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        return _sigmoid(session.run([output], {"numeric": numeric, "categorical": categorical})[0])

    return predict


def tflite_predictor(path: Path, threads: int = 1) -> Predictor:
    """Probabilities from a TFLite model's serving signature (``numeric``, ``categorical``) in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    runner = interpreter.get_signature_runner()

    def predict(numeric: np.ndarray, categorical: np.ndarray) -> np.ndarray:
        outputs = runner(numeric=numeric, categorical=categorical.astype(_tflite_int_type(runner)))
        return _sigmoid(next(iter(outputs.values())))

    return predict


def _tflite_int_type(runner) -> type:
    return runner.get_input_details()["categorical"]["dtype"]


class _CalibrationRows:
    """onnxruntime's CalibrationDataReader protocol over encoded training rows, in batches."""

    def __init__(self, rows: EncodedData):
        self._batches = iter([
            {"numeric": rows.numeric[start : start + CALIBRATION_BATCH],
             "categorical": rows.categorical[start : start + CALIBRATION_BATCH]}
            for start in range(0, len(rows), CALIBRATION_BATCH)
        ])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibration_sample(rows: EncodedData, count: int = CALIBRATION_ROWS, seed: int = 0) -> EncodedData:
    """Up to ``count`` rows drawn without replacement (seeded) for calibration."""
    if len(rows) <= count:
        return rows
    index = np.sort(np.random.default_rng(seed).choice(len(rows), count, replace=False))
    return EncodedData(rows.numeric[index], rows.categorical[index], rows.labels[index])


def convert_onnx(model_dir: Path, metadata: dict, destinations: dict[str, Path],
                 calibration: EncodedData) -> dict[str, Path]:
    """ONNX float32 (the exported file) and int8 (shape inference and graph optimization as onnxruntime's
    ``quant_pre_process`` does them, then static QDQ quantization calibrated on ``calibration`` rows with
    the percentile method), each in its destination folder."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source = model_dir / metadata["model_files"]["onnx"]
    float32 = destinations["onnx_float32"] / "model.onnx"
    int8 = destinations["onnx_int8"] / "model.int8.onnx"
    prepared = destinations["onnx_int8"] / "prepared.onnx"
    shutil.copyfile(source, float32)
    quant_pre_process(str(source), str(prepared))
    quantize_static(str(prepared), str(int8), _CalibrationRows(calibration_sample(calibration)),
                    quant_format=QuantFormat.QDQ, per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QInt8, calibrate_method=CalibrationMethod.Percentile)
    prepared.unlink()
    return {"onnx_float32": float32, "onnx_int8": int8}


def convert_tflite(model_dir: Path, metadata: dict, destinations: dict[str, Path]) -> dict[str, Path]:
    """TFLite float32 and int8 (dynamic-range quantization) from the SavedModel, each in its destination."""
    import tensorflow as tf

    paths = {}
    for name, optimize in (("tflite_float32", False), ("tflite_int8", True)):
        converter = tf.lite.TFLiteConverter.from_saved_model(str(model_dir / metadata["model_files"]["saved_model"]))
        if optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path = destinations[name] / f"model.{name.split('_')[1]}.tflite"
        path.write_bytes(converter.convert())
        paths[name] = path
    return paths


def _latency(seconds: list[float]) -> dict[str, float]:
    measured = np.array(seconds) * 1000
    return {"p50": float(np.percentile(measured, 50)), "p99": float(np.percentile(measured, 99))}


def predict_row_by_row(predict: Predictor, data: EncodedData) -> tuple[np.ndarray, list[float]]:
    """Probabilities of every row predicted alone, as a device predicts, and each call's seconds."""
    probabilities = np.empty(len(data), dtype=np.float64)
    seconds = []
    for row in range(len(data)):
        started = time.perf_counter()
        probabilities[row] = predict(data.numeric[row : row + 1], data.categorical[row : row + 1])[0]
        seconds.append(time.perf_counter() - started)
    return probabilities, seconds


def _warm_up(predict: Predictor, data: EncodedData) -> None:
    for _ in range(LATENCY_WARMUP):  # a runtime's first calls allocate
        predict(data.numeric[:1], data.categorical[:1])


RUNTIMES = {"onnx": ("onnxruntime", onnx_predictor), "tflite": ("litert", tflite_predictor)}


def check_variant(name: str, path: Path, reference: np.ndarray, data: EncodedData, threads: int = 1) -> EdgeVariant:
    """Run the variant file at ``path`` on every row of ``data``, one row per call, in its runtime; gate it
    against ``reference`` and take the calls' latency."""
    family, precision = name.split("_")
    runtime, load = RUNTIMES[family]
    predict = load(path, threads)
    variant = EdgeVariant(name=name, runtime=runtime, precision=precision, path=path, size_bytes=path.stat().st_size,
                          sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    _warm_up(predict, data)
    probabilities, seconds = predict_row_by_row(predict, data)
    variant.figures, variant.failures = gate(precision, reference, probabilities, data.labels)
    variant.latency_ms = _latency(seconds)
    return variant


CONVERTERS = {"torch": ("onnxruntime", "onnx"), "tensorflow": ("tensorflow", "ai_edge_litert")}


def _require_converters(framework: str) -> None:
    missing = [module for module in CONVERTERS[framework] if importlib.util.find_spec(module) is None]
    if missing:
        extra = "tf" if framework == "tensorflow" else "serve,torch"
        raise RuntimeError(f"edge export of a {framework} model needs {', '.join(missing)} in this image: "
                           f"pip install 'dmlops[{extra}]'")


def export_edge(model_uri: str, eval_uri: str, train_uri: str, destinations: dict[str, Path], *,
                on_gate_failure: str = "fail", threads: int = 1) -> EdgeReport:
    """Convert the model at ``model_uri`` into every edge variant its framework allows (each written in
    ``destinations[variant]``, one folder per name in :data:`VARIANTS`; int8 ONNX calibrated on rows of
    ``train_uri``), run each on the eval rows against the served model and gate it.
    ``on_gate_failure``: ``fail`` raises :class:`EdgeGateError` naming the variant and the figure; ``omit``
    leaves the variant out with the reason. ``threads``: of every runtime."""
    from dmlops.serving.model import ServedModel

    if on_gate_failure not in ("fail", "omit"):
        raise ValueError(f"on_gate_failure {on_gate_failure!r}: choose fail or omit")
    model_dir = fetch(model_uri)
    framework = json.loads((model_dir / METADATA_FILE).read_text())["framework"]
    _require_converters(framework)
    served = ServedModel(model_uri, threads=threads)
    preprocessing = Preprocessing.from_dict(served.metadata["preprocessing"])
    data = load_encoded(eval_uri, preprocessing)
    reference = served.predict_encoded(data.numeric, data.categorical)
    left_out: dict[str, str] = {}
    for folder in destinations.values():
        folder.mkdir(parents=True, exist_ok=True)
    if framework == "torch":
        files = convert_onnx(model_dir, served.metadata, destinations, load_encoded(train_uri, preprocessing))
        left_out.update({name: "TFLite needs a TensorFlow model; this one is torch" for name in VARIANTS[2:]})
    else:
        files = convert_tflite(model_dir, served.metadata, destinations)
        left_out.update({name: "the TensorFlow export has no ONNX file" for name in VARIANTS[:2]})
    variants = [check_variant(name, path, reference, data, threads) for name, path in files.items()]
    failed = [variant for variant in variants if not variant.passed]
    if failed and on_gate_failure == "fail":
        raise EdgeGateError("; ".join(f"{variant.name} fails its gate: {', '.join(variant.failures)}"
                                      for variant in failed))
    for variant in failed:
        left_out[variant.name] = f"gate failed: {', '.join(variant.failures)}"
        variant.path.unlink()
    _warm_up(served.predict_encoded, data)
    _, served_seconds = predict_row_by_row(served.predict_encoded, data)
    served_latency = _latency(served_seconds)
    return EdgeReport(
        variants=variants, left_out=left_out, rows=len(data),
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
