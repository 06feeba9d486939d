"""The flights pipeline end to end on a real node: every task a pod in the image its compiled YAML names,
artifacts on MinIO (S3), tune -> Katib Experiment, train -> PyTorchJob, deploy -> InferenceService, each
reconciled into real pods by the simulated Kubeflow controllers; the test then queries the served model
through its Service, as a client inside the cluster does.
"""

import io
import json
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from kfp import compiler

from dmlops.images import BASE_IMAGE, SERVE_IMAGE, TORCH_IMAGE
from dmlops.pipelines.flights import flights
from dmlops.platform.cluster_settings import ClusterSettings, build_pipeline
from dmlops.serving.deploy import features_of
from kubeharness.kfp import load_pipeline
from kubeharness.s3 import ACCESS_KEY, SECRET_KEY

pytestmark = pytest.mark.cluster

REPOSITORY = Path(__file__).resolve().parents[2]
OBJECT_STORE_SECRET = "dmlops-object-store"
ENDPOINT = "flights-delay"
# Kinds the run may create, counted after it (what a real cluster gets from one run).
COUNTED = ["pods", "services", "deployments.apps", "replicasets.apps", "configmaps", "secrets",
           "experiments.kubeflow.org", "suggestions.kubeflow.org", "trials.kubeflow.org",
           "pytorchjobs.kubeflow.org", "trainjobs.trainer.kubeflow.org", "inferenceservices.serving.kserve.io",
           "jobs.batch", "endpointslices.discovery.k8s.io", "persistentvolumeclaims"]


def compiled_flights(tmp_path: Path) -> tuple[dict, dict | None]:
    """pipelines/flights.yaml's pipeline, compiled with the one cluster setting this cluster needs: the
    object store's endpoint and credentials as environment variables of every task (Feast's registry and
    sources on S3), from a Secret, as a platform team would give them."""
    settings = ClusterSettings(secret_env=[{"secret": OBJECT_STORE_SECRET, "keys": {
        "endpoint": "AWS_ENDPOINT_URL", "accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}}])
    path = tmp_path / "flights.yaml"
    compiler.Compiler().compile(build_pipeline(flights, settings), str(path))
    return load_pipeline(path)


def namespace_objects(node, namespace: str) -> dict[str, set[str]]:
    """The uids of every object of the counted kinds in ``namespace``, by kind."""
    found = {}
    for kind in COUNTED:
        listed = json.loads(node.kubectl("get", kind, "-n", namespace, "-o", "json"))
        found[kind.split(".")[0]] = {item["metadata"]["uid"] for item in listed["items"]}
    return found


def created_since(node, namespace: str, before: dict[str, set[str]]) -> dict[str, int]:
    """How many objects of each kind appeared in ``namespace`` since ``before`` (still there at the end)."""
    after = namespace_objects(node, namespace)
    return {kind: len(uids - before[kind]) for kind, uids in sorted(after.items()) if uids - before[kind]}


@pytest.mark.timeout(3600)  # the node's start and image loads included: minutes on 2 cores
def test_flights_pipeline_on_kubernetes(pipeline_cluster, kubeflow_operators, feast_redis, tmp_path):
    cluster = pipeline_cluster
    cluster.require_images(BASE_IMAGE, TORCH_IMAGE, SERVE_IMAGE)
    spec, platform = compiled_flights(tmp_path)
    images = {executor["container"]["image"] for executor in spec["deploymentSpec"]["executors"].values()}
    assert images == {BASE_IMAGE, TORCH_IMAGE, SERVE_IMAGE}
    cluster.create_secret(OBJECT_STORE_SECRET, endpoint="http://minio-service.kubeflow:9000",
                          accesskey=ACCESS_KEY, secretkey=SECRET_KEY)
    before = namespace_objects(cluster.kube, cluster.namespace)
    started = time.monotonic()
    run = cluster.kfp.run(spec, {
        "backend": "kubernetes", "feast_registry": "s3://mlpipeline/feast/flights/registry.db",
        "feast_redis_connection": f"{feast_redis}:6379", "tuning_trials": 2, "epochs": 1, "num_workers": 2,
        "endpoint": ENDPOINT,
    }, platform)
    wall = time.monotonic() - started

    assert set(run.tasks) == set(spec["root"]["dag"]["tasks"])
    executors = spec["deploymentSpec"]["executors"]
    for name, task in run.tasks.items():
        label = spec["components"][spec["root"]["dag"]["tasks"][name]["componentRef"]["name"]]["executorLabel"]
        assert task.image == executors[label]["container"]["image"]
    trained = run.tasks["train"].artifacts["model"]
    assert trained["uri"].startswith(f"minio://mlpipeline/v2/artifacts/flights/{run.run_id}/train/")
    assert cluster.store.keys(prefix=trained["uri"][len("minio://mlpipeline/"):])

    created = created_since(cluster.kube, cluster.namespace, before)
    print("\nresources created in the pipeline namespace:", json.dumps(created))
    assert created["experiments"] == 1 and created["trials"] == 2
    assert created["pytorchjobs"] == 1 and created["inferenceservices"] == 1

    # Query the served model from a pod, as a client in the cluster does: cluster DNS, the Service's ClusterIP.
    predict_url = run.tasks["deploy"].parameters["predict_url"]
    eval_set = run.tasks["feast-training-set-2"].artifacts["training_set"]
    key = eval_set["uri"][len("minio://mlpipeline/"):]
    parquet = [item for item in cluster.store.keys(prefix=key) if item.endswith(".parquet")] or [key]
    body = cluster.store.client().get_object(Bucket="mlpipeline", Key=parquet[0])["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).slice(0, 3).to_pylist()
    model_key = trained["uri"][len("minio://mlpipeline/"):] + "/metadata.json"
    metadata = json.loads(cluster.store.client().get_object(Bucket="mlpipeline", Key=model_key)["Body"].read())
    features = features_of(metadata)  # the predictor refuses fields the model does not take
    answer = cluster.query_from_pod(SERVE_IMAGE, predict_url,
                                    {"instances": [{name: row[name] for name in features} for row in rows]})
    predictions = answer["predictions"]
    assert len(predictions) == 3, answer
    print("predictions:", json.dumps(predictions)[:300])

    overheads = sorted(task.start_overhead_s for task in run.tasks.values())
    print(f"flights on kubernetes: {len(run.tasks)} task pods, wall {wall:.0f} s; pod start overhead "
          f"median {overheads[len(overheads) // 2]:.2f} s, max {overheads[-1]:.2f} s; images loaded "
          f"{json.dumps({k: round(v, 1) for k, v in cluster.loaded_images.items()})}")
