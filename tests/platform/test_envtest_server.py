"""The real API server the launcher tests run on: where its binaries come from, every vendored CRD
served, authentication enforced."""

import lzma

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeharness.envtest import EnvtestUnavailable, _served, find_assets, unpack_kit, vendored_crds


def test_without_kit_locations_the_reason_names_where_to_get_the_binaries(monkeypatch):
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    monkeypatch.delenv("DMLOPS_ENVTEST_KIT", raising=False)
    with pytest.raises(EnvtestUnavailable, match="KUBEBUILDER_ASSETS.*DMLOPS_ENVTEST_KIT.*etcd-server"):
        find_assets()


def test_kubebuilder_assets_without_the_binaries_says_which_are_missing(monkeypatch, tmp_path):
    (tmp_path / "etcd").write_text("#!/bin/sh\n")
    (tmp_path / "etcd").chmod(0o755)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    with pytest.raises(EnvtestUnavailable, match=f"KUBEBUILDER_ASSETS={tmp_path} lacks kube-apiserver$"):
        find_assets()


def test_a_kit_archive_with_another_checksum_is_not_unpacked(tmp_path):
    (tmp_path / "kube-apiserver.xz").write_bytes(lzma.compress(b"not the kit's kube-apiserver"))
    with pytest.raises(EnvtestUnavailable, match="kube-apiserver.xz has sha256 [0-9a-f]{64}, expected 0f9ca12d"):
        unpack_kit(tmp_path, cache_root=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("kube-apiserver"))


@pytest.mark.envtest
def test_every_vendored_crd_is_served(kube_api):
    api = kube_api.api_client()
    for path, plural in _served(vendored_crds()):
        listed = api.call_api(path, "GET", auth_settings=["BearerToken"], response_type="object",
                              _return_http_data_only=True)
        assert plural in {resource["name"] for resource in listed["resources"]}, path


@pytest.mark.envtest
def test_namespace_has_its_default_service_account(kube_api, kube_namespace):
    core = client.CoreV1Api(kube_api.api_client())
    assert core.read_namespaced_service_account("default", kube_namespace).metadata.name == "default"


@pytest.mark.envtest
def test_an_unknown_token_is_refused(kube_api):
    with pytest.raises(ApiException) as refused:
        client.CoreV1Api(kube_api.api_client(token="not-a-token")).list_namespace()
    assert refused.value.status == 401
