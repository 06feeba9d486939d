"""RBAC for real: the project's Role (manifests/base/rbac.yaml) bound to a ServiceAccount, and a token of
that ServiceAccount from the TokenRequest API, so a client acts with exactly the Role's permissions."""

from __future__ import annotations

import yaml
from kubernetes import client

from kubeharness.envtest import REPOSITORY

PROJECT_RBAC = REPOSITORY / "manifests" / "base" / "rbac.yaml"


def project_role() -> dict:
    """The Role the project grants its pipeline pods."""
    (role,) = [document for document in yaml.safe_load_all(PROJECT_RBAC.read_text()) if document["kind"] == "Role"]
    return role


def bind_project_role(api: client.ApiClient, namespace: str, service_account: str) -> None:
    """Create ``service_account`` and bind the project's Role to it in ``namespace``."""
    role = project_role()
    name = role["metadata"]["name"]
    client.CoreV1Api(api).create_namespaced_service_account(namespace, {"metadata": {"name": service_account}})
    rbac = client.RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {**role, "metadata": {"name": name, "namespace": namespace}})
    rbac.create_namespaced_role_binding(namespace, {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}],
    })


def service_account_token(api: client.ApiClient, namespace: str, service_account: str, seconds: int = 3600) -> str:
    """A bound token of the ServiceAccount (TokenRequest), as the kubelet projects into its pods."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))
    return client.CoreV1Api(api).create_namespaced_service_account_token(service_account, namespace, request).status.token
