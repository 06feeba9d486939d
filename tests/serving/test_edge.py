"""Edge export: variants run in their own runtime and gated against the served model; a broken conversion
fails the gate, and the step, naming the figure."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from kfp import dsl
from kfp.dsl import Dataset, Model
from onnx import helper, numpy_helper

from dmlops.cli import run_local
from dmlops.serving.edge import VARIANTS, EdgeGateError, check_variant, export_edge, gate
from dmlops.training.data import Preprocessing, load_encoded
from dmlops.training.evaluate import ExportedModel
from dmlops.training.export import METADATA_FILE, write_metadata

from component_yaml import load_yaml_component

export_edge_component = load_yaml_component("serving", "export_edge")  # as another team loads it


def reorder_numeric_inputs(onnx_path: Path, columns: int) -> None:
    """A conversion that feeds the model's numeric columns in reverse order: it runs, and answers wrongly."""
    model = onnx.load(str(onnx_path))
    for node in model.graph.node:
        node.input[:] = ["numeric_reordered" if name == "numeric" else name for name in node.input]
    model.graph.initializer.append(numpy_helper.from_array(np.arange(columns)[::-1].astype(np.int64), "reversed"))
    model.graph.node.insert(0, helper.make_node("Gather", ["numeric", "reversed"], ["numeric_reordered"], axis=1))
    onnx.save(model, str(onnx_path))


@pytest.fixture(scope="module")
def broken_model_dir(model_dir, tmp_path_factory) -> Path:
    """The exported model with its ONNX file converted with the numeric inputs reversed."""
    target = tmp_path_factory.mktemp("broken-edge") / "model"
    shutil.copytree(model_dir, target)
    metadata = json.loads((target / METADATA_FILE).read_text())
    reorder_numeric_inputs(target / metadata["model_files"]["onnx"], len(metadata["preprocessing"]["numeric"]))
    for key in ("files", "format_version", "dmlops_version"):
        metadata.pop(key)
    write_metadata(target, metadata)
    return target


def destinations(root: Path) -> dict[str, Path]:
    return {name: root / name for name in VARIANTS}


def test_variants_are_gated_against_the_served_model(model_dir, data_dir, tmp_path):
    report = export_edge(str(model_dir), str(data_dir / "eval.parquet"), str(data_dir / "train.parquet"),
                         destinations(tmp_path), on_gate_failure="omit")
    checked = {variant.name: variant for variant in report.variants}
    assert sorted(checked) == ["onnx_float32", "onnx_int8"]
    float32, int8 = checked["onnx_float32"], checked["onnx_int8"]
    assert float32.passed and float32.figures["max_abs_delta_p"] <= 1e-5 and float32.runtime == "onnxruntime"
    metadata = float32.metadata()
    assert metadata["sha256"] == hashlib.sha256((tmp_path / "onnx_float32" / "model.onnx").read_bytes()).hexdigest()
    assert metadata["gate"] == "passed" and metadata["latency_p50_ms"] <= metadata["latency_p99_ms"]
    # int8 is kept only when its own gate passes; otherwise it is left out with the figures that failed
    assert (tmp_path / "onnx_int8" / "model.int8.onnx").exists() is int8.passed
    if not int8.passed:
        assert report.left_out["onnx_int8"] == "gate failed: " + ", ".join(int8.failures)
    assert report.left_out["tflite_int8"] == "TFLite needs a TensorFlow model; this one is torch"
    table = report.markdown()
    assert "| served (torch.export) | native |" in table and "| onnx_float32 | onnxruntime |" in table


def test_a_reordered_input_conversion_fails_the_float32_gate(broken_model_dir, data_dir):
    served = ExportedModel(str(broken_model_dir))
    data = load_encoded(str(data_dir / "eval.parquet"), Preprocessing.from_dict(served.metadata["preprocessing"]))
    reference = served.predict_proba(data.numeric, data.categorical)
    variant = check_variant("onnx_float32", broken_model_dir / "model.onnx", reference, data)
    assert len(variant.failures) == 1 and variant.failures[0].startswith("max |Δp| ")
    assert variant.figures["max_abs_delta_p"] > 1e-5

    with pytest.raises(EdgeGateError, match=r"onnx_float32 fails its gate: max \|Δp\| [0-9.e-]+ > 1e-05"):
        export_edge(str(broken_model_dir), str(data_dir / "eval.parquet"), str(data_dir / "train.parquet"),
                    destinations(broken_model_dir.parent / "out"))


@pytest.mark.parametrize("flips, passes", [(1, True), (3, False)])
def test_the_int8_gate_counts_predictions_changing_class(flips, passes):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 2000)
    reference = np.clip(labels * 0.6 + rng.uniform(0, 0.4, 2000), 0, 1)
    candidate = reference.copy()
    candidate[:flips] = 1 - candidate[:flips]
    figures, failures = gate("int8", reference, candidate, labels)
    assert figures["class_flip_rate"] == flips / 2000
    assert (failures == []) is passes
    if not passes:
        assert failures == ["class flips 0.150% > 0.100%"]


@dsl.pipeline(name="edge-broken")
def edge_of(model_uri: str, eval_uri: str, train_uri: str):
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
    eval_data = dsl.importer(artifact_uri=eval_uri, artifact_class=Dataset, reimport=False)
    train_data = dsl.importer(artifact_uri=train_uri, artifact_class=Dataset, reimport=False)
    export_edge_component(model=model.output, eval_data=eval_data.output, train_data=train_data.output
                          ).set_display_name("export edge")


def test_the_step_fails_naming_the_figure(broken_model_dir, data_dir, tmp_path, capsys):
    with pytest.raises(RuntimeError, match="Inner task failed"):
        run_local(edge_of, {"model_uri": str(broken_model_dir), "eval_uri": str(data_dir / "eval.parquet"),
                                    "train_uri": str(data_dir / "train.parquet")}, tmp_path)
    shown = capsys.readouterr().err
    assert "EdgeGateError: onnx_float32 fails its gate: max |Δp|" in shown


@pytest.mark.slow  # TensorFlow import, training and conversion
def test_a_tensorflow_model_gets_gated_tflite_variants(data_dir, tmp_path, capsys):
    pytest.importorskip("tensorflow")
    pytest.importorskip("ai_edge_litert")
    from dmlops.training.config import TrainConfig
    from dmlops.training.worker import train

    export = tmp_path / "tf-model"
    train(TrainConfig(train_uri=str(data_dir / "train.parquet"), label="label", export_uri=str(export),
                      strategy="tf-multiworker", epochs=1, batch_size=64, hidden_units=[8]))
    run_dir = run_local(edge_of, {"model_uri": str(export), "eval_uri": str(data_dir / "eval.parquet"),
                                  "train_uri": str(data_dir / "train.parquet")},
                        tmp_path / "runs")
    outputs = json.loads((run_dir / "export-edge" / "executor_output.json").read_text())["artifacts"]
    for name in ("tflite_float32", "tflite_int8"):
        metadata = outputs[name]["artifacts"][0]["metadata"]
        model_file = run_dir / "export-edge" / name / metadata["file"]
        assert metadata["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
        assert metadata["runtime"] == "litert" and metadata["gate"] == "passed"
    assert outputs["onnx_int8"]["artifacts"][0]["metadata"] == {
        "produced": False, "reason": "the TensorFlow export has no ONNX file"}
    assert "| tflite_float32 | litert |" in (run_dir / "export-edge" / "report").read_text()
