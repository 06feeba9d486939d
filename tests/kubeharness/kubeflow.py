"""Kubeflow on a real API server: the simulated controllers (``controllers``) and upstream admission
(``webhooks``) started together, against envtest's API server or a real node's.

Use the ``kubeflow`` fixture (module scope, on ``kube_api``), or ``Kubeflow`` directly::

    with Kubeflow.from_kubeconfig(path, cluster_dns=False) as kubeflow:
        ...  # create PyTorchJobs, Experiments, InferenceServices; pods appear as the operators make them
        kubeflow.raise_errors()

Pods run the images the custom resources name (trial, worker, runtime images); the added containers
(Katib's metrics sidecar, Istio's proxy, KServe's storage initializer) run in the pod's own image, so a node
needs no Kubeflow image loaded (the Training Operator v1 MPIJob launcher's kubectl-delivery init container
is the exception). ``install_runtimes`` adds Trainer's ``torch-distributed`` ClusterTrainingRuntime
(kubeflow/trainer manifests/base/runtimes/torch_distributed.yaml).

Admission follows the namespace labels of a Kubeflow profile: Katib's pod mutation needs
``katib.kubeflow.org/metrics-collector-injection=enabled``, Istio's injection ``istio-injection=enabled``.
With ``cluster_dns=False`` (envtest, or a node without DNS) host aliases stand in for the Service names
the operators put in env and host files; with DNS the Services are headless as upstream makes them.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from kubeharness.controllers.base import Controller, Kube, Manager
from kubeharness.controllers.katib import Katib
from kubeharness.controllers.kserve import KServe
from kubeharness.controllers.mpi_operator import MPIOperator
from kubeharness.controllers.spark_operator import SparkOperator
from kubeharness.controllers.trainer import Trainer
from kubeharness.controllers.training_operator import TrainingOperator
from kubeharness.controllers.training_operator_mpi import TrainingOperatorMPI
from kubeharness.envtest import ApiServer
from kubeharness.webhooks import Webhooks

TORCH_DISTRIBUTED = {
    "apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
    "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
    "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [{
        "name": "node",
        "template": {"metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                     "spec": {"template": {"spec": {"containers": [
                         {"name": "node", "image": "pytorch/pytorch:2.13.0-cuda13.0-cudnn9-runtime"}]}}}}}]}}},
}


class Kubeflow:
    """The simulated Kubeflow controllers and webhooks, running against one API server."""

    def __init__(self, api: client.ApiClient, *, cluster_dns: bool = False, webhooks: bool = True,
                 read_log: Callable[[str, str, str], str] | None = None, storage_initializer_image: str | None = None,
                 seed: int | None = None):
        """``cluster_dns``: the cluster resolves Service names (else host aliases stand in, see the controllers);
        ``read_log(namespace, pod, container)``: how Katib reads its metrics sidecar's log (default: the
        API server's pod log, which needs a kubelet); ``storage_initializer_image``: the image of KServe's
        storage initializer (default: the runtime's)."""
        configuration = copy.copy(api.configuration)
        configuration.connection_pool_maxsize = 32  # one connection per watch and loop thread
        self.kube = Kube(client.ApiClient(configuration))
        self.katib = Katib(self.kube, read_log=read_log, seed=seed)
        controllers: list[Controller] = [TrainingOperator(self.kube, cluster_dns), TrainingOperatorMPI(self.kube),
                                         MPIOperator(self.kube, cluster_dns),
                                         Trainer(self.kube, cluster_dns), self.katib,
                                         KServe(self.kube, storage_initializer_image), SparkOperator(self.kube)]
        self.manager = Manager(self.kube, controllers)
        self.webhooks = Webhooks(self.kube) if webhooks else None

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | Path, **options) -> Kubeflow:
        """Against the API server of a kubeconfig file (its current context)."""
        return cls(config.new_client_from_config(config_file=str(kubeconfig)), **options)

    @classmethod
    def from_api_server(cls, server: ApiServer, **options) -> Kubeflow:
        """Against an envtest ``ApiServer`` (as its admin)."""
        return cls(server.api_client(), **options)

    def start(self) -> Kubeflow:
        if self.webhooks is not None:
            self.webhooks.start()
        self.manager.start()
        return self

    def stop(self) -> None:
        self.manager.stop()
        if self.webhooks is not None:
            self.webhooks.stop()

    def __enter__(self) -> Kubeflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def errors(self) -> list[str]:
        """What went wrong in a controller or a webhook (kept so that the tests can fail on it)."""
        return self.manager.errors + (self.webhooks.errors if self.webhooks else [])

    def raise_errors(self) -> None:
        if self.errors:
            raise AssertionError("simulated Kubeflow reported errors:\n" + "\n".join(self.errors))

    def install_runtimes(self) -> None:
        """Install Trainer's default torch-distributed ClusterTrainingRuntime (idempotent)."""
        try:
            self.kube.custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1", "clustertrainingruntimes",
                                                          TORCH_DISTRIBUTED)
        except ApiException as error:
            if error.status != 409:
                raise

    def wait_for(self, predicate: Callable[[], object], timeout: float = 30.0, what: str = "condition") -> object:
        """Poll ``predicate`` until it returns something truthy; fails with the controllers' errors on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.raise_errors()
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def kubeflow(kube_api: ApiServer) -> Iterator[Kubeflow]:
    """Simulated Kubeflow on the session's envtest API server, for one test module: stopped (and its
    webhooks unregistered) afterwards, so that other modules see a bare API server. envtest has no kubelet:
    tests that act as the kubelet give Katib its metrics through ``kubeflow.katib.read_log``."""
    with Kubeflow.from_api_server(kube_api) as running:
        yield running
