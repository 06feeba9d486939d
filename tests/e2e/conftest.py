"""End-to-end fixtures: a cluster, an S3 store its pods reach as KFP's MinIO, and a namespace set up as a
Kubeflow Pipelines install sets up a user's namespace (ServiceAccount ``pipeline-runner`` bound to the
project's Role, the MinIO Secret, the launcher) with a :class:`kubeharness.kfp.KfpBackend` on it.

Two clusters, one test:

- the real node (``kube_node``, ``DMLOPS_KUBE_NODE_KIT``): moto's S3 server stands for MinIO behind the
  Service ``kubeflow/minio-service:9000``, Redis runs on this machine behind a Service, Kubeflow's
  controllers and webhooks are simulated (``kubeharness.kubeflow``), images are loaded from Docker;
- a real cluster with real Kubeflow (``DMLOPS_KUBECONFIG``; e.g. kind with KFP standalone, Training
  Operator, Katib and KServe, the images loaded with ``kind load docker-image``): its own MinIO, reached
  by this process at ``DMLOPS_MINIO_URL`` (e.g. ``kubectl port-forward -n kubeflow svc/minio-service
  9000``), Redis as a Deployment in the pipeline namespace (``DMLOPS_REDIS_IMAGE``, default redis:7.2),
  and the real operators.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from kubernetes import client, config

from dmlops.platform.local import free_ports
from kubeharness.cluster_dns import expose_host_port
from kubeharness.kfp import MINIO_SECRET, SERVICE_ACCOUNT, KfpBackend
from kubeharness.listening import wait_listening
from kubeharness.node import KubeNode, docker_images_missing, kube_node  # noqa: F401  (fixture)
from kubeharness.s3 import ACCESS_KEY, BUCKET, SECRET_KEY, S3Unavailable, start_s3

REPOSITORY = Path(__file__).resolve().parents[2]
NAMESPACE = os.environ.get("DMLOPS_E2E_NAMESPACE", "dmlops-e2e")


class RemoteCluster:
    """A real cluster named by ``DMLOPS_KUBECONFIG`` (its current context), with kubectl from PATH."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig

    def api_client(self, token: str | None = None) -> client.ApiClient:
        if token is not None:
            raise ValueError("a real cluster is used with its kubeconfig's credentials")
        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 120) -> str:
        result = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args], input=input,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout


@dataclass
class ObjectStore:
    """This process's view of KFP's artifact store (moto on the node, MinIO on a real cluster)."""

    endpoint: str
    access_key: str
    secret_key: str

    def client(self):
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def keys(self, bucket: str = BUCKET, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@dataclass
class PipelineCluster:
    """What an end-to-end test runs pipelines on: ``kube`` (kubectl, api_client), the artifact store, the
    pipeline namespace and KFP's backend on it."""

    kube: Any
    store: ObjectStore
    namespace: str
    kfp: KfpBackend
    node: KubeNode | None = None
    loaded_images: dict[str, float] = field(default_factory=dict)

    def require_images(self, *images: str) -> None:
        """On the node, load ``images`` from Docker once per session (skip naming those Docker lacks); a real
        cluster must have them already."""
        if self.node is None:
            return
        wanted = [image for image in images if image not in self.loaded_images]
        missing = docker_images_missing(wanted)
        if missing:
            pytest.skip(f"images not built: {', '.join(missing)} (scripts/images.sh builds them with Docker)")
        for image, seconds in self.node.load_images(*wanted).items():
            print(f"\nkube-node: loaded {image} in {seconds:.1f} s")
            self.loaded_images[image] = seconds

    def create_secret(self, name: str, **data: str) -> None:
        """A Secret in the pipeline namespace with ``data``."""
        with self.kube.api_client() as api:
            client.CoreV1Api(api).create_namespaced_secret(self.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name), string_data=data))

    def query_from_pod(self, image: str, url: str, payload: dict, timeout: float = 300) -> dict:
        """POST ``payload`` as JSON to ``url`` from a pod in the pipeline namespace (as a client inside the
        cluster calls a Service: cluster DNS, then the Service's ClusterIP) and return the JSON answer."""
        script = ("import json, os, urllib.request\n"
                  "request = urllib.request.Request(os.environ['URL'], data=os.environ['BODY'].encode(),"
                  " headers={'Content-Type': 'application/json'})\n"
                  "print(urllib.request.urlopen(request, timeout=60).read().decode())\n")
        name = f"query-{int(time.time() * 1000) % 10**8}"
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name, annotations={"sidecar.istio.io/inject": "false"}),
            spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
                name="query", image=image, image_pull_policy="Never", command=["python", "-c", script],
                env=[client.V1EnvVar(name="URL", value=url),
                     client.V1EnvVar(name="BODY", value=json.dumps(payload, default=str))])]))
        with self.kube.api_client() as api:
            core = client.CoreV1Api(api)
            core.create_namespaced_pod(self.namespace, pod)
            deadline = time.monotonic() + timeout
            while (phase := core.read_namespaced_pod(name, self.namespace).status.phase) not in ("Succeeded", "Failed"):
                if time.monotonic() > deadline:
                    raise AssertionError(f"query pod {name} still {phase} after {timeout} s")
                time.sleep(0.5)
            # Raw bytes: with its content preloaded the client parses a log that is JSON and returns the
            # Python repr of it (single quotes), which is no longer JSON.
            log = core.read_namespaced_pod_log(name, self.namespace, _preload_content=False).data.decode()
        if phase != "Succeeded":
            raise AssertionError(f"query of {url} failed:\n{log}")
        return json.loads(log)


# What of manifests/base a pipeline namespace needs here: the Role of the pipeline pods and the ServiceAccount
# KServe reads KFP's artifacts with (the PVC, PrometheusRule and dashboard are for a full install).
NAMESPACE_MANIFESTS = ("rbac.yaml", "kserve-storage.yaml")


def project_manifests(namespace: str, service_account: str = SERVICE_ACCOUNT) -> list[dict]:
    """manifests/base's :data:`NAMESPACE_MANIFESTS` for ``namespace``, the RoleBinding's subject the given
    ServiceAccount."""
    documents = [document for name in NAMESPACE_MANIFESTS
                 for document in yaml.safe_load_all((REPOSITORY / "manifests/base" / name).read_text()) if document]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects", []):
            subject.update(namespace=namespace, name=service_account)
    return documents


# Katib's webhook adds its metrics collector only in namespaces with this label (Katib labels the kubeflow
# namespace with it, manifests/v1beta1/components/namespace/namespace.yaml; Kubeflow's profile controller
# labels every profile namespace); without it no trial reports a metric.
NAMESPACE_LABELS = {"katib.kubeflow.org/metrics-collector-injection": "enabled"}


def _prepare_namespace(kube: Any, store: ObjectStore) -> KfpBackend:
    with kube.api_client() as api:
        client.CoreV1Api(api).create_namespace(client.V1Namespace(
            metadata=client.V1ObjectMeta(name=NAMESPACE, labels=NAMESPACE_LABELS)))
    backend = KfpBackend(kube.api_client(), NAMESPACE, store)
    backend.install(store.access_key, store.secret_key)
    kube.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(project_manifests(NAMESPACE)))
    kube.kubectl("apply", "--server-side", "-k", str(REPOSITORY / "manifests" / "cluster"))
    return backend


def _remote_cluster(kubeconfig: Path) -> PipelineCluster:
    minio_url = os.environ.get("DMLOPS_MINIO_URL")
    if not minio_url:
        pytest.skip("DMLOPS_KUBECONFIG is set but DMLOPS_MINIO_URL is not (where this process reaches KFP's "
                    "MinIO, e.g. after kubectl port-forward -n kubeflow svc/minio-service 9000)")
    kube = RemoteCluster(kubeconfig)
    with kube.api_client() as api:
        secret = client.CoreV1Api(api).read_namespaced_secret(MINIO_SECRET, "kubeflow").data
    store = ObjectStore(minio_url, *(base64.b64decode(secret[key]).decode() for key in ("accesskey", "secretkey")))
    return PipelineCluster(kube, store, NAMESPACE, _prepare_namespace(kube, store))


@pytest.fixture(scope="session")
def pipeline_cluster(request: pytest.FixtureRequest,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineCluster]:
    """The cluster the end-to-end tests run on (see the module docstring); skips naming what is missing."""
    kubeconfig = os.environ.get("DMLOPS_KUBECONFIG")
    if kubeconfig:
        yield _remote_cluster(Path(kubeconfig))
        return
    node: KubeNode = request.getfixturevalue("kube_node")
    try:
        s3 = start_s3(node.node_ip, tmp_path_factory.mktemp("s3") / "moto.log")
    except S3Unavailable as missing:
        pytest.skip(str(missing))
    try:
        with node.api_client() as api:
            # Where KFP's manifests put MinIO: Service minio-service in namespace kubeflow, port 9000.
            expose_host_port(api, "kubeflow", "minio-service", node.node_ip, s3.port, 9000)
        store = ObjectStore(s3.endpoint, ACCESS_KEY, SECRET_KEY)
        yield PipelineCluster(node, store, NAMESPACE, _prepare_namespace(node, store), node=node)
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def feast_redis(pipeline_cluster: PipelineCluster) -> Iterator[str]:
    """Redis behind the Service ``feast-redis`` (port 6379) of the pipeline namespace: its cluster host name.
    On the node a real redis-server on the node IP; on a real cluster a Deployment."""
    host = f"feast-redis.{pipeline_cluster.namespace}.svc.cluster.local"
    node = pipeline_cluster.node
    if node is None:
        image = os.environ.get("DMLOPS_REDIS_IMAGE", "redis:7.2")
        pipeline_cluster.kube.kubectl("create", "deployment", "feast-redis", f"--image={image}", "--port=6379",
                                      "-n", pipeline_cluster.namespace)
        pipeline_cluster.kube.kubectl("expose", "deployment", "feast-redis", "--port=6379", "-n",
                                      pipeline_cluster.namespace)
        pipeline_cluster.kube.kubectl("rollout", "status", "deployment/feast-redis", "-n", pipeline_cluster.namespace,
                                      "--timeout=300s", timeout=320)
        yield host
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; scripts/services.sh does it)")
    (port,) = free_ports(1)
    process = subprocess.Popen([binary, "--port", str(port), "--bind", node.node_ip, "--save", "", "--appendonly", "no",
                                "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_listening(process, node.node_ip, port, timeout_s=10):
            pytest.fail(f"redis-server did not start on {node.node_ip}:{port}")
        with node.api_client() as api:
            expose_host_port(api, pipeline_cluster.namespace, "feast-redis", node.node_ip, port, 6379)
        yield host
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def kubeflow_operators(pipeline_cluster: PipelineCluster) -> Iterator[object]:
    """Kubeflow's operators: on the node the simulated controllers and webhooks (Training Operator,
    Trainer, Katib, KServe, Istio) against its API server; on a real cluster its own (nothing to start)."""
    if pipeline_cluster.node is None:
        yield None
        return
    from kubeharness.kubeflow import Kubeflow

    with Kubeflow.from_api_server(pipeline_cluster.node.api, cluster_dns=True) as kubeflow:
        kubeflow.install_runtimes()
        yield kubeflow
        kubeflow.raise_errors()
