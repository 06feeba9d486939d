"""The edge export component: ONNX and TFLite variants of a trained model, each gated against the served
model on the eval rows."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Model, Output

from dmlops.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def export_edge(
    model: Input[Model],
    eval_data: Input[Dataset],
    train_data: Input[Dataset],
    onnx_float32: Output[Model],
    onnx_int8: Output[Model],
    tflite_float32: Output[Model],
    tflite_int8: Output[Model],
    report: Output[Markdown],
    on_gate_failure: str = "fail",
):
    """Convert a model exported by ``train`` for devices: ONNX float32 and int8 (onnxruntime) for torch
    models, TFLite float32 and int8 (LiteRT) for torch and TensorFlow models. Every variant takes raw feature
    values, the model's preprocessing (standardization, category lookup) folded into its graph; its inputs
    are described in its metadata. Each variant predicts the eval rows, one row per call, in its own runtime
    and is gated against the served model answering the same rows: float32 max |Δp| ≤ 1e-5; int8 AUC drop
    ≤ 0.002 and predictions changing class ≤ 0.1 %.

    Args:
        model: A model exported by ``train`` (torch.export program + ONNX, or SavedModel, with metadata.json).
        eval_data: Parquet dataset with the model's feature columns and its label column; every variant
            predicts each row alone and is gated on the results.
        train_data: Parquet training rows; the int8 variants' activation ranges are calibrated on a sample
            of them.
        onnx_float32: The ONNX model as exported; metadata: sha256, size, gate figures, latency, inputs.
        onnx_int8: The ONNX model with int8 weights and activations (static QDQ quantization); metadata as
            above.
        tflite_float32: The TFLite model (the ``torch.export`` program translated to TensorFlow, or the
            SavedModel); metadata as above.
        tflite_int8: The TFLite model with int8 weights and activations (post-training full-integer
            quantization); metadata as above.
        report: Markdown table of every variant beside the served model: size, single-row latency p50/p99,
            gate figures, and the variants left out with the reason.
        on_gate_failure: fail (a variant past its gate fails the step, naming the figure) or omit (the
            variant is left out, with the reason in its metadata and the report).
    """
    from pathlib import Path

    from dmlops.serving.edge import VARIANTS, export_edge as run_export

    outputs = {"onnx_float32": onnx_float32, "onnx_int8": onnx_int8, "tflite_float32": tflite_float32,
               "tflite_int8": tflite_int8}
    result = run_export(model.path, eval_data.path, train_data.path, {name: Path(outputs[name].path) for name in VARIANTS},
                        on_gate_failure=on_gate_failure)
    for variant in result.variants:
        outputs[variant.name].metadata.update(variant.metadata())
    for name, reason in result.left_out.items():  # not made, or past its gate with on_gate_failure omit
        outputs[name].metadata.update({"produced": False, "reason": reason})
        (Path(outputs[name].path) / "LEFT_OUT").write_text(reason + "\n")
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
