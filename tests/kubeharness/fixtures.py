"""pytest fixtures of the real API server: ``kube_api`` (one per session) and ``kube_namespace``.

``kube_api`` skips, naming what is missing, when neither ``KUBEBUILDER_ASSETS`` nor
``DMLOPS_ENVTEST_KIT`` (with etcd on PATH) gives the binaries.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from kubernetes import client

from kubeharness.envtest import ApiServer, EnvtestUnavailable, find_assets, start_envtest


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A real kube-apiserver with every vendored CRD installed and Established."""
    try:
        assets = find_assets()
    except EnvtestUnavailable as missing:
        pytest.skip(f"real Kubernetes API server unavailable: {missing}")
    server = start_envtest(tmp_path_factory.mktemp("envtest"), assets=assets)
    print(f"\nenvtest: kube-apiserver ready with CRDs in {server.start_seconds:.1f} s at {server.url}")
    yield server
    server.stop()


@pytest.fixture
def kube_namespace(kube_api: ApiServer) -> Iterator[str]:
    """A fresh namespace with its ``default`` ServiceAccount; deleted after the test.

    envtest runs no kube-controller-manager, so the ServiceAccount is created here as its serviceaccounts
    controller would, and the deleted namespace stays Terminating (no namespace controller empties it).
    """
    name = f"t-{secrets.token_hex(4)}"
    with kube_api.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        core.create_namespaced_service_account(name, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="default")))
        yield name
        core.delete_namespace(name)
