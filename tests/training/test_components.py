"""The train and evaluate components, loaded from their YAML, inside a pipeline run by kfp.local (backend
"local")."""

import json

import pytest
from kfp import dsl, local

from component_yaml import load_yaml_component

train = load_yaml_component("training", "train")
evaluate = load_yaml_component("training", "evaluate")


@pytest.mark.slow
def test_train_then_evaluate_in_a_local_pipeline(tabular, tmp_path):
    @dsl.pipeline
    def train_and_evaluate(train_uri: str, eval_uri: str):
        train_data = dsl.importer(artifact_uri=train_uri, artifact_class=dsl.Dataset)
        eval_data = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset)
        trained = train(train_data=train_data.output, eval_data=eval_data.output, label="label",
                        num_workers=2, epochs=2, batch_size=64, learning_rate=0.01, hidden_units=[16, 8],
                        exclude_features=["count"])
        evaluate(model=trained.outputs["model"], eval_data=eval_data.output)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path), raise_on_error=True)
    train_and_evaluate(train_uri=tabular["train"], eval_uri=tabular["eval"])

    outputs = {path.parent.name: json.loads(path.read_text())["artifacts"]
               for path in tmp_path.rglob("executor_output.json")}
    trained, evaluated = outputs["train"], outputs["evaluate"]
    model = trained["model"]["artifacts"][0]["metadata"]
    assert model["framework"] == "torch" and model["workers"] == 2
    assert set(model["files_sha256"]) == {"model.pt2", "model.onnx"}
    assert model["inputs"]["numeric"]["columns"] == ["signal"]  # "count" excluded
    train_auc = trained["metrics"]["artifacts"][0]["metadata"]["auc"]
    assert evaluated["metrics"]["artifacts"][0]["metadata"]["auc"] == pytest.approx(train_auc, abs=1e-6)
    roc = evaluated["classification"]["artifacts"][0]["metadata"]
    assert roc["confusionMatrix"]["rows"] and roc["confidenceMetrics"]
