"""End-to-end fixtures: the real node (``kube_node``), an S3 server its pods reach, and a namespace set up
as a Kubeflow Pipelines install sets up a user's namespace (ServiceAccount ``pipeline-runner`` bound to
the project's Role, the MinIO Secret, the launcher) with a :class:`kubeharness.kfp.KfpBackend` on it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from dmlops.platform.local import free_ports
from kubeharness.cluster_dns import expose_host_port
from kubeharness.kfp import SERVICE_ACCOUNT, KfpBackend
from kubeharness.node import KubeNode, docker_images_missing, kube_node  # noqa: F401  (fixture)
from kubeharness.s3 import ACCESS_KEY, SECRET_KEY, S3Server, S3Unavailable, start_s3

REPOSITORY = Path(__file__).resolve().parents[2]
NAMESPACE = "dmlops-e2e"


@dataclass
class PipelineCluster:
    """What an end-to-end test runs pipelines on."""

    node: KubeNode
    s3: S3Server
    namespace: str
    kfp: KfpBackend
    loaded_images: dict[str, float]

    def require_images(self, *images: str) -> None:
        """Load ``images`` into the node once per session; skip naming those the Docker engine lacks."""
        wanted = [image for image in images if image not in self.loaded_images]
        missing = docker_images_missing(wanted)
        if missing:
            pytest.skip(f"images not built: {', '.join(missing)} (scripts/images.sh builds them with Docker)")
        for image, seconds in self.node.load_images(*wanted).items():
            print(f"\nkube-node: loaded {image} in {seconds:.1f} s")
            self.loaded_images[image] = seconds

    def create_secret(self, name: str, **data: str) -> None:
        """A Secret in the pipeline namespace with ``data`` (the object store's values filled in below)."""
        with self.node.api_client() as api:
            client.CoreV1Api(api).create_namespaced_secret(self.namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=name), string_data=data))


def project_rbac(namespace: str, service_account: str = SERVICE_ACCOUNT) -> list[dict]:
    """manifests/base/rbac.yaml for ``namespace``, its RoleBinding's subject the given ServiceAccount."""
    documents = [document for document in yaml.safe_load_all((REPOSITORY / "manifests/base/rbac.yaml").read_text())
                 if document]
    for document in documents:
        document["metadata"]["namespace"] = namespace
        for subject in document.get("subjects", []):
            subject.update(namespace=namespace, name=service_account)
    return documents


@pytest.fixture(scope="session")
def pipeline_cluster(kube_node: KubeNode, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineCluster]:
    """The node with an S3 server, a pipeline namespace and KFP's backend (images loaded on demand)."""
    try:
        s3 = start_s3(kube_node.node_ip, tmp_path_factory.mktemp("s3") / "moto.log")
    except S3Unavailable as missing:
        pytest.skip(str(missing))
    try:
        with kube_node.api_client() as api:
            # Where KFP's manifests put MinIO: Service minio-service in namespace kubeflow, port 9000.
            expose_host_port(api, "kubeflow", "minio-service", kube_node.node_ip, s3.port, 9000)
            client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
            backend = KfpBackend(kube_node.api_client(), NAMESPACE, s3)
            backend.install(ACCESS_KEY, SECRET_KEY)
            kube_node.kubectl("apply", "--server-side", "-f", "-",
                              input=yaml.safe_dump_all(project_rbac(NAMESPACE)))
            yield PipelineCluster(kube_node, s3, NAMESPACE, backend, {})
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def feast_redis(pipeline_cluster: PipelineCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Redis server on the node IP behind the Service ``feast-redis`` of the pipeline namespace
    (port 6379): its cluster host name."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; scripts/services.sh does it)")
    (port,) = free_ports(1)
    node = pipeline_cluster.node
    process = subprocess.Popen([binary, "--port", str(port), "--bind", node.node_ip, "--save", "", "--appendonly", "no",
                                "--protected-mode", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((node.node_ip, port), timeout=0.2).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server did not start on {node.node_ip}:{port}")
                time.sleep(0.05)
        with node.api_client() as api:
            expose_host_port(api, pipeline_cluster.namespace, "feast-redis", node.node_ip, port, 6379)
        yield f"feast-redis.{pipeline_cluster.namespace}.svc.cluster.local"
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def kubeflow_on_node(pipeline_cluster: PipelineCluster) -> Iterator[object]:
    """The simulated Kubeflow controllers and webhooks (Training Operator, Trainer, Katib, KServe, Istio)
    against the node's API server, with the project's cluster manifests (the dmlops ClusterServingRuntime)
    applied."""
    from kubeharness.kubeflow import Kubeflow

    node = pipeline_cluster.node
    node.kubectl("apply", "--server-side", "-k", str(REPOSITORY / "manifests" / "cluster"))
    with Kubeflow.from_api_server(node.api, cluster_dns=True) as kubeflow:
        kubeflow.install_runtimes()
        yield kubeflow
