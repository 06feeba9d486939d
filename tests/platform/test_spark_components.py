"""The data components with engine="spark" on a cluster: the component's body runs one SparkApplication
through the launcher against a real API server (envtest) with the simulated Spark Operator
(tests/kubeharness/controllers/spark_operator.py), and applies what the job reports to its artifacts.

envtest runs no kubelet: the test plays it, running the driver pod's command (the spark image's driver script
with the application's arguments) in a process with the pod's environment, then setting the pod's phase and
exit code. The artifacts live on moto's S3 server, which the step and the driver both reach.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl

from dmlops.components.validation import validate
from dmlops.data.spark_application import spark_component
from dmlops.data.validation import infer_schema, schema_json
from dmlops.platform import resource_name
from dmlops.platform.storage import filesystem

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "run-5p4rk-component"
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
BUCKET = "lake"
ARTIFACTS = f"s3://{BUCKET}/v2/artifacts/flights/{RUN_ID}"


@pytest.fixture
def s3(s3_server, monkeypatch) -> str:
    """Bucket "lake" on moto's S3 server, which the step's AWS_ENDPOINT_URL names."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    client = boto3.client("s3", endpoint_url=s3_server)
    if BUCKET not in [bucket["Name"] for bucket in client.list_buckets()["Buckets"]]:
        client.create_bucket(Bucket=BUCKET)
    return s3_server


def artifact(kind, task_output: str, folder: Path):
    """A KFP artifact at ``ARTIFACTS/task_output`` whose local file (as KFP's launcher mounts it) is under ``folder``."""
    made = kind(uri=f"{ARTIFACTS}/{task_output}")
    made._custom_path = str(folder / task_output.replace("/", "-"))
    return made


def flights_rows(rows: int = 300) -> pa.Table:
    return pa.table({
        "carrier": [("UA", "AA", "DL")[i % 3] for i in range(rows)],
        "dep_delay": [float(i % 40 - 5) for i in range(rows)],
        "distance": [200 + (i * 37) % 2500 for i in range(rows)],
    })


@pytest.fixture
def inputs(s3, tmp_path) -> dict:
    """The dataset and its inferred schema at their S3 URIs, as the ingest and infer_schema steps left them."""
    pq.write_table(flights_rows(), tmp_path / "data.parquet")
    (tmp_path / "schema.json").write_text(schema_json(infer_schema(tmp_path / "data.parquet")))
    made = {"dataset": artifact(dsl.Dataset, "ingest/data", tmp_path / "in"),
            "schema": artifact(dsl.Artifact, "infer-schema/schema", tmp_path / "in")}
    for name, local in (("dataset", "data.parquet"), ("schema", "schema.json")):
        store, path = filesystem(made[name].uri)
        store.put(str(tmp_path / local), path)
    return made


def validate_outputs(folder: Path) -> dict:
    return {"report": artifact(dsl.Artifact, "validate/report", folder),
            "metrics": artifact(dsl.Metrics, "validate/metrics", folder),
            "html": artifact(dsl.HTML, "validate/html", folder)}


# -- the in-process path is unchanged ------------------------------------------------------------------


@pytest.mark.parametrize("engine, backend", [("duckdb", "kubernetes"), ("duckdb", "auto"), ("spark", "local")])
def test_without_spark_on_kubernetes_the_component_runs_in_its_own_process(engine, backend, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-cluster"))  # a job on a cluster would fail to connect
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    dataset = dsl.Dataset(uri="s3://lake/never-read")
    assert spark_component("validate", {"dataset": dataset}, {"report": dataset}, {}, engine=engine,
                           backend=backend, run_id=RUN_ID, task_name="validate") is None
    with pytest.raises(ValueError, match="unknown backend 'cluster'"):
        spark_component("validate", {"dataset": dataset}, {"report": dataset}, {}, engine="duckdb",
                        backend="cluster", run_id=RUN_ID, task_name="validate")


def test_validate_with_duckdb_on_backend_kubernetes_writes_its_report_here(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-cluster"))
    pq.write_table(flights_rows(), tmp_path / "data.parquet")
    (tmp_path / "schema.json").write_text(schema_json(infer_schema(tmp_path / "data.parquet")))
    dataset, schema = dsl.Dataset(uri=str(tmp_path / "data.parquet")), dsl.Artifact(uri=str(tmp_path / "schema.json"))
    outputs = {name: kind(uri=str(tmp_path / name)) for name, kind in
               (("report", dsl.Artifact), ("metrics", dsl.Metrics), ("html", dsl.HTML))}
    validate.python_func(dataset=dataset, schema=schema, **outputs, engine="duckdb", backend="kubernetes",
                         run_id=RUN_ID, task_name="validate")
    assert json.loads((tmp_path / "report").read_text())["passed"] is True
    assert outputs["report"].metadata["rows"] == 300


# -- engine="spark" on a cluster ---------------------------------------------------------------------


@pytest.fixture
def cluster(request, monkeypatch, tmp_path):
    """envtest with the simulated Spark Operator, a namespace with the driver's service account, and
    KUBECONFIG pointing at it with that namespace as the context's (the step's own); skips without envtest."""
    import yaml
    from kubeharness.kubeflow import Kubeflow

    server = request.getfixturevalue("kube_api")
    namespace = request.getfixturevalue("kube_namespace")
    kubeconfig = yaml.safe_load(server.kubeconfig.read_text())
    for context in kubeconfig["contexts"]:
        context["context"]["namespace"] = namespace
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    with Kubeflow.from_api_server(server) as kubeflow:
        kubeflow.kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "dmlops-spark"}})
        monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield kubeflow, namespace
        kubeflow.raise_errors()


def _state(kubeflow, namespace: str, name: str) -> str:
    app = kubeflow.kube.get_custom(*SPARK[:2], SPARK[2], namespace, name) or {}
    return (app.get("status") or {}).get("applicationState", {}).get("state", "")


def _set_driver(kubeflow, namespace: str, pod: str, phase: str, exit_code: int | None = None) -> None:
    """Play the kubelet: the driver's phase and, when it ended, its container's exit."""
    status: dict = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{
            "name": "spark-kubernetes-driver", "image": "spark", "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}}]
    kubeflow.kube.core.patch_namespaced_pod_status(pod, namespace, {"status": status})


def run_driver(pod: dict) -> subprocess.CompletedProcess:
    """The driver container as the spark image runs it: the driver script with the pod's arguments and
    environment (the simulated spark-submit's master, local[1]); the credentials of moto's store, which a
    cluster gives through the node's or service account's identity, added."""
    container = pod["spec"]["containers"][0]
    operation, arguments = container["command"][-2:]
    env = {item["name"]: item["value"] for item in container.get("env", [])}
    env.update({"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "DMLOPS_SPARK_MASTER": "local[1]",
                "PYTHONPATH": str(REPO / "src"), "PYSPARK_PYTHON": sys.executable,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"})
    if os.environ.get("JAVA_HOME"):
        env["JAVA_HOME"] = os.environ["JAVA_HOME"]
    return subprocess.run([sys.executable, str(REPO / "src" / "dmlops" / "data" / "spark_driver.py"), operation,
                           arguments], env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture
def spark_driver_runtime() -> None:
    """What the driver process needs here: pyspark and a Java runtime; skips without them."""
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'dmlops[spark]'")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("no Java runtime (Debian: apt-get install default-jre-headless)")


@pytest.mark.envtest
def test_validate_with_spark_on_kubernetes_runs_one_spark_application_and_applies_its_report(
        spark_driver_runtime, cluster, inputs, tmp_path):
    kubeflow, namespace = cluster
    outputs = validate_outputs(tmp_path / "out")
    outcome: dict = {}

    def step():
        try:
            validate.python_func(**inputs, **outputs, fail_on="error", engine="spark", backend="kubernetes",
                                 run_id=RUN_ID, task_name="validate")
        except BaseException as error:  # noqa: BLE001 - checked by the test
            outcome["error"] = error

    thread = threading.Thread(target=step, daemon=True)
    thread.start()
    name = resource_name("spark", RUN_ID, "validate")
    kubeflow.wait_for(lambda: "error" in outcome or _state(kubeflow, namespace, name) == "SUBMITTED",
                      what="SUBMITTED", timeout=60)
    assert "error" not in outcome, outcome.get("error")
    apps = kubeflow.kube.custom.list_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2])["items"]
    assert [app["metadata"]["name"] for app in apps] == [name]
    operation, arguments = apps[0]["spec"]["arguments"]
    assert operation == "validate"
    assert json.loads(arguments) == {
        "dataset": f"{ARTIFACTS}/ingest/data", "schema": f"{ARTIFACTS}/infer-schema/schema",
        "report": f"{ARTIFACTS}/validate/report", "html": f"{ARTIFACTS}/validate/html", "fail_on": "error",
        "metadata": f"{ARTIFACTS}/validate/report-spark-metadata.json"}

    pod = kubeflow.kube.read("Pod", namespace, f"{name}-driver")
    _set_driver(kubeflow, namespace, f"{name}-driver", "Running")
    driver = run_driver(pod)
    assert driver.returncode == 0, driver.stderr[-3000:]
    _set_driver(kubeflow, namespace, f"{name}-driver", "Succeeded", exit_code=0)
    thread.join(120)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")

    report = json.loads(Path(outputs["report"].path).read_text())  # the driver's report, downloaded
    store, path = filesystem(outputs["report"].uri)
    assert report == json.loads(store.cat_file(path))
    assert (report["passed"], report["rows"]) == (True, 300)
    assert outputs["report"].metadata == {"passed": True, "rows": 300, "checks": report["checks"], "errors": 0,
                                          "warnings": 0}
    assert (outputs["metrics"].metadata["rows"], outputs["metrics"].metadata["passed"]) == (300, 1)
    assert "null_fraction.dep_delay" in outputs["metrics"].metadata
    assert "<html" in Path(outputs["html"].path).read_text().lower()

    in_process = {name: kind(uri=str(tmp_path / "duckdb" / name)) for name, kind in
                  (("report", dsl.Artifact), ("metrics", dsl.Metrics), ("html", dsl.HTML))}  # the step run here
    (tmp_path / "duckdb").mkdir()
    local_inputs = {name: dsl.Artifact(uri=str(tmp_path / "duckdb" / f"in-{name}")) for name in inputs}
    for name, made in inputs.items():
        store, path = filesystem(made.uri)
        store.get(path, local_inputs[name].path)
    validate.python_func(**local_inputs, **in_process, engine="duckdb", backend="local")
    assert outputs["report"].metadata == in_process["report"].metadata
    assert outputs["metrics"].metadata == pytest.approx(in_process["metrics"].metadata, abs=1e-9)
