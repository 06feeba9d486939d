"""Edge export: variants take raw feature values, run in their own runtime and are gated against the
served model; a broken conversion fails the gate, and the step, naming the figure."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pyarrow.parquet as pq
import pytest
from kfp import dsl
from kfp.dsl import Dataset, Model
from onnx import helper, numpy_helper

from dmlops.cli import run_local
from dmlops.serving.edge import VARIANTS, check_variant, export_edge, gate, onnx_predictor, tflite_predictor
from dmlops.serving.edge_graphs import EdgeConversionError, onnx_with_preprocessing, raw_rows, torch_network
from dmlops.serving.model import ServedModel
from dmlops.training.data import Preprocessing
from dmlops.training.export import METADATA_FILE, write_metadata

from component_yaml import load_yaml_component
from serving_models import ConstantOutput, broken_copy

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


@pytest.fixture(scope="module")
def torch_edge(model_dir, data_dir, tmp_path_factory):
    """The edge variants of the torch model (variants past their gate left out), and their folder."""
    root = tmp_path_factory.mktemp("edge")
    report = export_edge(str(model_dir), str(data_dir / "eval.parquet"), str(data_dir / "train.parquet"),
                         destinations(root), on_gate_failure="omit")
    return report, root


def test_a_torch_model_gets_gated_onnx_and_tflite_variants(torch_edge):
    report, root = torch_edge
    checked = {variant.name: variant for variant in report.variants}
    assert sorted(checked) == sorted(VARIANTS)
    files = {"onnx_float32": "model.onnx", "onnx_int8": "model.int8.onnx", "tflite_float32": "model.float32.tflite",
             "tflite_int8": "model.int8.tflite"}
    for name in ("onnx_float32", "tflite_float32"):
        float32 = checked[name]
        assert float32.passed and float32.figures["max_abs_delta_p"] <= 1e-5
        metadata = float32.metadata()
        assert metadata["sha256"] == hashlib.sha256((root / name / files[name]).read_bytes()).hexdigest()
        assert metadata["gate"] == "passed" and metadata["latency_p50_ms"] <= metadata["latency_p99_ms"]
    assert checked["onnx_float32"].runtime == "onnxruntime" and checked["tflite_float32"].runtime == "litert"
    # int8 is kept only when its own gate passes; otherwise it is left out with the figures that failed
    for name in ("onnx_int8", "tflite_int8"):
        int8 = checked[name]
        assert (root / name / files[name]).exists() is int8.passed
        assert report.left_out.get(name) == (None if int8.passed else "gate failed: " + ", ".join(int8.failures))
    table = report.markdown()
    assert "| served (torch.export) | native |" in table and "| tflite_float32 | litert |" in table


def device_inputs(rows: list[dict], preprocessing: Preprocessing) -> tuple[np.ndarray, np.ndarray]:
    """Request rows as a device holds them: numbers as float32 (NaN when missing), categories as text
    (empty when missing)."""
    numeric = np.array([[np.nan if row[name] is None else float(row[name]) for name in preprocessing.numeric]
                        for row in rows], dtype=np.float32)
    categorical = np.array([["" if row[name] is None else str(row[name]) for name in preprocessing.categorical]
                            for row in rows], dtype=object)
    return numeric, categorical


@pytest.mark.parametrize("name, file, load", [("onnx_float32", "model.onnx", onnx_predictor),
                                              ("tflite_float32", "model.float32.tflite", tflite_predictor)])
def test_an_edge_model_takes_raw_features_as_the_served_model_does(torch_edge, model_dir, eval_rows, name, file, load):
    served = ServedModel(str(model_dir))
    preprocessing = Preprocessing.from_dict(served.metadata["preprocessing"])
    vocabulary = preprocessing.categorical["carrier"]
    # the rows include missing numbers, missing categories and a category the training rows never had
    assert any(row["distance"] is None for row in eval_rows) and any(row["carrier"] is None for row in eval_rows)
    unseen = dict(eval_rows[0], carrier="unseen carrier", distance=1234.5, weekend=True)
    rows = [*eval_rows, unseen]
    numeric, categorical = device_inputs(rows, preprocessing)
    predict = load(torch_edge[1] / name / file)
    edge = np.array([predict(numeric[index : index + 1], categorical[index : index + 1])[0] for index in range(len(rows))])
    assert np.max(np.abs(edge - served.predict_rows(rows))) <= 1e-5
    # the lookup is in the graph: an unseen category answers as the unknown index, a known one does not
    known = dict(unseen, carrier=vocabulary[0])
    assert predict(*device_inputs([known], preprocessing))[0] != predict(*device_inputs([unseen], preprocessing))[0]


def test_a_reordered_input_conversion_fails_the_float32_gate(broken_model_dir, data_dir, tmp_path):
    served = ServedModel(str(broken_model_dir))
    preprocessing = Preprocessing.from_dict(served.metadata["preprocessing"])
    table = pq.read_table(data_dir / "eval.parquet")
    edge = tmp_path / "model.onnx"
    onnx.save(onnx_with_preprocessing(onnx.load(str(broken_model_dir / "model.onnx")), preprocessing), str(edge))
    reference = served.predict_rows(table.drop_columns(["label"]).to_pylist())
    variant = check_variant("onnx_float32", edge, reference, raw_rows(table, preprocessing), table["label"].to_numpy())
    assert len(variant.failures) == 1 and variant.failures[0].startswith("max |Δp| ")
    assert variant.figures["max_abs_delta_p"] > 1e-5


def test_an_image_without_the_tflite_converter_leaves_tflite_out_with_the_reason(model_dir, data_dir, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setattr("dmlops.serving.edge.TFLITE_MODULES", ("tensorflow", "no_such_converter"))
    report = export_edge(str(model_dir), str(data_dir / "eval.parquet"), str(data_dir / "train.parquet"),
                         destinations(tmp_path), on_gate_failure="omit")
    assert [variant.name for variant in report.variants] == ["onnx_float32", "onnx_int8"]
    reason = "not converted: TFLite needs no_such_converter in this image: pip install 'dmlops[tf]'"
    assert report.left_out["tflite_float32"] == report.left_out["tflite_int8"] == reason
    assert f"- tflite_int8: {reason}" in report.markdown()


def test_the_translated_network_answers_as_the_torch_program(tmp_path):
    import torch

    from dmlops.training.torch_model import TabularMLP

    torch.manual_seed(0)
    model = TabularMLP(3, [4, 6], [2, 3], [8, 4], dropout=0.3).eval()  # eval-mode dropout stays in the program
    numeric, categorical = torch.randn(16, 3), torch.randint(0, 4, (16, 2))
    rows = torch.export.Dim("rows")
    program = torch.export.export(model, (numeric, categorical), dynamic_shapes=({0: rows}, {0: rows}))
    assert any("dropout" in str(node.target) for node in program.graph.nodes)
    torch.export.save(program, str(tmp_path / "model.pt2"))
    translated = torch_network(tmp_path / "model.pt2")(numeric.numpy(), categorical.numpy())
    with torch.no_grad():
        expected = model(numeric, categorical).numpy()
    np.testing.assert_allclose(np.asarray(translated), expected, rtol=1e-5, atol=1e-6)


def test_a_program_with_an_op_the_converter_lacks_is_refused_by_name(model_dir, tmp_path):
    scaled = broken_copy(model_dir, tmp_path / "scaled", ConstantOutput)  # adds aten mul and add
    with pytest.raises(EdgeConversionError, match=r"uses aten\.add\.Tensor, aten\.mul\.Tensor, which the TFLite"):
        torch_network(scaled / "model.pt2")


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
def edge_of(model_uri: str, eval_uri: str, train_uri: str, on_gate_failure: str = "fail"):
    model = dsl.importer(artifact_uri=model_uri, artifact_class=Model, reimport=False)
    eval_data = dsl.importer(artifact_uri=eval_uri, artifact_class=Dataset, reimport=False)
    train_data = dsl.importer(artifact_uri=train_uri, artifact_class=Dataset, reimport=False)
    export_edge_component(model=model.output, eval_data=eval_data.output, train_data=train_data.output,
                          on_gate_failure=on_gate_failure).set_display_name("export edge")


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
                                  "train_uri": str(data_dir / "train.parquet"), "on_gate_failure": "omit"},
                        tmp_path / "runs")
    outputs = json.loads((run_dir / "export-edge" / "executor_output.json").read_text())["artifacts"]
    float32 = outputs["tflite_float32"]["artifacts"][0]["metadata"]
    model_file = run_dir / "export-edge" / "tflite_float32" / float32["file"]
    assert float32["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert float32["runtime"] == "litert" and float32["gate"] == "passed" and float32["max_abs_delta_p"] <= 1e-5
    int8 = outputs["tflite_int8"]["artifacts"][0]["metadata"]  # kept, or left out with the figures that failed
    assert int8.get("gate") == "passed" or int8["reason"].startswith("gate failed: ")
    assert outputs["onnx_int8"]["artifacts"][0]["metadata"] == {
        "produced": False, "reason": "the TensorFlow export has no ONNX file"}
    assert "| tflite_float32 | litert |" in (run_dir / "export-edge" / "report").read_text()
