"""infer_schema, validate and compare components run in a pipeline with kfp.local."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl, local

from dmlops.components.validation import compare, infer_schema, validate


@pytest.fixture
def datasets(tmp_path):
    rng = np.random.default_rng(3)
    paths = {}
    for name, shift in (("reference", 0.0), ("current", 6.0)):
        paths[name] = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({
            "delay": rng.normal(10.0 + shift, 4.0, 500),
            "carrier": rng.choice(["AA", "UA"], 500),
        }), paths[name])
    return paths


def outputs(root):
    """Each task's executor output (artifact metadata and parameter values), by task name."""
    return {path.parent.name: json.loads(path.read_text()) for path in root.rglob("executor_output.json")}


def test_components_write_schema_report_metrics_html_and_drift(tmp_path, datasets):
    @dsl.pipeline(name="validation-components")
    def checks(reference_uri: str, current_uri: str):
        reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset)
        current = dsl.importer(artifact_uri=current_uri, artifact_class=dsl.Dataset)
        schema = infer_schema(dataset=reference.output, max_categories=10)
        validate(dataset=current.output, schema=schema.outputs["schema"], fail_on="never")
        compare(reference=reference.output, current=current.output, columns=["delay", "carrier"])

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    checks(reference_uri=str(datasets["reference"]), current_uri=str(datasets["current"]))

    steps = outputs(root)
    schema_artifact = steps["infer-schema"]["artifacts"]["schema"]["artifacts"][0]
    assert schema_artifact["metadata"]["types"] == {"delay": "double", "carrier": "string"}
    schema_file = next(root.rglob("infer-schema/schema"))
    assert json.loads(schema_file.read_text())["columns"]["carrier"]["allowed_values"] == ["AA", "UA"]

    validation = steps["validate"]["artifacts"]
    assert validation["report"]["artifacts"][0]["metadata"]["passed"] is False  # delay above its max
    assert validation["metrics"]["artifacts"][0]["metadata"]["errors"] >= 1
    report = json.loads(next(root.rglob("validate/report")).read_text())
    assert {finding["check"] for finding in report["findings"]} == {"range"}
    assert next(root.rglob("validate/html")).read_text().startswith("<!DOCTYPE html>")

    drift = steps["compare"]
    assert drift["parameterValues"]["drifted"] is True
    assert drift["artifacts"]["metrics"]["artifacts"][0]["metadata"]["psi.delay"] > 0.2
    assert "DRIFT" in next(root.rglob("compare/html")).read_text()


def test_validate_fails_the_step_on_errors(tmp_path, datasets):
    @dsl.pipeline(name="validation-fails")
    def strict(reference_uri: str, current_uri: str):
        reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset)
        current = dsl.importer(artifact_uri=current_uri, artifact_class=dsl.Dataset)
        schema = infer_schema(dataset=reference.output)
        validate(dataset=current.output, schema=schema.outputs["schema"])

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    with pytest.raises(RuntimeError, match="validate"):
        strict(reference_uri=str(datasets["reference"]), current_uri=str(datasets["current"]))
