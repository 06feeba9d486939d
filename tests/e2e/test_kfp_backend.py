"""The KFP backend of the harness: each task a pod in its component's image, artifacts through MinIO (S3),
as the pipeline-runner ServiceAccount under the project's Role."""

import json

import pytest
from kfp import compiler, dsl
from kfp.dsl import Dataset, Input, Output

from dmlops.images import BASE_IMAGE
from kubeharness.kfp import KfpBackend, UnsupportedPipeline, load_pipeline


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def write_rows(count: int, table: Output[Dataset]) -> int:
    with open(table.path, "w") as stream:
        stream.writelines(f"row {index}\n" for index in range(count))
    table.metadata["rows"] = count
    return count * 2


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def read_rows(table: Input[Dataset], doubled: int) -> str:
    import json
    import os
    from pathlib import Path

    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    config.load_incluster_config()
    namespace = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read_text()
    core = client.CoreV1Api()
    allowed = {"list pods": True, "list secrets": True}
    for verb, call in (("list pods", core.list_namespaced_pod), ("list secrets", core.list_namespaced_secret)):
        try:
            call(namespace)
        except ApiException as error:
            allowed[verb] = error.status != 403
    return json.dumps({
        "rows": len(Path(table.path).read_text().splitlines()), "doubled": doubled, "path": table.path,
        "metadata_rows": table.metadata.get("rows"), "cwd_entries": sorted(os.listdir(".")),
        "credentials_visible": sorted(name for name in os.environ if "SECRET" in name or "ACCESS_KEY" in name),
        "allowed": allowed,
    })


@dsl.pipeline(name="rows")
def rows_pipeline(count: int = 3):
    written = write_rows(count=count)
    read_rows(table=written.outputs["table"], doubled=written.outputs["Output"])


@dsl.pipeline(name="conditional")
def conditional_pipeline(count: int = 3):
    written = write_rows(count=count)
    with dsl.If(written.outputs["Output"] > 2):
        read_rows(table=written.outputs["table"], doubled=written.outputs["Output"])


def test_refuses_what_it_does_not_run(tmp_path):
    compiler.Compiler().compile(conditional_pipeline, str(tmp_path / "conditional.yaml"))
    spec, platform = load_pipeline(tmp_path / "conditional.yaml")
    backend = KfpBackend(api=None, namespace="unused", s3=None)  # refused before any API call
    with pytest.raises(UnsupportedPipeline, match="nested pipelines|conditions"):
        backend.run(spec, platform=platform)


@pytest.mark.cluster
def test_tasks_run_as_pods_with_artifacts_on_minio(pipeline_cluster, tmp_path):
    pipeline_cluster.require_images(BASE_IMAGE)
    compiler.Compiler().compile(rows_pipeline, str(tmp_path / "rows.yaml"))
    spec, platform = load_pipeline(tmp_path / "rows.yaml")

    run = pipeline_cluster.kfp.run(spec, {"count": 4}, platform)

    written, read = run.tasks["write-rows"], run.tasks["read-rows"]
    assert written.parameters == {"Output": 8}
    table = written.artifacts["table"]
    assert table["uri"] == f"minio://mlpipeline/v2/artifacts/rows/{run.run_id}/write-rows/table"
    assert table["metadata"]["rows"] == 4
    body = pipeline_cluster.store.client().get_object(
        Bucket="mlpipeline", Key=f"v2/artifacts/rows/{run.run_id}/write-rows/table")["Body"].read()
    assert body.decode().splitlines() == ["row 0", "row 1", "row 2", "row 3"]
    seen = json.loads(read.parameters["Output"])
    # Downloaded by the launcher to the path KFP's SDK maps the minio:// URI to, in a fresh pod.
    assert seen["rows"] == 4 and seen["doubled"] == 8 and seen["metadata_rows"] == 4
    assert seen["path"] == f"/minio/mlpipeline/v2/artifacts/rows/{run.run_id}/write-rows/table"
    assert seen["credentials_visible"] == []
    # pipeline-runner under manifests/base/rbac.yaml: pods yes, secrets no.
    assert seen["allowed"] == {"list pods": True, "list secrets": False}
    from kubernetes import client

    with pipeline_cluster.kube.api_client() as api:
        pods = client.CoreV1Api(api).list_namespaced_pod(pipeline_cluster.namespace,
                                                         label_selector=f"pipeline/runid={run.run_id}").items
    assert {pod.spec.containers[0].image for pod in pods} == {BASE_IMAGE}
    assert {pod.spec.service_account_name for pod in pods} == {"pipeline-runner"}
    assert {pod.status.phase for pod in pods} == {"Succeeded"} and len(pods) == 2
    for task in run.tasks.values():
        print(f"{task.name}: pod start {task.start_overhead_s:.2f} s, launcher {task.launcher}")
