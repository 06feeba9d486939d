"""The launcher against the fake API server, with the test acting as the training operator."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from crds import assert_valid

from dmlops.platform import JobFailed, LaunchError, LaunchTimeout, ResourceRef, resource_name, run_labels
from dmlops.training.jobs import Placement, pytorch_job

NS = "team-a"
MASTER = {
    "training.kubeflow.org/job-name": None,
    "training.kubeflow.org/replica-type": "master",
    "training.kubeflow.org/replica-index": "0",
}


def make_job(task: str = "train", run_id: str = "run-7f3c", workers: int = 2) -> dict:
    name = resource_name("train", run_id, task)
    return pytorch_job(
        name,
        NS,
        image="ghcr.io/dmlops/torch-horovod:0.1.0",
        command=["python", "-m", "dmlops.training.worker"],
        workers=workers,
        placement=Placement(cpu="1", memory="1Gi", labels=run_labels(run_id, task)),
    )


def master_labels(job: dict) -> dict:
    return {**MASTER, "training.kubeflow.org/job-name": job["metadata"]["name"]}


def test_successful_job_streams_master_log_and_names_the_resource(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.set_condition("pytorchjobs", NS, name, "Created", reason="PyTorchJobCreated")
        fake_kube.add_pod(
            NS,
            f"{name}-worker-0",
            {**master_labels(job), "training.kubeflow.org/replica-type": "worker"},
            ("pytorch",),
            "Running",
        )
        fake_kube.log(NS, f"{name}-worker-0", "worker noise that must not be streamed")
        fake_kube.add_pod(NS, f"{name}-master-0", master_labels(job), ("istio-proxy", "pytorch"))  # Pending first
        fake_kube.set_pod_phase(NS, f"{name}-master-0", "Running")
        fake_kube.set_condition("pytorchjobs", NS, name, "Running", reason="PyTorchJobRunning")
        fake_kube.log(NS, f"{name}-master-0", "epoch 1 loss 0.61", "epoch 2 loss 0.48")
        echo.wait_for_line("epoch 2 loss 0.48")
        fake_kube.log(NS, f"{name}-master-0", "saved model")
        fake_kube.set_pod_phase(NS, f"{name}-master-0", "Succeeded")
        fake_kube.set_condition("pytorchjobs", NS, name, "Running", status="False")
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded", reason="PyTorchJobSucceeded", message="done")

    fake_kube.in_background(operator)
    result = launcher.run(job, timeout_s=20)

    stored = fake_kube.get("pytorchjobs", NS, name)
    assert result.resource.to_dict() == {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "namespace": NS,
        "name": name,
        "uid": stored["metadata"]["uid"],
    }
    assert (result.created, result.condition, result.reason, result.message) == (
        True,
        "Succeeded",
        "PyTorchJobSucceeded",
        "done",
    )
    assert [created["spec"] for created in fake_kube.created] == [job["spec"]]
    pod_lines = [line for line in echo if line.startswith("[")]
    assert pod_lines == [
        f"[{name}-master-0] epoch 1 loss 0.61",
        f"[{name}-master-0] epoch 2 loss 0.48",
        f"[{name}-master-0] saved model",
    ]
    log_requests = [r for r in fake_kube.requests if r.path.endswith(f"{name}-master-0/log")]
    assert {r.query["container"] for r in log_requests} == {"pytorch"}
    assert fake_kube.deleted == []


def test_failed_job_raises_with_the_operator_reason_after_printing_the_log(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]
    pod = f"{name}-master-0"

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.set_condition("pytorchjobs", NS, name, "Running")
        fake_kube.add_pod(NS, pod, master_labels(job), ("pytorch",), "Running")
        fake_kube.log(NS, pod, "Traceback (most recent call last):", "ValueError: learning rate must be positive")
        fake_kube.set_pod_phase(NS, pod, "Failed")
        fake_kube.set_condition(
            "pytorchjobs",
            NS,
            name,
            "Failed",
            reason="BackoffLimitExceeded",
            message="PyTorchJob train is failed because 1 Master replica(s) failed.",
        )

    fake_kube.in_background(operator)
    with pytest.raises(JobFailed) as failure:
        launcher.run(job, timeout_s=20)
    assert failure.value.reason == "BackoffLimitExceeded"
    assert "1 Master replica(s) failed" in failure.value.message
    assert failure.value.resource.name == name
    assert f"[{pod}] ValueError: learning rate must be positive" in echo
    assert fake_kube.get("pytorchjobs", NS, name) is not None  # kept for inspection


def test_a_job_deleted_by_someone_else_fails_the_step(fake_kube, launcher):
    job = make_job()
    name = job["metadata"]["name"]

    def operator():
        fake_kube.wait_for(lambda: fake_kube.count("GET", "/pytorchjobs", watch="True") >= 1)
        launcher.delete(launcher_ref(job), propagation_policy="Background")

    fake_kube.in_background(operator)
    with pytest.raises(JobFailed, match="Deleted: the resource was deleted while the step was waiting on it"):
        launcher.run(job, timeout_s=20, stream_logs=False)
    assert fake_kube.deleted[0]["name"] == name


def launcher_ref(job):
    return ResourceRef(job["apiVersion"], job["kind"], job["metadata"]["namespace"], job["metadata"]["name"])


def test_missing_rbac_says_which_permissions_the_service_account_needs(fake_kube, launcher):
    fake_kube.forbid("POST", "pytorchjobs")
    with pytest.raises(
        LaunchError,
        match="HTTP 403 Forbidden.*needs create, get, list, watch, patch and delete on "
        "pytorchjobs.kubeflow.org in namespace team-a",
    ):
        launcher.run(make_job(), timeout_s=5)


def first_attempt(fake_kube, job):
    """What an earlier attempt of the task left behind: the same resource, created directly."""
    from kubernetes import client

    api = client.CustomObjectsApi(fake_kube.api_client())
    return api.create_namespaced_custom_object("kubeflow.org", "v1", NS, "pytorchjobs", job)


def test_retried_step_reattaches_instead_of_creating_a_second_job(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]
    original = first_attempt(fake_kube, job)
    fake_kube.set_condition("pytorchjobs", NS, name, "Running")

    def operator():
        echo.wait_for_line("reattaching")
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    result = launcher.run(make_job(), timeout_s=20, stream_logs=False)

    assert len(fake_kube.created) == 1
    assert fake_kube.count("POST", "/pytorchjobs") == 2  # the retry's create was refused with 409
    assert result.created is False
    assert result.resource.uid == original["metadata"]["uid"]
    assert result.condition == "Succeeded"


def test_retry_after_a_failed_attempt_recreates_the_job(fake_kube, launcher):
    job = make_job()
    name = job["metadata"]["name"]
    original = first_attempt(fake_kube, job)
    fake_kube.set_condition("pytorchjobs", NS, name, "Failed", reason="BackoffLimitExceeded")

    def operator():
        fake_kube.wait_for(lambda: len(fake_kube.created) == 2)
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    result = launcher.run(make_job(), timeout_s=20, stream_logs=False)

    assert fake_kube.deleted == [
        {"plural": "pytorchjobs", "namespace": NS, "name": name, "propagationPolicy": "Foreground"}
    ]
    assert result.created is True
    assert result.resource.uid != original["metadata"]["uid"]


def test_a_resource_of_another_run_with_the_same_name_is_not_taken_over(fake_kube, launcher):
    job = make_job()
    foreign = make_job()
    foreign["metadata"]["labels"] = run_labels("another-run", "train")
    first_attempt(fake_kube, foreign)
    with pytest.raises(LaunchError, match="not created by this run and task"):
        launcher.run(job, timeout_s=5, stream_logs=False)
    assert fake_kube.deleted == []


def test_timeout_raises_and_deletes_the_job(fake_kube, launcher):
    job = make_job()
    name = job["metadata"]["name"]

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.set_condition("pytorchjobs", NS, name, "Created")

    fake_kube.in_background(operator)
    with pytest.raises(LaunchTimeout, match=r"did not finish within 1\.5 s \(last conditions: Created\)"):
        launcher.run(job, timeout_s=1.5, stream_logs=False)
    assert fake_kube.get("pytorchjobs", NS, name) is None
    assert [entry["propagationPolicy"] for entry in fake_kube.deleted] == ["Foreground"]


LAUNCH_SCRIPT = textwrap.dedent(
    """
    from dmlops.platform.kubernetes import KubernetesLauncher
    from dmlops.training.jobs import pytorch_job

    job = pytorch_job("cancel-me", "team-a", image="img", command=["python", "-m", "worker"], workers=2)
    KubernetesLauncher(poll_interval_s=0.05, watch_window_s=5).run(job, timeout_s=60)
    """
)


def test_sigterm_deletes_the_job_and_exits_non_zero(fake_kube, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig"))
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCH_SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        fake_kube.wait_for_object("pytorchjobs", NS, "cancel-me", timeout=60)
        fake_kube.wait_for(lambda: fake_kube.count("GET", "/pytorchjobs", watch="True"), timeout=30)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode != 0
    assert "LaunchCancelled: SIGTERM received: run cancelled, PyTorchJob team-a/cancel-me deleted" in stderr
    assert fake_kube.get("pytorchjobs", NS, "cancel-me") is None
    assert fake_kube.deleted == [
        {"plural": "pytorchjobs", "namespace": NS, "name": "cancel-me", "propagationPolicy": "Foreground"}
    ]
    assert "PyTorchJob team-a/cancel-me: deleted (Foreground)" in stdout


@pytest.mark.parametrize("abrupt", [True, False], ids=["connection-reset", "stream-ended"])
def test_dropped_watch_resumes_from_its_resource_version(fake_kube, launcher, echo, abrupt):
    job = make_job()
    name = job["metadata"]["name"]

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.wait_for(lambda: fake_kube.count("GET", "/pytorchjobs", watch="True") >= 1)
        fake_kube.set_condition("pytorchjobs", NS, name, "Running")
        echo.wait_for_line(": Running")
        fake_kube.drop_streams(abrupt=abrupt)
        # changed while no watch is open: the resumed watch must replay it
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    result = launcher.run(job, timeout_s=20, stream_logs=False)

    assert result.condition == "Succeeded"
    watches = [r for r in fake_kube.requests if r.query.get("watch") == "True"]
    assert len(watches) >= 2
    assert int(watches[1].query["resourceVersion"]) > int(watches[0].query["resourceVersion"])


def test_watch_410_gone_lists_again(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.wait_for(lambda: fake_kube.count("GET", "/pytorchjobs", watch="True") >= 1)
        fake_kube.set_condition("pytorchjobs", NS, name, "Running")
        echo.wait_for_line(": Running")
        fake_kube.expire_history()
        fake_kube.drop_streams()
        echo.wait_for_line("410 Gone")
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    result = launcher.run(job, timeout_s=20, stream_logs=False)

    assert result.condition == "Succeeded"
    relists = [
        r
        for r in fake_kube.requests
        if r.method == "GET" and r.path.endswith("/pytorchjobs") and "watch" not in r.query
    ]
    assert [r.query.get("fieldSelector") for r in relists] == [f"metadata.name={name}"]


def test_log_stream_resumes_after_a_drop_without_repeating_lines(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]
    pod = f"{name}-master-0"

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.add_pod(NS, pod, master_labels(job), ("pytorch",), "Running")
        fake_kube.log(NS, pod, "step 1", "step 2")
        echo.wait_for_line("step 2")
        fake_kube.drop_streams()
        fake_kube.log(NS, pod, "step 3")
        echo.wait_for_line("step 3")
        fake_kube.set_pod_phase(NS, pod, "Succeeded")
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    launcher.run(job, timeout_s=20)

    assert [line for line in echo if line.startswith("[")] == [f"[{pod}] step {i}" for i in (1, 2, 3)]
    assert fake_kube.count("GET", f"/pods/{pod}/log") >= 2


def test_logs_of_a_job_that_finished_before_its_pod_was_seen_are_still_printed(fake_kube, launcher, echo):
    job = make_job()
    name = job["metadata"]["name"]
    pod = f"{name}-master-0"

    def operator():
        fake_kube.wait_for_object("pytorchjobs", NS, name)
        fake_kube.add_pod(NS, pod, master_labels(job), ("pytorch",), "Succeeded")
        fake_kube.log(NS, pod, "all done")
        fake_kube.set_condition("pytorchjobs", NS, name, "Succeeded")

    fake_kube.in_background(operator)
    launcher.run(job, timeout_s=20)
    assert f"[{pod}] all done" in echo


def inference_service(name: str, storage_uri: str, canary: int | None = None) -> dict:
    predictor = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage_uri}}
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "flights"}},
        "spec": {"predictor": predictor},
    }


def test_apply_reports_a_model_that_fails_to_load(fake_kube, launcher):
    def fail_load():
        fake_kube.wait_for_object("inferenceservices", NS, "broken")
        fake_kube.patch_status(
            "inferenceservices",
            NS,
            "broken",
            {
                "observedGeneration": 1,
                "modelStatus": {
                    "transitionStatus": "BlockedByFailedLoad",
                    "lastFailureInfo": {"reason": "ModelLoadFailed", "message": "no model.joblib under gs://models/v9"},
                },
            },
        )

    fake_kube.in_background(fail_load)
    with pytest.raises(JobFailed, match="ModelLoadFailed: no model.joblib under gs://models/v9"):
        launcher.apply(inference_service("broken", "gs://models/v9"), timeout_s=20)
    assert fake_kube.get("inferenceservices", NS, "broken") is not None


def test_invalid_resources_are_refused_before_any_request(fake_kube, launcher):
    job = make_job()
    job["metadata"]["name"] = "Train_Model"
    with pytest.raises(LaunchError, match="not a DNS-1035 label"):
        launcher.run(job, timeout_s=5)
    job = make_job()
    del job["metadata"]["namespace"]
    with pytest.raises(LaunchError, match="metadata.namespace is empty"):
        launcher.run(job, timeout_s=5)
    with pytest.raises(LaunchError, match="no completion rule for kind 'Deployment'"):
        launcher.run(
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": NS}}, timeout_s=5
        )
    assert fake_kube.requests == []
