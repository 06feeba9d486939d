"""register_model, deploy from a registry URI and registered_model, loaded from their YAML and run with
kfp.local against a real ``mlflow server``."""

import json
import time

import pyarrow.parquet as pq
import pytest

from component_yaml import load_yaml_component
from dmlops.serving.local import stop_endpoints
from serving.serving_helpers import export_model, make_table

pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")
pytestmark = pytest.mark.slow  # trains a small model and starts a model server

ENDPOINT = "registry-delays"


def _outputs(root, step: str) -> dict:
    return json.loads(next(root.rglob(f"{step}/executor_output.json")).read_text())


def test_register_deploy_from_the_registry_and_read_the_champion_back(mlflow_server, tmp_path, monkeypatch):
    from kfp import dsl, local

    from dmlops.registry.mlflow_registry import get_version, served_at

    pq.write_table(make_table(400, seed=1), tmp_path / "train.parquet")
    pq.write_table(make_table(120, seed=2), tmp_path / "eval.parquet")
    model_dir = export_model(tmp_path, tmp_path / "model", seed=0)
    register_model = load_yaml_component("registry", "register_model")
    registered_model = load_yaml_component("registry", "registered_model")
    deploy = load_yaml_component("serving", "deploy")
    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))

    @dsl.pipeline
    def pipeline(registry: str):
        model = dsl.importer(artifact_uri=str(model_dir), artifact_class=dsl.Model)
        train_data = dsl.importer(artifact_uri=str(tmp_path / "train.parquet"), artifact_class=dsl.Dataset)
        eval_data = dsl.importer(artifact_uri=str(tmp_path / "eval.parquet"), artifact_class=dsl.Dataset)
        before = registered_model(name="delays", registry=registry)
        registered = register_model(model=model.output, name="delays", train_data=train_data.output,
                                    eval_data=eval_data.output, registry=registry, pipeline_run="run-7")
        deployed = deploy(model_uri=registered.outputs["model_uri"], registry=registry, eval_data=eval_data.output,
                          endpoint=ENDPOINT, backend="local", smoke_requests=3, window_requests=10).after(before)
        registered_model(name="delays", registry=registry).after(deployed)

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    try:
        pipeline(registry=mlflow_server)
        assert _outputs(root, "registered-model")["parameterValues"] == {"version": "", "found": False}
        registered = _outputs(root, "register-model")["parameterValues"]
        version = get_version(registered["model_uri"], mlflow_server)
        assert registered["model_uri"] == f"models:/delays/{version.version}"
        assert version.tags["pipeline_run"] == "run-7" and "file_sha256/metadata.json" in version.tags
        assert set(version.aliases) == {"challenger", "champion"}
        assert _outputs(root, "deploy")["parameterValues"]["decision"] == "first-deploy"
        champion = _outputs(root, "registered-model-2")
        assert champion["parameterValues"] == {"version": version.version, "found": True}
        copy = champion["artifacts"]["model"]["artifacts"][0]
        assert copy["metadata"]["version"] == version.version
        served = served_at(ENDPOINT, time.time(), mlflow_server)
        assert (served.model_name, served.model_version, served.action) == ("delays", version.version, "first-deploy")
    finally:
        stop_endpoints()
