"""KServe: storage layouts, InferenceService dicts against the upstream CRD, and rollouts through the
platform launcher against the fake Kubernetes API. A scripted KServe controller answers the API: it
makes a revision per storage URI, splits traffic by ``canaryTrafficPercent`` and publishes tag URLs that
point at real local model servers, so the gates run over HTTP as on a cluster."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import fsspec
import pytest
import requests

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from cluster_network import ClusterNetwork  # noqa: E402
from crds import assert_valid, crd_errors  # noqa: E402
from fake_kube import FakeKube, fake_kube  # noqa: E402,F401

from dmlops.platform.kubernetes import KubernetesLauncher  # noqa: E402
from dmlops.serving.deploy import RolloutFailed, deploy_kubernetes, model_features  # noqa: E402
from dmlops.serving.local import start_server, stop_server  # noqa: E402
from dmlops.serving.packaging import (  # noqa: E402
    KFP_ARTIFACT_READER,
    inference_service,
    package_model,
    serving_runtime_container,
    writable_location,
)  # noqa: E402
from dmlops.serving.rollout import FIRST_DEPLOY, PROMOTE, ROLLBACK, RolloutPolicy  # noqa: E402
from serving_models import ConstantOutput, broken_copy  # noqa: E402

NAME, NAMESPACE = "flights-delay", "ml"
POLICY = RolloutPolicy(smoke_requests=4, window_requests=40, concurrency=2, min_labelled_rows=40, route_settle_s=3)


# -- InferenceService dicts and storage layouts -------------------------------------------------------

@pytest.mark.parametrize(
    "options",
    [
        {},
        {"canary_traffic_percent": 10, "service_account": "pipeline-runner", "labels": {"dmlops.io/run-id": "r1"}},
        {"deployment_mode": "Standard", "min_replicas": 2, "model_args": ["--model_format", "onnx"]},
        {"model_format": "pytorch", "runtime": "kserve-tritonserver", "protocol": "v2"},
        {"model_format": "tensorflow", "runtime": "kserve-tensorflow-serving"},
    ],
)
def test_inference_services_validate_against_the_kserve_crd(options):
    service = inference_service(NAME, NAMESPACE, "gs://models/flights/v3", **options)
    assert_valid(service)
    predictor = service["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "gs://models/flights/v3"
    assert predictor.get("canaryTrafficPercent") == options.get("canary_traffic_percent")


def test_the_validator_catches_a_misplaced_canary_field():
    service = inference_service(NAME, NAMESPACE, "s3://models/v1", canary_traffic_percent=10)
    service["spec"]["predictor"]["model"]["canaryTrafficPercent"] = service["spec"]["predictor"].pop("canaryTrafficPercent")
    assert any("canaryTrafficPercent" in error for error in crd_errors(service))


def test_the_runtime_container_arguments_are_what_the_server_parses():
    from dmlops.serving.__main__ import build_parser

    container = serving_runtime_container()
    assert container["command"] == ["python", "-m", "dmlops.serving"]
    args = build_parser().parse_args([arg.replace("{{.Name}}", NAME) for arg in container["args"]])
    assert (args.model_dir, args.model_name, args.http_port, args.enable_grpc) == ("/mnt/models", NAME, 8080, False)
    assert container["ports"][0]["containerPort"] == args.http_port


@pytest.mark.parametrize("given, annotated", [("Knative", "Knative"), ("Standard", "Standard"),
                                              ("Serverless", "Knative"), ("RawDeployment", "Standard")])
def test_deployment_mode_annotation_carries_kserves_current_name(given, annotated):
    """KServe 0.16+ records Knative/Standard in status.deploymentMode and its webhook rejects an update whose
    annotation differs (kserve pkg/apis/serving/v1beta1/inference_service_validation.go,
    validateDeploymentMode): the deprecated names are accepted here but never sent."""
    service = inference_service(NAME, NAMESPACE, "s3://m", deployment_mode=given)
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] == annotated
    assert ("serving.kserve.io/enable-tag-routing" in annotations) == (annotated == "Knative")


def test_inference_service_refuses_what_kserve_cannot_do():
    with pytest.raises(ValueError, match="Standard has no traffic split"):
        inference_service(NAME, NAMESPACE, "s3://m", deployment_mode="RawDeployment", canary_traffic_percent=10)
    with pytest.raises(ValueError, match="choose one of Knative, Standard"):
        inference_service(NAME, NAMESPACE, "s3://m", deployment_mode="ModelMesh")
    with pytest.raises(ValueError, match="DNS-1035"):
        inference_service("Flights_Delay", NAMESPACE, "s3://m")


def test_package_layouts_for_each_runtime(model_dir, tmp_path):
    dmlops = package_model(str(model_dir), str(tmp_path / "dmlops"))
    assert dmlops == {"storage_uri": str(tmp_path / "dmlops"), "format": "dmlops", "runtime": "dmlops", "protocol": "v1"}
    assert sorted(path.name for path in (tmp_path / "dmlops").iterdir()) == sorted(path.name for path in model_dir.iterdir())

    triton = package_model(str(model_dir), str(tmp_path / "triton"), runtime="triton", model_name=NAME)
    assert triton["runtime"] == "kserve-tritonserver" and triton["format"] == "onnx" and triton["protocol"] == "v2"
    assert sorted(path.name for path in (tmp_path / "triton" / NAME / "1").iterdir()) == ["model.onnx"]
    config = (tmp_path / "triton" / NAME / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config and "dims: [ -1, 3 ]" in config and "dims: [ -1, 2 ]" in config

    with pytest.raises(ValueError, match="needs a SavedModel"):
        package_model(str(model_dir), str(tmp_path / "tf"), runtime="tfserving")


def test_package_to_object_storage_and_pvc(model_dir, tmp_path):
    package_model(str(model_dir), "memory://models/flights/v1")
    filesystem = fsspec.filesystem("memory")
    assert filesystem.exists("/models/flights/v1/metadata.json")
    files = json.loads(filesystem.cat("/models/flights/v1/metadata.json"))["files"]
    assert all(filesystem.exists(f"/models/flights/v1/{name}") for name in files)

    assert writable_location("pvc://models-claim/flights/v1", str(tmp_path)) == f"{tmp_path}/models-claim/flights/v1"
    with pytest.raises(ValueError, match="pvc://<claim>/<path>"):
        writable_location("pvc://only-claim")


# -- rollouts through the launcher ------------------------------------------------------------------

CLUSTER_DOMAIN, INGRESS_DOMAIN = "svc.cluster.local", "example.com"
# The storage initializer's URI schemes (kserve pkg/controller/v1beta1/inferenceservice/utils/utils.go,
# SupportedStorageURIPrefixList); anything else makes the predictor InvalidSpec (components/predictor.go).
STORAGE_PREFIXES = ("gs://", "s3://", "pvc://", "file://", "https://", "http://", "hdfs://", "webhdfs://", "oci://",
                    "hf://")
# ServiceAccounts of the namespace whose Secrets hold S3 credentials: the one manifests/base/kserve-storage.yaml
# installs (tests/cluster/test_manifests.py checks it carries what KServe's credential builder reads).
S3_READERS = {KFP_ARTIFACT_READER}


class FakeKServe:
    """The part of the KServe controller a rollout sees: one revision per storage URI, traffic split by
    canaryTrafficPercent, and Ready once a generation is reconciled. URLs are those KServe publishes
    (kserve pkg/apis/serving/v1beta1/inference_service_status.go, copied from the Knative Service):
    ``status.url`` and each traffic target's tag URL on the external ingress domain, ``status.address``
    and the predictor's ``address`` on cluster-local Service names. Knative makes one Service per tag,
    named ``<tag>-<route>`` (knative/serving pkg/reconciler/route/resources/service.go,
    MakeK8sPlaceholderService). The cluster network routes the cluster-local names to the local model
    servers standing for each revision; the external names resolve nowhere."""

    def __init__(self, fake: FakeKube, network: ClusterNetwork, server_for: dict[str, str]):
        self.fake, self.network, self.server_for = fake, network, server_for
        self.revisions: list[tuple[str, str]] = []  # (revision name, storage URI)
        self.rolled_out = ""
        self.stopping = False
        self.errors: list[str] = []

    def _pending(self):
        service = self.fake.get("inferenceservices", NAMESPACE, NAME)
        if self.stopping:
            return "stop"
        if service and (service.get("status") or {}).get("observedGeneration") != service["metadata"]["generation"]:
            return service
        return None

    def run(self) -> None:
        while True:
            try:
                service = self.fake.wait_for(self._pending, timeout=0.2)
            except TimeoutError:
                continue
            if service == "stop":
                return
            try:
                self.reconcile(service)
            except Exception as error:  # surfaces in the test that waits on the service
                self.errors.append(repr(error))
                raise

    def storage_failure(self, predictor: dict) -> dict | None:
        """What KServe reports for a model its storage initializer cannot fetch."""
        storage = predictor["model"]["storageUri"]
        if not storage.startswith(STORAGE_PREFIXES):
            return {"transitionStatus": "InvalidSpec", "lastFailureInfo": {
                "reason": "InvalidPredictorSpec", "message": f"StorageURI not supported: {storage}"}}
        if storage.startswith("s3://") and predictor.get("serviceAccountName") not in S3_READERS:
            return {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {
                "reason": "ModelLoadFailed", "message": f"storage-initializer: no S3 credentials for {storage}"}}
        return None

    def reconcile(self, service: dict) -> None:
        predictor = service["spec"]["predictor"]
        failure = self.storage_failure(predictor)
        if failure is not None:
            self.fake.patch_status("inferenceservices", NAMESPACE, NAME, {"status": None})
            self.fake.patch_status("inferenceservices", NAMESPACE, NAME, {
                "observedGeneration": service["metadata"]["generation"], "modelStatus": failure,
                "conditions": [{"type": "Ready", "status": "False", "reason": failure["lastFailureInfo"]["reason"]}]})
            return
        # A new revision per change of the predictor's template; canaryTrafficPercent only splits traffic
        # (kserve pkg/controller/v1beta1/inferenceservice/reconcilers/knative/ksvc_reconciler.go).
        template = {key: value for key, value in predictor.items() if key != "canaryTrafficPercent"}
        if not self.revisions or self.revisions[-1][1] != template:
            self.revisions.append((f"{NAME}-predictor-{len(self.revisions) + 1:05d}", template))
        latest, _ = self.revisions[-1]
        percent = predictor.get("canaryTrafficPercent")
        url_of = {name: self.server_for[spec["model"]["storageUri"]] for name, spec in self.revisions}
        route = f"{NAME}-predictor"
        tagged = {"latest": latest}
        if percent in (None, 100) or not self.rolled_out or self.rolled_out == latest:
            self.rolled_out = latest
            split = [(latest, 100, "latest")]
            main = latest
        else:
            split = [(latest, percent, "latest"), (self.rolled_out, 100 - percent, "prev")]
            tagged["prev"] = self.rolled_out
            main = latest if percent >= 50 else self.rolled_out
        traffic = [{"revisionName": revision, "percent": share, "tag": tag, "latestRevision": revision == latest,
                    "url": f"http://{tag}-{route}.{NAMESPACE}.{INGRESS_DOMAIN}"} for revision, share, tag in split]
        for host in (f"{NAME}.{NAMESPACE}.{CLUSTER_DOMAIN}", f"{route}.{NAMESPACE}.{CLUSTER_DOMAIN}"):
            self.network.route(host, url_of[main])
        for tag, revision in tagged.items():
            self.network.route(f"{tag}-{route}.{NAMESPACE}.{CLUSTER_DOMAIN}", url_of[revision])
        if service["metadata"]["annotations"].get("serving.kserve.io/deploymentMode") == "Standard":
            self.roll_deployment(route, latest)
        status = {
            "observedGeneration": service["metadata"]["generation"],
            "url": f"http://{NAME}.{NAMESPACE}.{INGRESS_DOMAIN}",
            "address": {"url": f"http://{NAME}.{NAMESPACE}.{CLUSTER_DOMAIN}"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Ready"}],
            "components": {"predictor": {
                "latestCreatedRevision": latest, "latestReadyRevision": latest, "latestRolledoutRevision": self.rolled_out,
                "url": f"http://{route}.{NAMESPACE}.{INGRESS_DOMAIN}",
                "address": {"url": f"http://{route}.{NAMESPACE}.{CLUSTER_DOMAIN}"},
                "traffic": traffic,
            }},
        }
        self.fake.patch_status("inferenceservices", NAMESPACE, NAME, {"status": None})
        self.fake.patch_status("inferenceservices", NAMESPACE, NAME, status)

    def roll_deployment(self, name: str, revision: str) -> None:
        """Standard mode: the predictor is the Deployment <name>-predictor, updated in place
        (kserve reconcilers/raw/raw_kube_reconciler.go), here rolled out at once."""
        from kubernetes import client

        apps = client.AppsV1Api(self.fake.api_client())
        template = {"metadata": {"labels": {"component": "predictor"}, "annotations": {"revision": revision}},
                    "spec": {"containers": [{"name": "kserve-container", "image": "serve"}]}}
        if self.fake.get("deployments", NAMESPACE, name, group="apps") is None:
            apps.create_namespaced_deployment(NAMESPACE, {
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": NAMESPACE},
                "spec": {"replicas": 1, "selector": {"matchLabels": {"component": "predictor"}}, "template": template}})
        else:
            response = requests.patch(f"{self.fake.url}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{name}",
                                      json={"spec": {"template": template}},
                                      headers={"Content-Type": "application/merge-patch+json"}, timeout=10)
            response.raise_for_status()
        generation = self.fake.get("deployments", NAMESPACE, name, group="apps")["metadata"]["generation"]
        self.fake.patch_status("deployments", NAMESPACE, name, {
            "observedGeneration": generation, "replicas": 1, "updatedReplicas": 1, "readyReplicas": 1,
            "availableReplicas": 1}, group="apps")


@pytest.fixture
def cluster_network(monkeypatch):
    """Requests by host name go through the cluster network; 127.0.0.1 (the fake API server) directly."""
    with ClusterNetwork() as network:
        for name in ("http_proxy", "HTTP_PROXY"):
            monkeypatch.setenv(name, network.url)
        for name in ("no_proxy", "NO_PROXY"):
            monkeypatch.setenv(name, "127.0.0.1,localhost")
        yield network


@pytest.fixture(scope="module")
def broken_server(model_dir, tmp_path_factory):
    broken = broken_copy(model_dir, tmp_path_factory.mktemp("broken") / "model", ConstantOutput)
    process = start_server(str(broken), NAME, log_dir=tmp_path_factory.mktemp("broken-logs"))
    yield process
    stop_server(process)


@pytest.fixture
def kserve(fake_kube, cluster_network, server, broken_server):  # noqa: F811
    controller = FakeKServe(fake_kube, cluster_network, {
        "gs://models/v1": server.url, "gs://models/v2": server.url, "gs://models/broken": broken_server.url,
    })
    thread = threading.Thread(target=controller.run, daemon=True)
    thread.start()
    yield controller
    controller.stopping = True
    thread.join(timeout=5)
    assert not controller.errors, controller.errors


@pytest.fixture
def launcher(fake_kube):  # noqa: F811
    return KubernetesLauncher(fake_kube.api_client(), echo=lambda line: None, poll_interval_s=0.05, watch_window_s=2)


def _rollout(launcher, storage_uri: str, eval_uri: str, features: list[str], **options):
    service = inference_service(NAME, NAMESPACE, storage_uri, **options)
    return deploy_kubernetes(launcher, service, eval_uri, features, POLICY, label="label", timeout_s=30)


def test_first_deploy_then_promote_then_rollback(fake_kube, kserve, cluster_network, launcher, model_dir,  # noqa: F811
                                                 data_dir):
    eval_uri, features = str(data_dir / "eval.parquet"), model_features(str(model_dir))

    first = _rollout(launcher, "gs://models/v1", eval_uri, features)
    assert first.decision.action == FIRST_DEPLOY
    # The step runs inside the cluster: it calls cluster-local names, never the external ingress domain.
    assert first.predict_url == f"http://{NAME}.{NAMESPACE}.{CLUSTER_DOMAIN}/v1/models/{NAME}:predict"
    assert first.url == f"http://{NAME}.{NAMESPACE}.{INGRESS_DOMAIN}"
    created = fake_kube.get("inferenceservices", NAMESPACE, NAME)
    assert_valid({key: value for key, value in created.items() if key != "status"})
    assert "canaryTrafficPercent" not in created["spec"]["predictor"]
    assert first.stable_revision == f"{NAME}-predictor-00001"

    second = _rollout(launcher, "gs://models/v2", eval_uri, features)
    assert second.decision.action == PROMOTE, second.decision.reasons
    assert second.decision.canary.requests == POLICY.window_requests
    assert second.stable_revision == second.canary_revision == f"{NAME}-predictor-00002"
    patches = [request.body for request in fake_kube.requests if request.method == "PATCH"]
    assert [patch["spec"]["predictor"]["canaryTrafficPercent"] for patch in patches] == [POLICY.canary_percent, 100]
    assert_valid({key: value for key, value in fake_kube.get("inferenceservices", NAMESPACE, NAME).items() if key != "status"})

    third = _rollout(launcher, "gs://models/broken", eval_uri, features)
    assert third.decision.action == ROLLBACK
    assert [reason.split(" = ")[0] for reason in third.decision.reasons] in (["auc", "log_loss"], ["log_loss"])
    assert third.details["stable model"] == "gs://models/v2" and third.details["canary model"] == "gs://models/broken"
    live = fake_kube.get("inferenceservices", NAMESPACE, NAME)
    assert live["spec"]["predictor"]["canaryTrafficPercent"] == 0
    assert live["status"]["components"]["predictor"]["traffic"][1] == {
        "revisionName": f"{NAME}-predictor-00002", "percent": 100, "tag": "prev", "latestRevision": False,
        "url": f"http://prev-{NAME}-predictor.{NAMESPACE}.{INGRESS_DOMAIN}"}
    assert third.stable_revision == f"{NAME}-predictor-00002" and third.canary_revision == f"{NAME}-predictor-00003"
    assert "**Decision: rollback**" in third.markdown()
    assert cluster_network.refused == []


def _live_spec(fake_kube) -> dict:  # noqa: F811
    return fake_kube.get("inferenceservices", NAMESPACE, NAME)["spec"]


def test_raw_deployment_update_is_smoke_tested_and_restored(fake_kube, kserve, launcher, model_dir, data_dir, tmp_path):  # noqa: F811
    """A failed update is undone entirely: the restore writes the whole previous spec, so no field the
    failed update added (model args, service account) stays live (RFC 7386: absent keys are kept)."""
    eval_uri, features = str(data_dir / "eval.parquet"), model_features(str(model_dir))
    _rollout(launcher, "gs://models/v1", eval_uri, features, deployment_mode="Standard")
    before = _live_spec(fake_kube)
    labels = fake_kube.get("inferenceservices", NAMESPACE, NAME)["metadata"].get("labels")
    kserve.server_for["gs://models/unreachable"] = "http://127.0.0.1:9"  # nothing listens: every request fails
    result = _rollout(launcher, "gs://models/unreachable", eval_uri, features, deployment_mode="Standard",
                      model_args=["--model_format", "onnx"], service_account="another-reader",
                      labels={"dmlops.io/run-id": "failed-run"})
    assert result.decision.action == ROLLBACK
    assert _live_spec(fake_kube) == before
    assert fake_kube.get("inferenceservices", NAMESPACE, NAME)["metadata"].get("labels") == labels
    assert "args" not in before["predictor"]["model"] and "serviceAccountName" not in before["predictor"]


def test_a_deploy_leaves_nothing_of_the_previous_one_live(fake_kube, kserve, launcher, model_dir, data_dir):  # noqa: F811
    """A deploy without feast_config (model args) or service_account removes the previous deploy's."""
    eval_uri, features = str(data_dir / "eval.parquet"), model_features(str(model_dir))
    _rollout(launcher, "gs://models/v1", eval_uri, features,
             model_args=["--feast_config", '{"store": {}, "features": [], "entity_keys": []}'],
             service_account="feature-reader")
    assert _live_spec(fake_kube)["predictor"]["serviceAccountName"] == "feature-reader"
    second = _rollout(launcher, "gs://models/v2", eval_uri, features)
    assert second.decision.action == PROMOTE, second.decision.reasons
    predictor = _live_spec(fake_kube)["predictor"]
    assert "args" not in predictor["model"] and "serviceAccountName" not in predictor
    assert predictor == {**inference_service(NAME, NAMESPACE, "gs://models/v2")["spec"]["predictor"],
                         "canaryTrafficPercent": 100}


def test_rollout_requests_carry_the_pods_service_account_token(fake_kube, kserve, cluster_network, launcher,  # noqa: F811
                                                               model_dir, data_dir, tmp_path):
    """Predictors behind the multi-user overlay's RequestAuthentication accept the namespace's
    service-account tokens; the deploy step sends its own."""
    from dmlops.serving.deploy import service_account_headers

    assert service_account_headers(tmp_path) == {}
    (tmp_path / "token").write_text("eyJhbGciOiJSUzI1NiJ9.payload.signature\n")
    headers = service_account_headers(tmp_path)
    assert headers == {"Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.payload.signature"}
    service = inference_service(NAME, NAMESPACE, "gs://models/v1")
    deploy_kubernetes(launcher, service, str(data_dir / "eval.parquet"), model_features(str(model_dir)), POLICY,
                      headers=headers, timeout_s=30)
    # the readiness polls before the smoke test carry it too
    assert set(cluster_network.authorizations) == {headers["Authorization"]}
    assert len(cluster_network.authorizations) > POLICY.smoke_requests


def test_first_deploy_that_fails_its_smoke_test_fails_the_rollout(fake_kube, kserve, launcher, model_dir, data_dir):  # noqa: F811
    kserve.server_for["gs://models/unreachable"] = "http://127.0.0.1:9"
    with pytest.raises(RolloutFailed, match="smoke test"):
        _rollout(launcher, "gs://models/unreachable", str(data_dir / "eval.parquet"), model_features(str(model_dir)))


def test_deploy_with_the_kubernetes_backend_packages_and_rolls_out(fake_kube, kserve, kfp_artifact_store, model_dir,  # noqa: F811
                                                                   data_dir, tmp_path, monkeypatch):
    """The model packaged at storage_uri (here on KFP's store, written by the step) is what KServe serves."""
    import boto3

    from dmlops.serving.deploy import deploy

    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)))
    kserve.server_for["s3://mlpipeline/models/flights/v9"] = kserve.server_for["gs://models/v1"]
    result = deploy(kfp_artifact_store, str(data_dir / "eval.parquet"), NAME, POLICY, backend="kubernetes",
                    storage_uri="minio://mlpipeline/models/flights/v9", model_format="onnx", model_dir=str(model_dir))
    assert result.decision.action == FIRST_DEPLOY and result.backend == "kubernetes"
    predictor = fake_kube.get("inferenceservices", NAMESPACE, NAME)["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == "s3://mlpipeline/models/flights/v9"
    assert predictor["serviceAccountName"] == KFP_ARTIFACT_READER
    assert predictor["model"]["args"] == ["--model_format", "onnx"]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    packaged = {item["Key"] for item in s3.list_objects_v2(Bucket="mlpipeline", Prefix="models/flights/v9/")["Contents"]}
    assert "models/flights/v9/metadata.json" in packaged
    with pytest.raises(ValueError, match="needs its own model layout: give storage_uri"):
        deploy(str(model_dir), str(data_dir / "eval.parquet"), NAME, POLICY, backend="kubernetes", runtime="triton")


@pytest.fixture
def kfp_artifact_store(monkeypatch, model_dir):
    """KFP's artifact store as the deploy step's pod reaches it: an S3 server (moto) holding the trained
    model at the minio:// URI KFP's launcher gives the artifact, endpoint and credentials in the env."""
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    from dmlops.platform.local import free_ports

    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "minio",
                        "AWS_SECRET_ACCESS_KEY": "minio123", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    s3.create_bucket(Bucket="mlpipeline")
    key = "v2/artifacts/flights/run-1/train/model"
    for path in model_dir.rglob("*"):
        if path.is_file():
            s3.upload_file(str(path), "mlpipeline", f"{key}/{path.relative_to(model_dir).as_posix()}")
    yield f"minio://mlpipeline/{key}"
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps filesystems by arguments, not by endpoint


def test_deploy_serves_a_model_on_kfps_artifact_store(fake_kube, kserve, kfp_artifact_store, data_dir,  # noqa: F811
                                                      tmp_path, monkeypatch):
    """A model artifact on KFP's default store (minio://) is read by the step and served as s3:// with the
    ServiceAccount that holds the store's credentials: KServe reads neither minio:// nor S3 without them."""
    from dmlops.serving.deploy import deploy

    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", NAMESPACE)))
    served_as = "s3://" + kfp_artifact_store.removeprefix("minio://")
    kserve.server_for[served_as] = kserve.server_for["gs://models/v1"]
    result = deploy(kfp_artifact_store, str(data_dir / "eval.parquet"), NAME, POLICY, backend="kubernetes")
    assert result.decision.action == FIRST_DEPLOY
    predictor = fake_kube.get("inferenceservices", NAMESPACE, NAME)["spec"]["predictor"]
    assert predictor["model"]["storageUri"] == served_as
    assert predictor["serviceAccountName"] == KFP_ARTIFACT_READER


def test_storage_kserve_cannot_read_fails_the_rollout_with_kserves_reason(fake_kube, kserve, launcher, model_dir,  # noqa: F811
                                                                         data_dir):
    from dmlops.platform.errors import JobFailed

    features = model_features(str(model_dir))
    with pytest.raises(JobFailed, match="InvalidPredictorSpec: StorageURI not supported: minio:"):
        _rollout(launcher, "minio://mlpipeline/v2/artifacts/model", str(data_dir / "eval.parquet"), features)
