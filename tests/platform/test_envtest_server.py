"""The real API server the launcher tests run on: every vendored CRD served, RBAC enforced."""

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeharness.envtest import _served, vendored_crds

pytestmark = pytest.mark.envtest


def test_every_vendored_crd_is_served(kube_api):
    api = kube_api.api_client()
    for path, plural in _served(vendored_crds()):
        listed = api.call_api(path, "GET", auth_settings=["BearerToken"], response_type="object",
                              _return_http_data_only=True)
        assert plural in {resource["name"] for resource in listed["resources"]}, path


def test_namespace_has_its_default_service_account(kube_api, kube_namespace):
    core = client.CoreV1Api(kube_api.api_client())
    assert core.read_namespaced_service_account("default", kube_namespace).metadata.name == "default"


def test_an_unknown_token_is_refused(kube_api):
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(kube_api.api_client(token="not-a-token")).list_namespace()
    assert refused.value.status == 401
