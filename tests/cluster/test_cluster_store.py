"""The flights pipeline's feature steps on a cluster: each step is its own pod (KFP runs every task in a
pod of its own, sharing nothing but artifacts and parameters), so the Feast store they open must be one
every pod reaches. Checked on the compiled pipeline: for each feature step, the store it receives is
resolved as KFP would (a pipeline parameter, or the output of the task that produces it, run here)."""

from __future__ import annotations

import pytest
import yaml
from kfp import compiler

import dmlops.components as components
from dmlops.features import FeatureStoreError
from dmlops.pipelines.flights import flights

REGISTRY, REDIS = "s3://mlpipeline/feast/flights/registry.db", "redis.feast:6379"


def reachable_from_every_pod(store: dict) -> bool:
    """A registry on object storage (a URI) and a Redis online store: nothing in one pod's filesystem."""
    return "://" in store["registry"]["path"] and store["online_store"]["type"] == "redis"


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("compiled") / "flights.yaml"
    compiler.Compiler().compile(flights, str(path))
    return yaml.safe_load(path.read_text())


def _parameter(spec: dict, arguments: dict, source: dict):
    """The value KFP passes for one task input: a pipeline parameter (argument or default), a constant,
    or the output of the producing task, which is run here (python_func of its component)."""
    if "componentInputParameter" in source:
        name = source["componentInputParameter"]
        return arguments.get(name, spec["root"]["inputDefinitions"]["parameters"][name].get("defaultValue"))
    if "runtimeValue" in source:
        return source["runtimeValue"]["constant"]
    producer = source["taskOutputParameter"]["producerTask"]
    task = spec["root"]["dag"]["tasks"][producer]
    component = getattr(components, task["componentRef"]["name"].removeprefix("comp-").replace("-", "_"))
    inputs = {name: _parameter(spec, arguments, value) for name, value in task["inputs"]["parameters"].items()}
    return component.python_func(**inputs)


def stores_of_feature_steps(spec: dict, arguments: dict) -> dict[str, dict]:
    """The store each step that opens one gets (the step that picks the store is not one of them)."""
    return {name: _parameter(spec, arguments, task["inputs"]["parameters"]["store"])
            for name, task in spec["root"]["dag"]["tasks"].items()
            if "store" in (task.get("inputs") or {}).get("parameters", {})
            and task["componentRef"]["name"] != "comp-feast-store"}


def test_a_kubernetes_run_opens_a_store_every_pod_reaches(spec):
    stores = stores_of_feature_steps(spec, {"backend": "kubernetes", "feast_registry": REGISTRY,
                                            "feast_redis_connection": REDIS})
    assert len(stores) >= 5  # apply, materialize, online lookup, training and eval sets
    for name, store in stores.items():
        assert reachable_from_every_pod(store), f"{name} opens {store['registry']} and {store['online_store']}: not reachable from its pod"
        assert store["registry"]["path"] == REGISTRY and store["online_store"]["connection_string"] == REDIS


def test_a_kubernetes_run_without_a_shared_store_fails_at_its_first_feature_step(spec):
    with pytest.raises(FeatureStoreError, match="registry and redis_connection"):
        stores_of_feature_steps(spec, {"backend": "kubernetes"})


def test_a_local_run_keeps_the_local_store(spec):
    default = spec["root"]["inputDefinitions"]["parameters"]["feature_store"]["defaultValue"]
    stores = stores_of_feature_steps(spec, {"backend": "local"})
    assert stores and all(store == default for store in stores.values())
    assert not reachable_from_every_pod(default)
