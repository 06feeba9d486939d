"""The deploy component in a kfp.local pipeline: its model server outlives the step."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

from dmlops.serving.local import EndpointState, stop_endpoints


@pytest.mark.slow
def test_deploy_component_leaves_a_live_local_endpoint(model_dir, data_dir, eval_rows, tmp_path, monkeypatch):
    from kfp import dsl, local

    from component_yaml import load_yaml_component

    deploy = load_yaml_component("serving", "deploy")

    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))

    @dsl.pipeline
    def pipeline():
        model = dsl.importer(artifact_uri=str(model_dir), artifact_class=dsl.Model)
        eval_data = dsl.importer(artifact_uri=str(data_dir / "eval.parquet"), artifact_class=dsl.Dataset)
        deploy(model=model.output, eval_data=eval_data.output, endpoint="flights-delay", backend="local",
               smoke_requests=3, window_requests=10)

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    try:
        pipeline()
        outputs = json.loads(next((tmp_path / "root").rglob("deploy/executor_output.json")).read_text())
        parameters = outputs["parameterValues"]
        assert parameters["decision"] == "first-deploy"
        state = EndpointState.load("flights-delay")
        assert state.stable is not None and parameters["predict_url"] == state.stable.predict_url
        response = requests.post(parameters["predict_url"], json={"instances": eval_rows[:2]}, timeout=10)
        assert response.status_code == 200 and len(response.json()["predictions"]) == 2
        metrics = outputs["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        assert metrics["promoted"] == 1.0 and metrics["decision"] == "first-deploy"
        command = state.query_command()
        answer = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=30, check=True)
        assert len(json.loads(answer.stdout)["predictions"]) == 1
        report = next((tmp_path / "root").rglob("deploy/report")).read_text()
        assert "**Decision: first-deploy**" in report
    finally:
        assert stop_endpoints() == ["flights-delay"]
