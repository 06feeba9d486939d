"""KServe and Istio simulated on a real API server: the Deployments, Services and status an
InferenceService gets, what the storage initializer accepts, and Istio's sidecar as admission.

envtest runs no kube-controller-manager: the tests write the Deployments' status as its deployment
controller would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kubeharness.controllers.kserve import KServe
from kubeharness.controllers.storage_initializer import DOWNLOAD_SCRIPT
from kubeharness.kubeflow import kubeflow  # noqa: F401 - fixture

pytestmark = pytest.mark.envtest
RUNTIME = Path(__file__).resolve().parents[2] / "manifests" / "cluster" / "cluster-serving-runtime.yaml"
AVAILABLE = {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability."}


@pytest.fixture(scope="module")
def runtime(kubeflow):
    """The project's ClusterServingRuntime, for this module (removed after it unless it was there before)."""
    body = yaml.safe_load(RUNTIME.read_text())
    plural = ("serving.kserve.io", "v1alpha1", "clusterservingruntimes")
    present = any(r["metadata"]["name"] == body["metadata"]["name"] for r in kubeflow.kube.list_custom(*plural))
    if not present:
        kubeflow.kube.custom.create_cluster_custom_object(*plural, body)
    yield body
    if not present:
        kubeflow.kube.custom.delete_cluster_custom_object(*plural, body["metadata"]["name"])


def isvc(name: str, storage_uri: str, mode: str, **predictor) -> dict:
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "annotations": {"serving.kserve.io/deploymentMode": mode,
                                                       "serving.kserve.io/enable-tag-routing": "true"}},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "dmlops"}, "runtime": "dmlops",
                                             "protocolVersion": "v1", "storageUri": storage_uri}, **predictor}}}


def _create(kubeflow, namespace: str, body: dict) -> None:
    kubeflow.kube.custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", namespace, "inferenceservices", body)


def _get(kubeflow, namespace: str, name: str) -> dict:
    return kubeflow.kube.get_custom("serving.kserve.io", "v1beta1", "inferenceservices", namespace, name)


def _available(kubeflow, namespace: str, name: str, generation: int = 1) -> None:
    client.AppsV1Api(kubeflow.kube.api).patch_namespaced_deployment_status(
        name, namespace, {"status": {"observedGeneration": generation, "conditions": [AVAILABLE]}})


def _conditions(obj: dict) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (obj.get("status") or {}).get("conditions") or []}


def test_raw_deployment_predictor_credentials_and_readiness(kubeflow, kube_namespace, runtime):
    """raw_kube_reconciler.go, PropagateRawStatus; storage_initializer_injector.go; credentials/s3."""
    core, apps = client.CoreV1Api(kubeflow.kube.api), client.AppsV1Api(kubeflow.kube.api)
    core.create_namespaced_secret(kube_namespace, {"metadata": {"name": "s3", "annotations": {
        "serving.kserve.io/s3-endpoint": "10.0.0.7:9000", "serving.kserve.io/s3-usehttps": "0"}},
        "stringData": {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret"}})
    core.create_namespaced_service_account(kube_namespace, {"metadata": {"name": "serving"}, "secrets": [{"name": "s3"}]})
    _create(kubeflow, kube_namespace, isvc("flights", "s3://models/flights", "RawDeployment", serviceAccountName="serving"))
    deployment = kubeflow.wait_for(lambda: kubeflow.kube.read("Deployment", kube_namespace, "flights-predictor"), what="Deployment")
    pod = deployment["spec"]["template"]
    assert pod["metadata"]["labels"]["serving.kserve.io/inferenceservice"] == "flights"
    assert pod["metadata"]["labels"]["component"] == "predictor"
    server = pod["spec"]["containers"][0]
    assert server["name"] == "kserve-container" and "--model_name=flights" in server["args"]
    init = pod["spec"]["initContainers"][0]
    assert (init["name"], init["args"]) == ("storage-initializer", ["s3://models/flights", "/mnt/models"])
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in init["env"]}
    assert env["AWS_ENDPOINT_URL"] == "http://10.0.0.7:9000" and env["S3_ENDPOINT"] == "10.0.0.7:9000"
    assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}
    service = kubeflow.wait_for(lambda: kubeflow.kube.read("Service", kube_namespace, "flights-predictor"), what="Service")
    assert service["spec"]["selector"] == {"app": "isvc.flights-predictor"}

    assert _conditions(_get(kubeflow, kube_namespace, "flights")).get("Ready") != "True"
    _available(kubeflow, kube_namespace, "flights-predictor", generation=1)
    ready = kubeflow.wait_for(lambda: (lambda s: _conditions(s).get("Ready") == "True" and s)(
        _get(kubeflow, kube_namespace, "flights")), what="Ready")
    assert ready["status"]["url"] == f"http://flights-{kube_namespace}.example.com"
    assert ready["status"]["address"]["url"] == f"http://flights-predictor.{kube_namespace}.svc.cluster.local"
    assert ready["status"]["observedGeneration"] == 1  # the Deployment's counter, not the InferenceService's

    updated = _get(kubeflow, kube_namespace, "flights")
    updated["spec"]["predictor"]["model"]["args"] = ["--model_format", "onnx"]
    kubeflow.kube.custom.replace_namespaced_custom_object("serving.kserve.io", "v1beta1", kube_namespace,
                                                          "inferenceservices", "flights", updated)
    rolled = kubeflow.wait_for(lambda: (lambda d: "--model_format" in d["spec"]["template"]["spec"]["containers"][0]["args"] and d)(
        kubeflow.kube.read("Deployment", kube_namespace, "flights-predictor")), what="the new template")
    assert rolled["metadata"]["generation"] == 2
    assert len(apps.list_namespaced_deployment(kube_namespace).items) == 1  # updated in place, no revision
    assert _get(kubeflow, kube_namespace, "flights")["status"]["observedGeneration"] == 1  # until the rollout is observed
    kubeflow.raise_errors()


def test_knative_canary_revisions_and_traffic(kubeflow, kube_namespace, runtime):
    """ksvc_reconciler.go traffic targets; inference_service_status.go PropagateStatus."""
    _create(kubeflow, kube_namespace, isvc("canary", "gs://models/v1", "Serverless"))
    revision = kubeflow.wait_for(lambda: kubeflow.kube.read("Deployment", kube_namespace, "canary-predictor-00001-deployment"),
                                 what="rev 1")
    assert revision["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["tcpSocket"]["port"] == 8080
    _available(kubeflow, kube_namespace, "canary-predictor-00001-deployment")
    first = kubeflow.wait_for(lambda: (lambda s: _conditions(s).get("Ready") == "True" and s)(
        _get(kubeflow, kube_namespace, "canary")), what="Ready")
    predictor = first["status"]["components"]["predictor"]
    assert predictor["latestReadyRevision"] == predictor["latestRolledoutRevision"] == "canary-predictor-00001"
    assert first["status"]["url"] == f"http://canary.{kube_namespace}.example.com"
    assert first["status"]["address"]["url"] == f"http://canary.{kube_namespace}.svc.cluster.local"
    address = kubeflow.wait_for(lambda: kubeflow.kube.read("Service", kube_namespace, "canary"), what="Service canary")
    assert address["spec"]["selector"] == {"serving.knative.dev/revision": "canary-predictor-00001"}

    second = _get(kubeflow, kube_namespace, "canary")
    second["spec"]["predictor"]["model"]["storageUri"] = "gs://models/v2"
    second["spec"]["predictor"]["canaryTrafficPercent"] = 20
    kubeflow.kube.custom.replace_namespaced_custom_object("serving.kserve.io", "v1beta1", kube_namespace,
                                                          "inferenceservices", "canary", second)
    pending = kubeflow.wait_for(lambda: (lambda p: p["latestCreatedRevision"] == "canary-predictor-00002" and p)(
        _get(kubeflow, kube_namespace, "canary")["status"]["components"]["predictor"]), what="revision 2")
    assert pending["latestReadyRevision"] == "canary-predictor-00001"
    assert kubeflow.kube.read("Deployment", kube_namespace, "canary-predictor-00002-deployment") is not None
    _available(kubeflow, kube_namespace, "canary-predictor-00002-deployment")
    split = kubeflow.wait_for(lambda: (lambda p: p.get("latestReadyRevision") == "canary-predictor-00002" and p)(
        _get(kubeflow, kube_namespace, "canary")["status"]["components"]["predictor"]), what="canary traffic")
    traffic = {t["tag"]: (t["revisionName"], t["percent"], t["url"]) for t in split["traffic"]}
    assert traffic == {
        "latest": ("canary-predictor-00002", 20, f"http://latest-canary-predictor.{kube_namespace}.example.com"),
        "prev": ("canary-predictor-00001", 80, f"http://prev-canary-predictor.{kube_namespace}.example.com")}
    assert split["latestRolledoutRevision"] == "canary-predictor-00001"

    promoted = _get(kubeflow, kube_namespace, "canary")
    promoted["spec"]["predictor"]["canaryTrafficPercent"] = 100
    kubeflow.kube.custom.replace_namespaced_custom_object("serving.kserve.io", "v1beta1", kube_namespace,
                                                          "inferenceservices", "canary", promoted)
    done = kubeflow.wait_for(lambda: (lambda p: p.get("latestRolledoutRevision") == "canary-predictor-00002" and p)(
        _get(kubeflow, kube_namespace, "canary")["status"]["components"]["predictor"]), what="promotion")
    assert [(t["tag"], t["percent"]) for t in done["traffic"]] == [("latest", 100)]
    assert done["previousRolledoutRevision"] == "canary-predictor-00001"
    kubeflow.raise_errors()


def test_reconciling_an_unchanged_serverless_predictor_creates_no_revision(kubeflow, kube_namespace, runtime):
    """Knative makes a revision per change of the configuration's template, not per reconcile."""
    _create(kubeflow, kube_namespace, isvc("steady", "gs://models/v1", "Serverless"))
    kubeflow.wait_for(lambda: kubeflow.kube.read("Deployment", kube_namespace, "steady-predictor-00001-deployment"),
                      what="rev 1")
    kserve = next(c for c in kubeflow.manager.controllers if isinstance(c, KServe))
    for _ in range(2):
        kserve.reconcile(_get(kubeflow, kube_namespace, "steady"))
    revisions = client.AppsV1Api(kubeflow.kube.api).list_namespaced_deployment(
        kube_namespace, label_selector="serving.knative.dev/service=steady-predictor").items
    assert [d.metadata.name for d in revisions] == ["steady-predictor-00001-deployment"]
    kubeflow.raise_errors()


def test_unknown_runtime_is_an_invalid_spec(kubeflow, kube_namespace, runtime):
    """components/predictor.go reconcileModel: RuntimeNotRecognized in modelStatus."""
    body = isvc("lost", "gs://models/v1", "RawDeployment")
    body["spec"]["predictor"]["model"]["runtime"] = "no-such-runtime"
    _create(kubeflow, kube_namespace, body)
    status = kubeflow.wait_for(lambda: (_get(kubeflow, kube_namespace, "lost").get("status") or {}).get("modelStatus"),
                               what="modelStatus")
    assert status == {"transitionStatus": "InvalidSpec", "lastFailureInfo": {
        "reason": "RuntimeNotRecognized", "message": "Waiting for runtime to become available"}}
    assert kubeflow.kube.read("Deployment", kube_namespace, "lost-predictor") is None
    kubeflow.raise_errors()


@pytest.mark.parametrize("uri", ["minio://mlpipeline/v2/artifacts/model", "ftp://host/model"])
def test_storage_initializer_rejects_schemes_kserve_does_not_know(tmp_path, uri):
    """kserve_storage.py Storage.download: the message the init container fails with."""
    result = subprocess.run([sys.executable, "-c", DOWNLOAD_SCRIPT, uri, str(tmp_path / "models")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"Cannot recognize storage type for {uri}" in result.stderr


def test_storage_initializer_copies_local_models(tmp_path):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "metadata.json").write_text("{}")
    result = subprocess.run([sys.executable, "-c", DOWNLOAD_SCRIPT, f"file://{tmp_path / 'export'}", str(tmp_path / "models")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "models" / "metadata.json").read_text() == "{}"


def test_istio_injects_a_sidecar_unless_told_not_to(kubeflow, kube_namespace):
    """istio pkg/kube/inject: labelled namespaces get istio-proxy; sidecar.istio.io/inject=false opts out."""
    core = client.CoreV1Api(kubeflow.kube.api)

    def pod(name: str, annotations: dict | None = None) -> dict:
        return {"metadata": {"name": name, "annotations": annotations or {}},
                "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "dmlops/base:test"}]}}

    core.create_namespaced_pod(kube_namespace, pod("before-label"))
    core.patch_namespace(kube_namespace, {"metadata": {"labels": {"istio-injection": "enabled"}}})
    core.create_namespaced_pod(kube_namespace, pod("injected"))
    core.create_namespaced_pod(kube_namespace, pod("opted-out", {"sidecar.istio.io/inject": "false"}))
    names = {p.metadata.name: [c.name for c in p.spec.containers] for p in core.list_namespaced_pod(kube_namespace).items}
    assert names == {"before-label": ["main"], "injected": ["main", "istio-proxy"], "opted-out": ["main"]}
    proxy = core.read_namespaced_pod("injected", kube_namespace).spec.containers[1]
    assert proxy.command == ["sleep", "infinity"] and proxy.image == "dmlops/base:test"
    kubeflow.raise_errors()
