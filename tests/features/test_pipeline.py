"""The flights feature steps end to end with kfp.local, on the January slices, each component loaded from
its checked-in YAML as another team would load it."""

from typing import NamedTuple

import pandas as pd
import pytest
from kfp import dsl, local
from kfp.dsl import Dataset

from dmlops.features import local_store_spec, online_features
from dmlops.pipelines.flights_features import FEATURES
from component_yaml import load_yaml_component
from dmlops.pipelines import flights_features_pipeline
from dmlops.pipelines.flights_features_pipeline import flights_features

YAML_COMPONENTS = {
    "derive_columns": "data", "running_means": "features", "feast_source": "features", "feast_apply": "features",
    "feast_materialize": "features", "feast_online_features": "features", "feast_training_set": "features",
}


class FeatureSetOutputs(NamedTuple):
    training_set: Dataset
    eval_set: Dataset


@pytest.mark.slow
def test_flights_features_pipeline(flights_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, area in YAML_COMPONENTS.items():
        monkeypatch.setattr(flights_features_pipeline, name, load_yaml_component(area, name))
    store = local_store_spec("feature_store", project="flights")  # relative: each step resolves it here

    @dsl.pipeline
    def wrapper(train: str, eval: str, weather: str, planes: str) -> FeatureSetOutputs:
        datasets = {name: dsl.importer(artifact_uri=uri, artifact_class=Dataset).output
                    for name, uri in {"train": train, "eval": eval, "weather": weather, "planes": planes}.items()}
        return FeatureSetOutputs(*flights_features(**datasets, store=store, materialize_end="2013-01-15"))

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "runs"), raise_on_error=True)
    run = wrapper(**{name: flights_data[name] for name in ("train", "eval", "weather", "planes")})

    for name, entities in (("training_set", "train"), ("eval_set", "eval")):
        result = pd.read_parquet(run.outputs[name].path)
        assert len(result) == len(pd.read_parquet(flights_data[entities]))
        assert {f"{reference.replace(':', '__')}" for reference in FEATURES} <= set(result.columns)
        assert run.outputs[name].metadata["rows_out"] == len(result)
        assert result["weather__temp"].notna().mean() > 0.9
    values = online_features(store, ["weather:temp", "carrier:flights"], [{"origin": "JFK", "carrier": "UA"}])
    train = pd.read_parquet(flights_data["train"])
    assert values["carrier__flights"] == [(train["carrier"] == "UA").sum()]
