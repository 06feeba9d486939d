"""The robustness component, loaded from its YAML, scores a trained model under FGSM, PGD and category
swaps, and fails as a gate when the accuracy drop is too large."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl, local

from component_yaml import load_yaml_component
from dmlops.training.config import TrainConfig
from dmlops.training.robustness import RobustnessGateFailed, assess, gate
from dmlops.training.worker import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("robustness")
    rng = np.random.default_rng(3)
    rows = 600
    distance = rng.uniform(100, 2500, rows)
    origin = rng.choice(["EWR", "JFK", "LGA"], rows)
    label = ((distance > 1300) ^ (rng.random(rows) < 0.1)).astype(np.int64)
    pq.write_table(pa.table({"distance": distance, "origin": origin, "label": label}), root / "data.parquet")
    train(TrainConfig(train_uri=str(root / "data.parquet"), label="label", export_uri=str(root / "model"), epochs=8,
                      batch_size=32, hidden_units=[16], learning_rate=0.01, seed=0))
    return root / "model", root / "data.parquet"


def test_attacks_cost_accuracy_within_the_bound(trained):
    model, data = trained
    still = assess(str(model), str(data), epsilon=0.0)
    assert still.fgsm == still.clean == still.pgd == still.random
    report = assess(str(model), str(data), epsilon=0.5, pgd_steps=5)
    assert report.clean["accuracy"] > 0.8  # the model learned the distance rule
    assert report.pgd["accuracy"] < report.clean["accuracy"] and report.fgsm["accuracy"] < report.clean["accuracy"]
    assert report.pgd["auc"] < report.random["auc"]  # the gradient finds what random moves of the same size miss
    assert set(report.category_swaps) == {"origin"} and report.accuracy_drop > 0
    # the training range bounds the attack: at the range's ends distance cannot be pushed further
    domain = json.loads((model / "metadata.json").read_text())["feature_domain"]["distance"]
    assert domain["min"] < 200 and domain["max"] > 2400
    with pytest.raises(RobustnessGateFailed, match="accuracy drops by"):
        gate(report, max_accuracy_drop=report.accuracy_drop / 2)
    gate(report, max_accuracy_drop=report.accuracy_drop)


def test_robustness_component_from_yaml_gates_a_pipeline(trained, tmp_path):
    model, data = trained
    component = load_yaml_component("training", "robustness")

    @dsl.pipeline(name="robustness-gate")
    def check(model_uri: str, data_uri: str, max_accuracy_drop: float):
        component(model=dsl.importer(artifact_uri=model_uri, artifact_class=dsl.Model).output,
                  eval_data=dsl.importer(artifact_uri=data_uri, artifact_class=dsl.Dataset).output,
                  epsilon=0.5, pgd_steps=5, max_accuracy_drop=max_accuracy_drop)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    check(model_uri=str(model), data_uri=str(data), max_accuracy_drop=1.0)
    (output,) = [path for path in (tmp_path / "root").rglob("executor_output.json") if path.parent.name == "robustness"]
    figures = json.loads(output.read_text())["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert figures["pgd_accuracy"] < figures["clean_accuracy"] and figures["accuracy_drop"] > 0
    with pytest.raises(RuntimeError):
        check(model_uri=str(model), data_uri=str(data), max_accuracy_drop=0.0)
