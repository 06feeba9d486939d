"""A 3-class and a regression label through train -> evaluate -> deploy, the components loaded from their
YAML in a kfp.local pipeline, ending with the served model answering a request.

The 3-class set is scikit-learn's wine (shipped with it, no download), its cultivars as names, so the
class list is recorded and mapped back; the regression set is generated, with a categorical effect.
"""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from kfp import dsl, local

from component_yaml import load_yaml_component
from dmlops.serving.local import EndpointState, stop_endpoints

train = load_yaml_component("training", "train")
evaluate = load_yaml_component("training", "evaluate")
deploy = load_yaml_component("serving", "deploy")

CULTIVARS = np.array(["barolo", "grignolino", "barbera"])


def write_wine(folder: Path) -> dict[str, str]:
    """scikit-learn's 178 wines: 13 measurements and the cultivar's name; 128 to train, 50 to evaluate."""
    from sklearn.datasets import load_wine

    wine = load_wine()
    order = np.random.default_rng(0).permutation(len(wine.target))
    paths = {}
    for split, rows in (("train", order[:128]), ("eval", order[128:])):
        columns = {name.replace("/", "_"): wine.data[rows, index] for index, name in enumerate(wine.feature_names)}
        paths[split] = str(folder / f"wine-{split}.parquet")
        pq.write_table(pa.table({**columns, "cultivar": CULTIVARS[wine.target[rows]]}), paths[split])
    return paths


def regression_table(rows: int, seed: int) -> pa.Table:
    """price = 50 + 10 x0 - 5 x1 ± 8 by region + noise (sd 2); x2 is noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    region = rng.choice(["coast", "inland"], rows)
    price = 50 + 10 * x[:, 0] - 5 * x[:, 1] + np.where(region == "coast", 8.0, -8.0) + rng.normal(scale=2.0, size=rows)
    return pa.table({"x0": x[:, 0], "x1": x[:, 1], "x2": x[:, 2], "region": region, "price": price})


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    pytest.importorskip("sklearn")
    folder = tmp_path_factory.mktemp("tasks")
    regression = {"train": str(folder / "price-train.parquet"), "eval": str(folder / "price-eval.parquet")}
    pq.write_table(regression_table(800, seed=0), regression["train"])
    pq.write_table(regression_table(200, seed=1), regression["eval"])
    return {"multiclass": write_wine(folder), "regression": regression}


def run_pipeline(paths: dict[str, str], label: str, endpoint: str, root: Path) -> dict[str, dict]:
    """train -> evaluate -> deploy (local backend); the executor outputs of each step by name."""

    @dsl.pipeline
    def train_evaluate_deploy(train_uri: str, eval_uri: str):
        train_data = dsl.importer(artifact_uri=train_uri, artifact_class=dsl.Dataset)
        eval_data = dsl.importer(artifact_uri=eval_uri, artifact_class=dsl.Dataset)
        trained = train(train_data=train_data.output, eval_data=eval_data.output, label=label, num_workers=2,
                        epochs=30, batch_size=32, learning_rate=0.01, hidden_units=[32, 16], max_restarts=0)
        evaluate(model=trained.outputs["model"], eval_data=eval_data.output)
        deploy(model=trained.outputs["model"], eval_data=eval_data.output, endpoint=endpoint, backend="local",
               smoke_requests=3, window_requests=10)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    train_evaluate_deploy(train_uri=paths["train"], eval_uri=paths["eval"])
    return {path.parent.name: json.loads(path.read_text()) for path in root.rglob("executor_output.json")}


def metadata_of(outputs: dict, step: str, artifact: str) -> dict:
    return outputs[step]["artifacts"][artifact]["artifacts"][0]["metadata"]


def ask_v2(endpoint: str, rows: list[dict]) -> dict[str, dict]:
    """The endpoint's V2 answer to ``rows`` (one input tensor per feature), its outputs by name."""
    server = EndpointState.load(endpoint).stable
    inputs = [{"name": name, "shape": [len(rows)], "datatype": "BYTES" if isinstance(rows[0][name], str) else "FP64",
               "data": [row[name] for row in rows]} for name in rows[0]]
    answer = requests.post(f"{server.url}/v2/models/{endpoint}/infer", json={"inputs": inputs}, timeout=30)
    assert answer.status_code == 200, answer.text
    return {output["name"]: output for output in answer.json()["outputs"]}


@pytest.mark.slow
def test_a_three_class_label_trains_evaluates_deploys_and_answers_with_class_names(datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    paths = datasets["multiclass"]
    try:
        outputs = run_pipeline(paths, "cultivar", "wine", tmp_path / "root")
        model = metadata_of(outputs, "train", "model")
        assert model["task"] == "multiclass" and model["classes"] == ["barbera", "barolo", "grignolino"]
        trained = metadata_of(outputs, "train", "metrics")
        evaluated = metadata_of(outputs, "evaluate", "metrics")
        assert evaluated["accuracy"] >= 0.9 and evaluated["macro_f1"] >= 0.9 and evaluated["rows"] == 50
        for name in ("accuracy", "macro_f1", "log_loss", "auc_ovr"):
            assert evaluated[name] == pytest.approx(trained[name], abs=1e-6), name
        matrix = metadata_of(outputs, "evaluate", "classification")["confusionMatrix"]
        assert [item["displayName"] for item in matrix["annotationSpecs"]] == model["classes"]
        assert sum(map(sum, (row["row"] for row in matrix["rows"]))) == 50
        assert outputs["deploy"]["parameterValues"]["decision"] == "first-deploy"

        table = pq.read_table(paths["eval"])
        rows = table.drop_columns(["cultivar"]).slice(0, 20).to_pylist()
        answer = requests.post(EndpointState.load("wine").stable.predict_url, json={"instances": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        for prediction in predictions:
            probabilities = prediction["probabilities"]
            assert sorted(probabilities) == model["classes"] and sum(probabilities.values()) == pytest.approx(1.0)
            assert prediction["label"] == max(probabilities, key=probabilities.get)
        truth = table["cultivar"].to_pylist()[:20]
        assert np.mean([p["label"] == t for p, t in zip(predictions, truth)]) >= 0.85
        v2 = ask_v2("wine", rows[:3])
        assert v2["label"]["data"] == [prediction["label"] for prediction in predictions[:3]]
        assert v2["probabilities"]["shape"] == [3, 3]
        np.testing.assert_allclose(np.reshape(v2["probabilities"]["data"], (3, 3)),
                                   [[p["probabilities"][name] for name in model["classes"]] for p in predictions[:3]],
                                   rtol=1e-5, atol=1e-7)  # V2 sends the features as FP64 tensors
    finally:
        stop_endpoints()


@pytest.mark.slow
def test_a_regression_label_trains_evaluates_deploys_and_answers_in_the_labels_units(datasets, tmp_path, monkeypatch):
    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    paths = datasets["regression"]
    try:
        outputs = run_pipeline(paths, "price", "price", tmp_path / "root")
        assert metadata_of(outputs, "train", "model")["task"] == "regression"
        trained = metadata_of(outputs, "train", "metrics")
        evaluated = metadata_of(outputs, "evaluate", "metrics")
        assert evaluated["r2"] >= 0.9 and evaluated["rmse"] < 4.0 and evaluated["rows"] == 200  # noise sd 2
        for name in ("rmse", "mae", "r2"):
            assert evaluated[name] == pytest.approx(trained[name], rel=1e-5), name
        assert "confusionMatrix" not in metadata_of(outputs, "evaluate", "classification")

        table = pq.read_table(paths["eval"])
        rows = table.drop_columns(["price"]).slice(0, 50).to_pylist()
        answer = requests.post(EndpointState.load("price").stable.predict_url, json={"instances": rows}, timeout=30)
        assert answer.status_code == 200, answer.text
        values = np.array(answer.json()["predictions"], dtype=np.float64)
        truth = table["price"].to_numpy()[:50]
        assert values.shape == (50,) and np.sqrt(np.mean((values - truth) ** 2)) < 4.0
        np.testing.assert_allclose(ask_v2("price", rows[:3])["value"]["data"], values[:3], rtol=1e-5)
    finally:
        stop_endpoints()
