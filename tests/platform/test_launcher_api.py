"""The launcher against a Kubernetes API: the real kube-apiserver (envtest) when its binaries are there,
else tests/fake_kube.py. The tests act as the operators, writing status through the status subresource.

Tests marked ``envtest`` show what only the real server does (pruning, CRD defaults, CEL rules, the
annotation limit of client-side apply, watch expiry, RBAC); they skip without envtest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from dmlops.platform import (
    InvalidResource,
    JobFailed,
    LaunchError,
    LaunchTimeout,
    ResourceRef,
    resource_name,
    run_labels,
)
from dmlops.platform.kubernetes import KubernetesLauncher
from dmlops.training.jobs import Placement, pytorch_job
from kubeharness.envtest import EnvtestUnavailable, find_assets

ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
PYTORCH = ("kubeflow.org", "v1", "pytorchjobs")
DEPLOYMENTS = ("apps", "v1", "deployments")
MODE = "serving.kserve.io/deploymentMode"


@dataclass
class Api:
    """The API server under test: ``real`` (envtest) or the fake, and the namespace the test owns."""

    real: bool
    namespace: str
    api_client: Callable[..., client.ApiClient]
    kubeconfig: Path

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api_client())

    def launcher(self, echo: list[str], token: str | None = None) -> KubernetesLauncher:
        api = self.api_client(token) if token else self.api_client()
        return KubernetesLauncher(api, echo=echo.append, poll_interval_s=0.05, watch_window_s=2, log_drain_s=1)

    def get(self, resource: tuple[str, str, str], name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(*resource[:2], self.namespace, resource[2], name)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def patch(self, resource: tuple[str, str, str], name: str, body: dict) -> dict:
        return self.custom.patch_namespaced_custom_object(*resource[:2], self.namespace, resource[2], name, body)

    def patch_status(self, resource: tuple[str, str, str], name: str, status: dict) -> dict:
        """Write status as a controller does: a merge patch of the status subresource."""
        return self.custom.patch_namespaced_custom_object_status(
            *resource[:2], self.namespace, resource[2], name, {"status": status}
        )

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = predicate()
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {predicate}")

    def generation(self, resource: tuple[str, str, str], name: str) -> int:
        found = self.get(resource, name)
        return found["metadata"]["generation"] if found else 0


def envtest_available() -> bool:
    try:
        find_assets()
    except EnvtestUnavailable:
        return False
    return True


@pytest.fixture
def api(request, tmp_path) -> Api:
    """The real API server when available (a fresh namespace), else the fake."""
    if envtest_available():
        server = request.getfixturevalue("kube_api")
        return Api(True, request.getfixturevalue("kube_namespace"), server.api_client, server.kubeconfig)
    fake = request.getfixturevalue("fake_kube")
    return Api(False, "team-a", lambda token=None: fake.api_client(), fake.write_kubeconfig(tmp_path / "kubeconfig"))


@pytest.fixture
def real(api) -> Api:
    if not api.real:
        pytest.skip("only the real API server shows this: set DMLOPS_ENVTEST_KIT or KUBEBUILDER_ASSETS (and install etcd)")
    return api


class Background:
    """Runs the operator's script beside the launcher; ``check`` re-raises what failed in it."""

    def __init__(self, script: Callable[[], None]):
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def _run(self, script: Callable[[], None]) -> None:
        try:
            script()
        except BaseException as error:  # noqa: BLE001 - reported by check()
            self.error = error

    def check(self) -> None:
        self.thread.join(30)
        if self.error is not None:
            raise self.error


def wait_for_line(echo: list[str], text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(text in line for line in list(echo)):
            return True
        time.sleep(0.02)
    return False


def make_job(namespace: str, task: str = "train") -> dict:
    return pytorch_job(
        resource_name("train", "run-7f3c", task),
        namespace,
        image="ghcr.io/dmlops/torch-horovod:0.1.0",
        command=["python", "-m", "dmlops.training.worker"],
        workers=1,
        placement=Placement(cpu="1", memory="1Gi", labels=run_labels("run-7f3c", task)),
    )


def inference_service(namespace: str, storage_uri: str, mode: str = "Serverless", **predictor: Any) -> dict:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "flights", "namespace": namespace, "labels": {"app": "flights"},
                     "annotations": {MODE: mode}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}, **predictor}},
    }


def condition(kind: str, status: str = "True", reason: str = "") -> dict:
    return {"type": kind, "status": status, "reason": reason, "lastTransitionTime": "2026-01-01T00:00:00Z"}


def revision_status(revision: str, ready: str, observed: int, canary: int | None = None, previous: str = "") -> dict:
    """The status KServe propagates from the Knative Service (inference_service_status.go, PropagateStatus)."""
    traffic = [{"revisionName": ready, "latestRevision": True, "percent": 100 if canary is None else canary,
                "tag": "latest"}]
    if canary is not None:
        traffic.append({"revisionName": previous, "latestRevision": False, "percent": 100 - canary, "tag": "prev"})
    settled = revision == ready
    return {
        "observedGeneration": observed,  # the Knative Service's generation, not the InferenceService's
        "conditions": [condition("PredictorReady", "True" if settled else "Unknown"),
                       condition("Ready", "True" if settled else "Unknown")],
        "components": {"predictor": {"latestCreatedRevision": revision, "latestReadyRevision": ready,
                                     "traffic": traffic}},
    }


# -- what the API server checks ------------------------------------------------------------------


def test_a_misspelt_field_is_refused_instead_of_pruned(api):
    job = make_job(api.namespace)
    master = job["spec"]["pytorchReplicaSpecs"]["Master"]
    master["replica"] = master.pop("replicas")
    with pytest.raises(InvalidResource, match="HTTP 400.*unknown field.*replica"):
        api.launcher([]).run(job, timeout_s=10, stream_logs=False)
    assert api.get(PYTORCH, job["metadata"]["name"]) is None


@pytest.mark.envtest
def test_without_strict_validation_the_server_prunes_a_misspelt_field(real):
    job = make_job(real.namespace)
    job["spec"]["pytorchReplicaSpecs"]["Master"]["replica"] = 3
    response = real.custom.create_namespaced_custom_object(
        *PYTORCH[:2], real.namespace, PYTORCH[2], job, _preload_content=False
    )
    assert response.status == 201
    assert response.headers["Warning"] == '299 - "unknown field \\"spec.pytorchReplicaSpecs.Master.replica\\""'
    stored = real.get(PYTORCH, job["metadata"]["name"])
    assert "replica" not in stored["spec"]["pytorchReplicaSpecs"]["Master"]


def train_job(namespace: str, **spec: Any) -> dict:
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "train-cel", "namespace": namespace, "labels": run_labels("run-7f3c", "train")},
        "spec": {"runtimeRef": {"name": "torch-distributed"}, **spec},
    }


@pytest.mark.envtest
def test_crd_defaults_are_applied(real):
    stored = real.custom.create_namespaced_custom_object(
        "trainer.kubeflow.org", "v1alpha1", real.namespace, "trainjobs", train_job(real.namespace),
        field_validation="Strict",
    )
    assert stored["spec"]["runtimeRef"] == {
        "name": "torch-distributed", "apiGroup": "trainer.kubeflow.org", "kind": "ClusterTrainingRuntime"
    }
    assert (stored["spec"]["suspend"], stored["spec"]["managedBy"]) == (False, "trainer.kubeflow.org/trainjob-controller")


@pytest.mark.envtest
@pytest.mark.parametrize("spec, message", [
    ({"managedBy": "someone-else"}, "ManagedBy must be trainer.kubeflow.org/trainjob-controller"),
    ({"trainer": {"numProcPerNode": 0}}, "numProcPerNode must be greater than or equal to 1"),
])
def test_cel_rules_of_the_trainjob_crd_refuse_the_resource(real, spec, message):
    with pytest.raises(InvalidResource, match=f"HTTP 422.*{message}"):
        real.launcher([]).run(train_job(real.namespace, **spec), timeout_s=10, stream_logs=False)


@pytest.mark.envtest
def test_large_crds_are_served_though_client_side_apply_could_not_store_them(real):
    """The fixture applies the CRDs server-side: client-side apply would store the whole CRD in the
    last-applied annotation, which the server limits to 256 KiB."""
    extensions = client.ApiextensionsV1Api(real.api_client())
    raw = extensions.read_custom_resource_definition("pytorchjobs.kubeflow.org", _preload_content=False).data
    assert len(raw) > 256 * 1024
    annotation = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": raw.decode()}}}
    with pytest.raises(ApiException) as refused:
        extensions.patch_custom_resource_definition("pytorchjobs.kubeflow.org", annotation)
    assert refused.value.status == 422
    assert "Too long: may not be more than 262144 bytes" in refused.value.body


def test_strategic_merge_patch_is_refused_on_a_custom_resource(api):
    job = make_job(api.namespace)
    api.custom.create_namespaced_custom_object(*PYTORCH[:2], api.namespace, PYTORCH[2], job)
    with pytest.raises(ApiException) as refused:
        api.api_client().call_api(
            f"/apis/kubeflow.org/v1/namespaces/{api.namespace}/pytorchjobs/{job['metadata']['name']}", "PATCH",
            header_params={"Content-Type": "application/strategic-merge-patch+json", "Accept": "application/json"},
            body={"metadata": {"labels": {"a": "b"}}}, auth_settings=["BearerToken"],
        )
    assert refused.value.status == 415


# -- run: create or reattach, cancel, watch ------------------------------------------------------


def test_a_retried_step_reattaches_to_the_job_of_its_first_attempt(api):
    job = make_job(api.namespace)
    name = job["metadata"]["name"]
    first = api.custom.create_namespaced_custom_object(*PYTORCH[:2], api.namespace, PYTORCH[2], job)
    echo: list[str] = []

    def operator():
        assert wait_for_line(echo, "reattaching", 20)
        api.patch_status(PYTORCH, name, {"conditions": [condition("Succeeded", reason="PyTorchJobSucceeded")]})

    background = Background(operator)
    result = api.launcher(echo).run(make_job(api.namespace), timeout_s=30, stream_logs=False)
    background.check()
    assert (result.created, result.resource.uid, result.condition) == (False, first["metadata"]["uid"], "Succeeded")


def test_a_failed_job_raises_with_the_operators_reason_and_is_kept(api):
    job = make_job(api.namespace)
    name = job["metadata"]["name"]

    def operator():
        api.wait_for(lambda: api.get(PYTORCH, name))
        api.patch_status(PYTORCH, name, {"conditions": [
            condition("Running", "False"),
            {**condition("Failed", reason="BackoffLimitExceeded"),
             "message": "PyTorchJob train is failed because 1 Master replica(s) failed."},
        ]})

    background = Background(operator)
    with pytest.raises(JobFailed) as failure:
        api.launcher([]).run(job, timeout_s=30, stream_logs=False)
    background.check()
    assert (failure.value.reason, failure.value.resource.name) == ("BackoffLimitExceeded", name)
    assert "1 Master replica(s) failed" in failure.value.message
    assert api.get(PYTORCH, name) is not None  # kept for inspection


def test_a_job_of_another_run_with_the_same_name_is_not_taken_over(api):
    foreign = make_job(api.namespace)
    foreign["metadata"]["labels"] = run_labels("another-run", "train")
    api.custom.create_namespaced_custom_object(*PYTORCH[:2], api.namespace, PYTORCH[2], foreign)
    with pytest.raises(LaunchError, match="not created by this run and task"):
        api.launcher([]).run(make_job(api.namespace), timeout_s=10, stream_logs=False)
    assert api.get(PYTORCH, foreign["metadata"]["name"])["metadata"].get("deletionTimestamp") is None


def collect_garbage(api: Api, name: str) -> None:
    """The garbage collector's part in a foreground deletion, for a job without dependents left: it removes
    the ``foregroundDeletion`` finalizer and the API server deletes the object (kubernetes
    pkg/controller/garbagecollector/garbagecollector.go, processDeletingDependentsItem). The fake deletes
    at once."""
    found = api.wait_for(lambda: (api.get(PYTORCH, name) or {}).get("metadata", {}).get("deletionTimestamp")
                         and api.get(PYTORCH, name))
    assert found["metadata"]["finalizers"] == ["foregroundDeletion"]
    api.patch(PYTORCH, name, {"metadata": {"finalizers": None}})


def test_a_retry_after_a_failed_attempt_deletes_it_and_creates_the_job_again(api):
    job = make_job(api.namespace)
    name = job["metadata"]["name"]
    first = api.custom.create_namespaced_custom_object(*PYTORCH[:2], api.namespace, PYTORCH[2], job)
    api.patch_status(PYTORCH, name, {"conditions": [condition("Failed", reason="BackoffLimitExceeded")]})
    echo: list[str] = []

    def operator():
        if api.real:
            collect_garbage(api, name)
        api.wait_for(lambda: wait_for_line(echo, ": created (uid", 0.05))
        api.patch_status(PYTORCH, name, {"conditions": [condition("Succeeded")]})

    background = Background(operator)
    result = api.launcher(echo).run(make_job(api.namespace), timeout_s=30, stream_logs=False)
    background.check()
    assert result.created is True
    assert result.resource.uid != first["metadata"]["uid"]
    assert any("deleted (Foreground)" in line for line in echo)


def test_a_job_deleted_by_someone_else_fails_the_step(api):
    job = make_job(api.namespace)
    name = job["metadata"]["name"]
    echo: list[str] = []

    def operator():
        api.wait_for(lambda: wait_for_line(echo, ": created (uid", 0.05))
        api.custom.delete_namespaced_custom_object(*PYTORCH[:2], api.namespace, PYTORCH[2], name,
                                                   propagation_policy="Background")

    background = Background(operator)
    with pytest.raises(JobFailed, match="Deleted: the resource was deleted while the step was waiting on it"):
        api.launcher(echo).run(job, timeout_s=30, stream_logs=False)
    background.check()


def test_a_timeout_deletes_the_job(api):
    job = make_job(api.namespace)
    name = job["metadata"]["name"]
    with pytest.raises(LaunchTimeout, match="did not finish within 2 s"):
        api.launcher([]).run(job, timeout_s=2.0, stream_logs=False)
    left = api.get(PYTORCH, name)
    assert left is None or left["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert (left is None) != api.real


LAUNCH_SCRIPT = textwrap.dedent(
    """
    import sys
    from dmlops.platform.kubernetes import KubernetesLauncher
    from dmlops.training.jobs import pytorch_job

    job = pytorch_job("cancel-me", sys.argv[1], image="img", command=["python", "-m", "worker"], workers=1)
    KubernetesLauncher(poll_interval_s=0.05, watch_window_s=5).run(job, timeout_s=120)
    """
)


def test_sigterm_deletes_the_job_with_foreground_propagation(api):
    env = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(api.kubeconfig)
    process = subprocess.Popen([sys.executable, "-c", LAUNCH_SCRIPT, api.namespace], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if ": created (uid" in line:
                break
        time.sleep(0.5)  # into the watch
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode != 0
    assert f"SIGTERM received: run cancelled, PyTorchJob {api.namespace}/cancel-me deleted" in stderr
    left = api.get(PYTORCH, "cancel-me")
    if api.real:
        # No garbage collector runs under envtest: the object waits for it, marked for foreground deletion.
        assert left["metadata"]["deletionTimestamp"]
        assert left["metadata"]["finalizers"] == ["foregroundDeletion"]
    else:
        assert left is None


@pytest.mark.envtest
def test_a_watch_that_expired_410_is_listed_again(real):
    """Updating a CRD restarts its storage and watch cache: a watch resumed from a resourceVersion
    before that is answered 410 Gone, and the launcher lists again."""
    job = make_job(real.namespace, task="expire")
    name = job["metadata"]["name"]
    echo: list[str] = []
    extensions = client.ApiextensionsV1Api(real.api_client())

    crd = extensions.read_custom_resource_definition("pytorchjobs.kubeflow.org", _preload_content=False)
    versions = json.loads(crd.data)["spec"]["versions"]

    def operator():
        real.wait_for(lambda: real.get(PYTORCH, name))
        assert wait_for_line(echo, "created", 20)
        column = {"name": "Test", "type": "string", "jsonPath": ".metadata.name"}
        with_column = [{**versions[0], "additionalPrinterColumns": [
            *versions[0].get("additionalPrinterColumns", []), column]}, *versions[1:]]
        extensions.patch_custom_resource_definition("pytorchjobs.kubeflow.org", {"spec": {"versions": with_column}})
        real.wait_for(lambda: wait_for_line(echo, "410 Gone", 0.1) or wait_for_line(echo, "watch dropped", 0.1))
        real.patch_status(PYTORCH, name, {"conditions": [condition("Succeeded")]})

    background = Background(operator)
    try:
        result = real.launcher(echo).run(job, timeout_s=60, stream_logs=False)
        background.check()
    finally:  # the CRD as the fixture installed it
        extensions.patch_custom_resource_definition("pytorchjobs.kubeflow.org", {"spec": {"versions": versions}})
    assert result.condition == "Succeeded"
    assert any("410 Gone" in line for line in echo), echo


# -- apply: the live object equals the built one, and waits for its own rollout -------------------


def knative_operator(api: Api, generation: int, revision: str, observed: int, echo: list[str], **traffic: Any):
    """KServe in Knative mode: once the InferenceService is at ``generation``, report ``revision`` ready.

    When the spec changed, the new revision is first created but not ready (after the launcher said what
    it waits for, so that a launcher that took the stale status would already have returned)."""

    def operator():
        api.wait_for(lambda: api.generation(ISVC, "flights") >= generation)
        previous = ((api.get(ISVC, "flights").get("status") or {}).get("components") or {}).get("predictor") or {}
        if previous.get("latestReadyRevision") not in (None, revision):
            wait_for_line(echo, "rolling out: waiting for", 3)
            api.patch_status(ISVC, "flights", revision_status(revision, previous["latestReadyRevision"], observed))
        api.patch_status(ISVC, "flights", revision_status(revision, revision, observed, **traffic))

    return Background(operator)


def test_apply_removes_the_fields_the_new_resource_no_longer_has(api):
    """Issue 10 item 5: a merge patch that leaves a key out keeps it; the launcher sends null for it."""
    echo: list[str] = []
    launcher = api.launcher(echo)
    first = inference_service(api.namespace, "s3://models/v1", serviceAccountName="model-reader")
    first["spec"]["predictor"]["model"]["args"] = ["--feast_config=/etc/feast/store.yaml"]
    first["metadata"]["labels"]["canary"] = "yes"
    operator = knative_operator(api, 1, "flights-predictor-00001", 1, echo)
    launcher.apply(first, timeout_s=30)
    operator.check()

    second = inference_service(api.namespace, "s3://models/v2")
    operator = knative_operator(api, 2, "flights-predictor-00002", 2, echo)
    result = launcher.apply(second, timeout_s=30)
    operator.check()

    live = api.get(ISVC, "flights")
    assert "serviceAccountName" not in live["spec"]["predictor"]
    assert "args" not in live["spec"]["predictor"]["model"]
    assert live["metadata"]["labels"] == {"app": "flights"}
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v2"
    assert result.created is False


def test_apply_retries_when_the_resource_changed_since_it_was_read(api, monkeypatch):
    echo: list[str] = []
    launcher = api.launcher(echo)
    operator = knative_operator(api, 1, "flights-predictor-00001", 1, echo)
    launcher.apply(inference_service(api.namespace, "s3://models/v1"), timeout_s=30)
    operator.check()
    reads = []
    original_get = launcher._get

    def get_then_someone_else_writes(rule, ref):
        found = original_get(rule, ref)
        if not reads:
            api.patch(ISVC, "flights", {"metadata": {"annotations": {"edited-by": "someone"}}})
        reads.append(found["metadata"]["resourceVersion"])
        return found

    monkeypatch.setattr(launcher, "_get", get_then_someone_else_writes)
    operator = knative_operator(api, 2, "flights-predictor-00002", 2, echo)
    launcher.apply(inference_service(api.namespace, "s3://models/v2"), timeout_s=30)
    operator.check()
    assert len(reads) == 2 and reads[0] != reads[1]  # the first patch met a 409 and was sent again
    live = api.get(ISVC, "flights")
    assert "edited-by" not in live["metadata"]["annotations"]  # the live object is the built one
    assert live["spec"]["predictor"]["model"]["storageUri"] == "s3://models/v2"


def test_apply_waits_for_the_new_revision_not_the_knative_services_generation(api):
    """Issue 10 item 4, Knative: KServe copies observedGeneration from the Knative Service (here ahead of the
    InferenceService: KServe rewrote it when its configuration changed), so the old revision's Ready status
    already looks current right after the update."""
    echo: list[str] = []
    launcher = api.launcher(echo)
    operator = knative_operator(api, 1, "flights-predictor-00001", 3, echo)
    launcher.apply(inference_service(api.namespace, "s3://models/v1"), timeout_s=30)
    operator.check()

    operator = knative_operator(api, 2, "flights-predictor-00002", 4, echo, canary=10,
                                previous="flights-predictor-00001")
    result = launcher.apply(inference_service(api.namespace, "s3://models/v2", canaryTrafficPercent=10), timeout_s=30)
    operator.check()
    predictor = result.status["components"]["predictor"]
    assert predictor["latestReadyRevision"] == "flights-predictor-00002"
    assert predictor["traffic"][0] == {"revisionName": "flights-predictor-00002", "latestRevision": True,
                                       "percent": 10, "tag": "latest"}
    assert any("waiting for a new revision" in line for line in echo)


def test_a_failure_left_by_the_previous_update_does_not_fail_the_next(api):
    """The model of the last deploy failed to load; KServe's status says so until it reconciles the fix."""
    echo: list[str] = []
    launcher = api.launcher(echo)

    def fail_to_load():
        api.wait_for(lambda: api.get(ISVC, "flights"))
        api.patch_status(ISVC, "flights", {
            "conditions": [condition("Ready", "False", "RevisionFailed")],
            "components": {"predictor": {"latestCreatedRevision": "flights-predictor-00001"}},
            "modelStatus": {"transitionStatus": "BlockedByFailedLoad", "lastFailureInfo": {
                "reason": "ModelLoadFailed", "message": "no model.joblib under s3://models/v1"}},
        })

    operator = Background(fail_to_load)
    with pytest.raises(JobFailed, match="ModelLoadFailed: no model.joblib under s3://models/v1"):
        launcher.apply(inference_service(api.namespace, "s3://models/v1"), timeout_s=30)
    operator.check()

    def fixed():
        api.wait_for(lambda: api.generation(ISVC, "flights") >= 2)
        assert wait_for_line(echo, "rolling out: waiting for a new revision", 10)
        api.patch_status(ISVC, "flights", {"modelStatus": {"transitionStatus": "UpToDate", "lastFailureInfo": None},
                                           **revision_status("flights-predictor-00002", "flights-predictor-00002", 2)})

    operator = Background(fixed)
    result = launcher.apply(inference_service(api.namespace, "s3://models/v2"), timeout_s=30)
    operator.check()
    assert result.status["components"]["predictor"]["latestReadyRevision"] == "flights-predictor-00002"


def deployment(namespace: str, storage_uri: str) -> dict:
    labels = {"serving.kserve.io/inferenceservice": "flights", "component": "predictor"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "flights-predictor", "namespace": namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "kserve-container", "image": "dmlops/predictor",
                                     "args": [f"--storage_uri={storage_uri}"]}]}}},
    }


def rollout_status(observed: int, replicas: int, updated: int, available: int, done: bool) -> dict:
    """A Deployment's status as the deployment controller writes it (kubernetes pkg/controller/deployment/sync.go)."""
    progressing = condition("Progressing", "True", "NewReplicaSetAvailable" if done else "ReplicaSetUpdated")
    return {"observedGeneration": observed, "replicas": replicas, "updatedReplicas": updated,
            "readyReplicas": available, "availableReplicas": available,
            "conditions": [condition("Available", "True", "MinimumReplicasAvailable"), progressing]}


def raw_isvc_status(observed: int, ready: str) -> dict:
    """KServe's PropagateRawStatus: Ready from the Deployment's conditions, its observedGeneration copied."""
    return {"observedGeneration": observed, "conditions": [condition("PredictorReady", ready), condition("Ready", ready)]}


def test_apply_waits_for_the_deployments_rollout_in_standard_mode(api):
    """Issue 10 item 4, Standard (RawDeployment): Ready stays True from the old pods and observedGeneration is
    the Deployment's (ahead of the InferenceService's after the HPA scaled it), so only the Deployment's
    rollout tells that the new pods serve."""
    echo: list[str] = []
    launcher = api.launcher(echo)
    service = inference_service(api.namespace, "s3://models/v1", mode="RawDeployment")
    dep = api.custom.create_namespaced_custom_object(*DEPLOYMENTS[:2], api.namespace, DEPLOYMENTS[2],
                                                     deployment(api.namespace, "s3://models/v1"))
    for replicas in (3, 1):  # the HPA scaled it out and back in: Deployment generation 3
        dep = api.patch(DEPLOYMENTS, "flights-predictor", {"spec": {"replicas": replicas}})
    api.patch_status(DEPLOYMENTS, "flights-predictor", rollout_status(3, 1, 1, 1, done=True))

    def first_reconcile():
        api.wait_for(lambda: api.get(ISVC, "flights"))
        api.patch_status(ISVC, "flights", raw_isvc_status(3, "True"))

    operator = Background(first_reconcile)
    launcher.apply(service, timeout_s=30)
    operator.check()

    def roll_out():
        api.wait_for(lambda: api.generation(ISVC, "flights") >= 2)
        wait_for_line(echo, "rolling out: waiting for its Deployment to be updated", 3)
        api.patch(DEPLOYMENTS, "flights-predictor", deployment(api.namespace, "s3://models/v2"))  # generation 4
        api.patch_status(DEPLOYMENTS, "flights-predictor", rollout_status(4, 2, 1, 1, done=False))
        api.patch_status(ISVC, "flights", raw_isvc_status(4, "True"))
        wait_for_line(echo, "1 of 1 pods updated, 2 running", 3)
        api.patch_status(DEPLOYMENTS, "flights-predictor", rollout_status(4, 1, 1, 1, done=True))
        api.patch_status(ISVC, "flights", raw_isvc_status(4, "True"))

    operator = Background(roll_out)
    launcher.apply(inference_service(api.namespace, "s3://models/v2", mode="RawDeployment"), timeout_s=30)
    served = api.get(DEPLOYMENTS, "flights-predictor")  # what answers when apply returns
    operator.check()
    assert served["spec"]["template"]["spec"]["containers"][0]["args"] == ["--storage_uri=s3://models/v2"]
    assert (served["metadata"]["generation"], served["status"]["updatedReplicas"], served["status"]["replicas"]) == (
        4, 1, 1)


# -- RBAC: the project's Role, as a ServiceAccount's token ----------------------------------------


@pytest.mark.envtest
def test_the_launcher_as_the_pipeline_runner_lacks_only_what_the_role_lacks(real):
    from kubeharness.rbac import bind_project_role, service_account_token

    bind_project_role(real.api_client(), real.namespace, "pipeline-runner")
    token = service_account_token(real.api_client(), real.namespace, "pipeline-runner")
    echo: list[str] = []
    launcher = real.launcher(echo, token=token)

    job = make_job(real.namespace)
    name = job["metadata"]["name"]

    def operator():
        real.wait_for(lambda: real.get(PYTORCH, name))
        real.patch_status(PYTORCH, name, {"conditions": [condition("Succeeded", reason="PyTorchJobSucceeded")]})

    background = Background(operator)
    assert launcher.run(job, timeout_s=30).condition == "Succeeded"  # create, watch, list and get pods: granted
    background.check()

    isvc = ResourceRef("serving.kserve.io/v1beta1", "InferenceService", real.namespace, "flights")
    real.custom.create_namespaced_custom_object(*ISVC[:2], real.namespace, ISVC[2],
                                                inference_service(real.namespace, "s3://models/v1"))
    with pytest.raises(LaunchError) as refused:  # the Role grants no delete on InferenceServices
        launcher.delete(isvc)
    assert str(refused.value).startswith(
        f"could not delete InferenceService {real.namespace}/flights: HTTP 403 Forbidden: "
        f'inferenceservices.serving.kserve.io "flights" is forbidden: User '
        f'"system:serviceaccount:{real.namespace}:pipeline-runner" cannot delete resource "inferenceservices"'
    )
    assert "needs create, get, list, watch, patch and delete on inferenceservices.serving.kserve.io" in str(
        refused.value)
