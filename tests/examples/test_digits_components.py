"""The digits CNN and the Keras digits model as another team runs them: train (the example's source as the
entrypoint) -> evaluate -> deploy, the components loaded from their YAML in a kfp.local pipeline, then
the endpoint answers a request. evaluate and deploy take the user's export with a Dataset of its inputs
(a ``pixels`` column) and labels."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests
from kfp import dsl, local

from component_yaml import load_yaml_component
from dmlops.serving.local import EndpointState, stop_endpoints
from dmlops.training.worker import function_entrypoint

train = load_yaml_component("training", "train")
evaluate = load_yaml_component("training", "evaluate")
deploy = load_yaml_component("serving", "deploy")


def run_digits(entrypoint: str, strategy: str, endpoint: str, tmp_path) -> dict[str, dict]:
    from examples.digits_torch import digits_data, digits_inputs

    @dsl.pipeline
    def digits_through_yaml():
        data = digits_data()
        inputs = digits_inputs(digits=data.outputs["eval_data"])
        trained = train(train_data=data.outputs["train_data"], eval_data=data.outputs["eval_data"],
                        entrypoint=entrypoint, entrypoint_args={"epochs": 3}, strategy=strategy, num_workers=2,
                        max_restarts=0)
        evaluate(model=trained.outputs["model"], eval_data=inputs.outputs["inputs"])
        deploy(model=trained.outputs["model"], eval_data=inputs.outputs["inputs"], endpoint=endpoint,
               backend="local", smoke_requests=3, window_requests=10)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    digits_through_yaml()
    return {path.parent.name: json.loads(path.read_text()) for path in (tmp_path / "root").rglob("executor_output.json")}


def check_evaluated_deployed_and_answering(outputs: dict, endpoint: str, tmp_path) -> None:
    trained = outputs["train"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    evaluated = outputs["evaluate"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert evaluated["task"] == "multiclass" and evaluated["rows"] == 450
    assert evaluated["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-9) and evaluated["accuracy"] > 0.85
    assert evaluated["log_loss"] < 0.6 and evaluated["macro_f1"] > 0.85
    matrix = outputs["evaluate"]["artifacts"]["classification"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert [spec["displayName"] for spec in matrix["annotationSpecs"]] == [str(digit) for digit in range(10)]
    assert outputs["deploy"]["parameterValues"]["decision"] == "first-deploy"

    inputs = next((tmp_path / "root").rglob("digits-inputs/inputs"))
    table = pq.read_table(inputs)
    pixels = table["pixels"].to_pylist()
    answer = requests.post(EndpointState.load(endpoint).stable.predict_url, json={"instances": pixels}, timeout=60)
    assert answer.status_code == 200, answer.text
    logits = np.array(answer.json()["predictions"])
    assert logits.shape == (450, 10)
    assert np.mean(logits.argmax(1) == table["digit"].to_numpy()) == pytest.approx(evaluated["accuracy"])


@pytest.mark.slow
def test_the_digits_cnn_trains_evaluates_deploys_and_answers_through_the_component_yamls(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    from examples.digits_torch import train as digits_cnn

    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    try:
        outputs = run_digits(function_entrypoint(digits_cnn), "torch-ddp", "digits-cnn", tmp_path)
        check_evaluated_deployed_and_answering(outputs, "digits-cnn", tmp_path)
    finally:
        stop_endpoints()


@pytest.mark.slow
def test_the_keras_digits_model_trains_evaluates_deploys_and_answers_through_the_component_yamls(tmp_path,
                                                                                                monkeypatch):
    pytest.importorskip("sklearn")
    pytest.importorskip("tensorflow")
    from examples.digits_keras import train as digits_keras

    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    try:
        outputs = run_digits(function_entrypoint(digits_keras), "tf-multiworker", "digits-keras", tmp_path)
        check_evaluated_deployed_and_answering(outputs, "digits-keras", tmp_path)
    finally:
        stop_endpoints()
