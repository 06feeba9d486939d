"""Spark jobs on the Spark Operator: the SparkApplication dmlops builds, its completion rule, and the launcher
running it, against the fake API (the test as the operator) and against a real API server (envtest) with
the simulated Spark Operator and its validating webhook (tests/kubeharness/controllers/spark_operator.py).

envtest runs no kubelet: those tests play it, setting the driver pod's phase through its status.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from crds import crd_errors
from dmlops.data import spark_application as spark
from dmlops.data.spark_application import (
    DRIVER_SCRIPT,
    SparkJobError,
    SparkResources,
    pod_arguments,
    run_entry_point,
    run_spark_job,
    spark_application,
)
from dmlops.platform import InvalidResource, JobFailed, resource_name, rule_for, run_labels
from dmlops.platform.kubernetes import KubernetesLauncher
from dmlops.platform.storage import StorageError

REPO = Path(__file__).resolve().parents[2]
IMAGE = "ghcr.io/dmlops/spark:0.1.0"
RUN_ID = "run-5p4rk"
SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")


def make_app(namespace: str = "team-a", task: str = "validate", **options) -> dict:
    return spark_application(resource_name("spark", RUN_ID, task), namespace, "validate",
                             {"data": "s3://lake/flights", "max_bad_fraction": 0.01}, image=IMAGE,
                             labels=run_labels(RUN_ID, task), **options)


# -- the resource ---------------------------------------------------------------------------------


def test_the_spark_application_validates_against_the_operators_crd():
    uris = pod_arguments({"data": "minio://mlpipeline/v2/artifacts/run/ingest/data"})[1]
    from dmlops.platform.storage import pod_env

    app = make_app(resources=SparkResources(driver_cores=2, driver_memory="4g", executor_cores=3,
                                            executor_memory="8g", executor_instances=5), env=pod_env(uris))
    assert crd_errors(app) == []
    spec = app["spec"]
    assert (spec["type"], spec["mode"], spec["restartPolicy"], spec["mainApplicationFile"]) == (
        "Python", "cluster", {"type": "Never"}, f"local://{DRIVER_SCRIPT}")
    assert spec["arguments"] == ["validate", '{"data": "s3://lake/flights", "max_bad_fraction": 0.01}']
    assert (spec["driver"]["cores"], spec["driver"]["memory"], spec["driver"]["serviceAccount"]) == (2, "4g", "dmlops-spark")
    assert (spec["executor"]["cores"], spec["executor"]["memory"], spec["executor"]["instances"]) == (3, "8g", 5)
    assert app["metadata"]["labels"] == spec["driver"]["labels"] == run_labels(RUN_ID, "validate")
    secret = {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}}
    assert {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": secret} in spec["executor"]["env"]


def test_the_crd_check_catches_what_the_builder_must_not_emit():
    app = make_app()
    app["spec"]["driver"]["cores"] = 0  # the CRD's minimum is 1
    app["spec"]["mode"] = "standalone"
    errors = crd_errors(app)
    assert any("spec.driver.cores" in error or "cores" in error for error in errors)
    assert any("standalone" in error for error in errors)


def test_the_name_is_the_same_for_a_retried_task_and_differs_per_task():
    assert make_app()["metadata"]["name"] == make_app()["metadata"]["name"]
    assert make_app()["metadata"]["name"] != make_app(task="compare")["metadata"]["name"]


def test_pod_arguments_read_minio_as_s3_and_refuse_local_paths():
    converted, uris = pod_arguments({"data": "minio://mlpipeline/a", "nested": {"reference": "gs://b/c"},
                                     "columns": ["dep_delay", "arr_delay"], "threshold": 0.2})
    assert converted == {"data": "s3://mlpipeline/a", "nested": {"reference": "gs://b/c"},
                         "columns": ["dep_delay", "arr_delay"], "threshold": 0.2}
    assert uris == ["minio://mlpipeline/a", "gs://b/c"]
    with pytest.raises(StorageError, match=r"^report\.path=/tmp/outputs/report: the pods this step starts cannot"):
        pod_arguments({"report": {"path": "/tmp/outputs/report"}})


def test_bad_resources_and_a_missing_image_are_refused():
    with pytest.raises(ValueError, match="executor_instances must be at least 1"):
        SparkResources(executor_instances=0)
    with pytest.raises(ValueError, match="needs the image"):
        spark_application("spark-x", "ns", "validate", {}, image="")
    with pytest.raises(ValueError, match="needs run_id and task_name"):
        run_spark_job("validate", {}, backend="kubernetes")


def test_the_spark_image_has_the_driver_script_and_the_spark_version_the_application_names():
    dockerfile = (REPO / "containers" / "spark" / "Dockerfile").read_text()
    assert f"COPY src/dmlops/data/spark_driver.py {DRIVER_SCRIPT}\n" in dockerfile
    lock = (REPO / "containers" / "spark" / "requirements.lock").read_text()
    assert f"\npyspark=={spark.SPARK_VERSION} " in lock


# -- the completion rule ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["", "SUBMITTED", "RUNNING", "SUCCEEDING", "FAILING", "SUBMISSION_FAILED",
                                   "PENDING_RERUN", "INVALIDATING", "UNKNOWN"])
def test_only_completed_and_failed_are_final(state):
    """spark-operator pkg/util/sparkapplication.go IsTerminated: COMPLETED and FAILED only."""
    app = {**make_app(), "status": {"applicationState": {"state": state, "errorMessage": "driver pod not found"}}}
    assert rule_for(app).outcome(app) is None


def test_the_rule_reads_the_final_state_and_the_error_message():
    rule = rule_for(make_app())
    done = rule.outcome({"status": {"applicationState": {"state": "COMPLETED"}}})
    assert (done.succeeded, done.condition) == (True, "COMPLETED")
    failed = rule.outcome({"status": {"applicationState": {
        "state": "FAILED", "errorMessage": "driver container failed with ExitCode: 1, Reason: Error"}}})
    assert (failed.succeeded, failed.reason, failed.message) == (
        False, "FAILED", "driver container failed with ExitCode: 1, Reason: Error")
    assert rule.log_pods == ("spark-role=driver,sparkoperator.k8s.io/app-name={name}",)


# -- the job in this process ---------------------------------------------------------------------------


@pytest.fixture
def entry_point(tmp_path, monkeypatch):
    """A stand-in for ``dmlops.data.spark`` with its command line: it records what it was given, and
    exits 3 for the operation "broken"."""
    (tmp_path / "spark_entry_stub.py").write_text(textwrap.dedent("""
        import json, sys
        operation, path = sys.argv[1:]
        if operation == "broken":
            sys.exit(3)
        with open(json.load(open(path))["record"], "w") as out:
            json.dump({"argv0": sys.argv[0], "operation": operation, "arguments": json.load(open(path))}, out)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(spark, "ENTRY_MODULE", "spark_entry_stub")
    return tmp_path


def test_the_local_backend_runs_the_entry_point_with_an_arguments_file(entry_point):
    record = entry_point / "record.json"
    assert run_spark_job("validate", {"record": str(record), "data": "flights.parquet"}) == {
        "backend": "local", "operation": "validate"}
    ran = json.loads(record.read_text())
    assert ran["operation"] == "validate" and ran["arguments"] == {"record": str(record), "data": "flights.parquet"}
    assert ran["argv0"].endswith("spark_entry_stub.py")
    with pytest.raises(SparkJobError, match="python -m spark_entry_stub broken exited with status 3"):
        run_entry_point("broken", {})


def test_the_driver_script_passes_its_json_text_to_the_entry_point(entry_point):
    from dmlops.data.spark_driver import main

    record = entry_point / "driver.json"
    main(["compare", json.dumps({"record": str(record)})])
    assert json.loads(record.read_text())["operation"] == "compare"
    with pytest.raises(SystemExit, match="usage"):
        main(["compare"])


SUBMITTED_DRIVER = textwrap.dedent("""
    import sys
    from dmlops.data import spark_application, spark_driver

    spark_application.ENTRY_MODULE = "spark_entry_stub"
    spark_driver.main(sys.argv[1:])
""")


def test_under_spark_submit_the_job_runs_on_the_master_spark_submit_gave(entry_point, tmp_path):
    """spark-submit (as the driver pod runs it) starts the driver script; the entry point is given the
    master in DMLOPS_SPARK_MASTER, which the engine's session uses."""
    pytest.importorskip("pyspark", reason="pyspark is not installed: pip install 'dmlops[spark]'")
    if not (os.environ.get("JAVA_HOME") or shutil.which("java")):
        pytest.skip("no Java runtime (Debian: apt-get install default-jre-headless)")
    (entry_point / "spark_entry_stub.py").write_text(textwrap.dedent("""
        import json, os, sys
        operation, path = sys.argv[1:]
        with open(json.load(open(path))["record"], "w") as out:
            json.dump({"operation": operation, "master": os.environ.get("DMLOPS_SPARK_MASTER")}, out)
    """))
    (tmp_path / "driver.py").write_text(SUBMITTED_DRIVER)
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join([str(entry_point), str(REPO / "src")])}
    env.pop("DMLOPS_SPARK_MASTER", None)
    record = tmp_path / "record.json"
    done = subprocess.run([str(bin_dir / "spark-submit"), "--master", "local[2]", "--deploy-mode", "client",
                           str(tmp_path / "driver.py"), "validate", json.dumps({"record": str(record)})],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(record.read_text()) == {"operation": "validate", "master": "local[2]"}


# -- the launcher against the fake API (the test as the operator) ---------------------------------


def test_a_failed_application_reports_the_operators_message_and_the_end_of_the_driver_log(fake_kube, echo):
    launcher = KubernetesLauncher(fake_kube.api_client(), echo=echo.append, poll_interval_s=0.05,
                                  watch_window_s=2, log_drain_s=5)
    app = make_app()
    name = app["metadata"]["name"]
    driver = f"{name}-driver"

    def operator():
        fake_kube.wait_for_object("sparkapplications", "team-a", name)
        fake_kube.patch_status("sparkapplications", "team-a", name, {
            "applicationState": {"state": "RUNNING"}, "driverInfo": {"podName": driver}})
        fake_kube.add_pod("team-a", driver, {"spark-role": "driver", "sparkoperator.k8s.io/app-name": name},
                          ("spark-kubernetes-driver",), "Running")
        fake_kube.log("team-a", driver, *[f"INFO stage {i}" for i in range(30)],
                      "Traceback (most recent call last):", "ValueError: column arr_delay is missing")
        echo.wait_for_line("column arr_delay is missing")
        fake_kube.set_pod_phase("team-a", driver, "Failed")
        fake_kube.patch_status("sparkapplications", "team-a", name, {"applicationState": {
            "state": "FAILED", "errorMessage": "driver container failed with ExitCode: 1, Reason: Error"}})

    fake_kube.in_background(operator)
    with pytest.raises(JobFailed) as failure:
        launcher.run(app, timeout_s=20)
    fake_kube.raise_background_errors()
    assert (failure.value.reason, failure.value.message) == (
        "FAILED", "driver container failed with ExitCode: 1, Reason: Error")
    assert failure.value.log_tail[-2:] == (f"[{driver}] Traceback (most recent call last):",
                                           f"[{driver}] ValueError: column arr_delay is missing")
    assert len(failure.value.log_tail) == 20 and failure.value.log_tail[0] == f"[{driver}] INFO stage 12"
    assert str(failure.value).endswith("last lines of its log:\n" + "\n".join(failure.value.log_tail))
    assert f"SparkApplication team-a/{name}: RUNNING" in echo


def test_on_kubernetes_the_outputs_the_driver_wrote_come_back_to_the_artifacts_paths(fake_kube, tmp_path, monkeypatch):
    """The component passes output URIs; after COMPLETED each is copied to its local path, which KFP then
    uploads to the same URI (memory:// stands in for the object store the driver writes to)."""
    import fsspec

    monkeypatch.setenv("KUBECONFIG", str(fake_kube.write_kubeconfig(tmp_path / "kubeconfig", namespace="team-a")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    memory = fsspec.filesystem("memory")
    name = resource_name("spark", RUN_ID, "compare")

    def operator():
        app = fake_kube.wait_for_object("sparkapplications", "team-a", name)
        arguments = json.loads(app["spec"]["arguments"][1])
        memory.pipe(arguments["report"].removeprefix("memory://") + "/index.html", b"<html>drift</html>")
        memory.pipe(arguments["metrics"].removeprefix("memory://"), b'{"psi": 0.01}')
        fake_kube.patch_status("sparkapplications", "team-a", name, {"applicationState": {"state": "COMPLETED"}})

    fake_kube.in_background(operator)
    report, metrics = tmp_path / "outputs" / "report", tmp_path / "outputs" / "metrics.json"
    result = run_spark_job("compare", {"report": "memory://kfp/run/compare/report", "metrics": "memory://kfp/run/m.json",
                                       "reference": "s3://lake/flights"}, "kubernetes", run_id=RUN_ID,
                           task_name="compare", image=IMAGE, outputs={"report": str(report), "metrics": str(metrics)},
                           timeout_s=20)
    fake_kube.raise_background_errors()
    assert (result["condition"], result["created"]) == ("COMPLETED", True)
    assert (report / "index.html").read_text() == "<html>drift</html>"
    assert json.loads(metrics.read_text()) == {"psi": 0.01}
    with pytest.raises(SparkJobError, match="the Spark job wrote nothing at memory://kfp/run/none, one of its outputs"):
        spark.download("memory://kfp/run/none", str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"outputs \['model'\] are not keys"):
        run_spark_job("compare", {}, "kubernetes", run_id=RUN_ID, task_name="compare", image=IMAGE,
                      outputs={"model": str(tmp_path)})


# -- against a real API server with the simulated Spark Operator ----------------------------------


@pytest.fixture
def cluster(request, monkeypatch):
    """envtest with the simulated Kubeflow (Spark Operator and its webhook), a namespace with the driver's
    service account, and KUBECONFIG pointing at it; skips without envtest."""
    from kubeharness.kubeflow import Kubeflow

    server = request.getfixturevalue("kube_api")
    namespace = request.getfixturevalue("kube_namespace")
    with Kubeflow.from_api_server(server) as kubeflow:
        kubeflow.kube.core.create_namespaced_service_account(namespace, {"metadata": {"name": "dmlops-spark"}})
        monkeypatch.setenv("KUBECONFIG", str(server.kubeconfig))
        monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        yield kubeflow, namespace
        kubeflow.raise_errors()


def _app(kubeflow, namespace: str, name: str) -> dict | None:
    return kubeflow.kube.get_custom(*SPARK[:2], SPARK[2], namespace, name)


def _state(kubeflow, namespace: str, name: str) -> str:
    return ((_app(kubeflow, namespace, name) or {}).get("status") or {}).get("applicationState", {}).get("state", "")


def _set_driver(kubeflow, namespace: str, pod: str, phase: str, exit_code: int | None = None) -> None:
    """Play the kubelet: the driver's phase and, when it ended, its container's exit."""
    status: dict = {"phase": phase}
    if exit_code is not None:
        status["containerStatuses"] = [{
            "name": "spark-kubernetes-driver", "image": IMAGE, "imageID": "", "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": exit_code, "reason": "Error" if exit_code else "Completed"}}}]
    kubeflow.kube.core.patch_namespaced_pod_status(pod, namespace, {"status": status})


def _run_in_thread(target) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = target()
        except BaseException as error:  # noqa: BLE001 - checked by the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def _job(namespace: str, task: str = "validate"):
    return lambda: run_spark_job("validate", {"data": "s3://lake/flights"}, "kubernetes", run_id=RUN_ID,
                                 task_name=task, image=IMAGE, namespace=namespace, timeout_s=60)


@pytest.mark.envtest
def test_the_operator_runs_the_driver_and_the_step_waits_for_completed(cluster):
    kubeflow, namespace = cluster
    name = resource_name("spark", RUN_ID, "validate")
    thread, outcome = _run_in_thread(_job(namespace))
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "SUBMITTED", what="SUBMITTED")
    pod = kubeflow.kube.read("Pod", namespace, f"{name}-driver")
    labels = pod["metadata"]["labels"]
    assert labels["spark-role"] == "driver" and labels["sparkoperator.k8s.io/app-name"] == name
    assert labels["dmlops.io/run-id"] == RUN_ID  # the application's labels reach the driver
    assert pod["spec"]["serviceAccountName"] == "dmlops-spark"
    assert pod["spec"]["containers"][0]["command"][-2:] == ["validate", '{"data": "s3://lake/flights"}']
    _set_driver(kubeflow, namespace, pod["metadata"]["name"], "Running")
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "RUNNING", what="RUNNING")
    _set_driver(kubeflow, namespace, pod["metadata"]["name"], "Succeeded", exit_code=0)
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert (result["backend"], result["kind"], result["name"], result["condition"], result["created"]) == (
        "kubernetes", "SparkApplication", name, "COMPLETED", True)


@pytest.mark.envtest
def test_a_retried_step_reattaches_to_the_running_application(cluster):
    kubeflow, namespace = cluster
    name = resource_name("spark", RUN_ID, "validate")
    first = spark_application(name, namespace, "validate", {"data": "s3://lake/flights"}, image=IMAGE,
                              labels=run_labels(RUN_ID, "validate"))
    kubeflow.kube.custom.create_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], first)  # the first attempt
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "SUBMITTED", what="SUBMITTED")
    submission = _app(kubeflow, namespace, name)["status"]["submissionID"]
    _set_driver(kubeflow, namespace, f"{name}-driver", "Running")

    thread, outcome = _run_in_thread(_job(namespace))  # the retry
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "RUNNING", what="RUNNING")
    _set_driver(kubeflow, namespace, f"{name}-driver", "Succeeded", exit_code=0)
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")
    assert (outcome["result"]["created"], outcome["result"]["condition"]) == (False, "COMPLETED")
    apps = kubeflow.kube.custom.list_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2])["items"]
    assert [app["metadata"]["name"] for app in apps] == [name]
    assert apps[0]["status"]["submissionID"] == submission  # not submitted a second time


@pytest.mark.envtest
def test_a_failed_driver_fails_the_step_with_the_operators_message(cluster):
    kubeflow, namespace = cluster
    name = resource_name("spark", RUN_ID, "validate")
    thread, outcome = _run_in_thread(_job(namespace))
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "SUBMITTED", what="SUBMITTED")
    _set_driver(kubeflow, namespace, f"{name}-driver", "Failed", exit_code=1)
    thread.join(60)
    error = outcome.get("error")
    assert isinstance(error, JobFailed), outcome
    assert (error.reason, error.message) == ("FAILED", "driver container failed with ExitCode: 1, Reason: Error")
    assert _app(kubeflow, namespace, name) is not None  # kept for inspection


@pytest.mark.envtest
def test_a_missing_driver_service_account_fails_the_submission(cluster):
    """spark-submit cannot create the driver pod: SUBMISSION_FAILED, then FAILED (restartPolicy Never)."""
    kubeflow, namespace = cluster
    thread, outcome = _run_in_thread(
        lambda: run_spark_job("validate", {}, "kubernetes", run_id=RUN_ID, task_name="validate", image=IMAGE,
                              namespace=namespace, service_account="no-such-account", timeout_s=60))
    thread.join(60)
    error = outcome.get("error")
    assert isinstance(error, JobFailed), outcome
    assert error.message.startswith("failed to submit spark application: failed to run spark-submit: ")
    assert 'serviceaccount "no-such-account" not found' in error.message


@pytest.mark.envtest
@pytest.mark.parametrize("change, refusal", [
    (lambda app: app["metadata"].update(name="spark.validate"),  # a valid object name, not a DNS-1035 label
     'invalid SparkApplication name "spark.validate": a DNS-1035 label must consist of lower case alphanumeric'),
    (lambda app: app["spec"].update(sparkConf={"spark.master": "local[4]"}),
     'sparkConf key "spark.master" is not allowed: this value is managed by the operator'),
    (lambda app: app["spec"].update(sparkConf={"spark.kubernetes.namespace": "other"}),
     'sparkConf key "spark.kubernetes.namespace" is not allowed: must equal the application namespace'),
    (lambda app: (app["spec"].update(nodeSelector={"pool": "a"}), app["spec"]["driver"].update(nodeSelector={"pool": "b"})),
     "node selector cannot be defined at both SparkApplication and Driver/Executor"),
    (lambda app: (app["spec"].update(sparkVersion="2.4.5"), app["spec"]["driver"].update(template={})),
     "pod template feature requires Spark version 3.0.0 or higher"),
])
def test_the_operators_webhook_refuses_what_upstream_refuses(cluster, change, refusal):
    """spark-operator internal/webhook/sparkapplication_validator.go and sparkconf_validator.go."""
    kubeflow, namespace = cluster
    app = make_app(namespace)
    change(app)
    with pytest.raises(ApiException) as refused:
        kubeflow.kube.custom.create_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], app)
    assert refused.value.status == 403
    assert json.loads(refused.value.body)["message"].startswith(
        f'admission webhook "validate-sparkapplication.sparkoperator.k8s.io" denied the request: {refusal}')


@pytest.mark.envtest
def test_the_launcher_reports_a_refusal_by_the_webhook_as_an_invalid_resource(cluster):
    kubeflow, namespace = cluster
    app = make_app(namespace)
    app["spec"]["sparkConf"] = {"spark.kubernetes.container.image": "other:1"}
    launcher = KubernetesLauncher(kubeflow.kube.api, echo=lambda line: None, poll_interval_s=0.05)
    with pytest.raises(InvalidResource) as refused:
        launcher.run(app, timeout_s=10)
    assert str(refused.value).endswith(
        'denied the request: sparkConf key "spark.kubernetes.container.image" is not allowed: '
        "use the image field on the CRD instead")
    assert "service account needs" not in str(refused.value)  # a 403 from admission is no RBAC hint


LAUNCH_SCRIPT = textwrap.dedent("""
    import sys
    from dmlops.data.spark_application import run_spark_job

    run_spark_job("validate", {}, "kubernetes", run_id="run-cancel", task_name="validate",
                  image="ghcr.io/dmlops/spark:0.1.0", namespace=sys.argv[1], timeout_s=120)
""")


@pytest.mark.envtest
def test_sigterm_deletes_the_application(cluster):
    kubeflow, namespace = cluster
    name = resource_name("spark", "run-cancel", "validate")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-c", LAUNCH_SCRIPT, namespace], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in process.stdout:
            if ": created (uid" in line:
                break
        kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "SUBMITTED", what="SUBMITTED")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert f"SIGTERM received: run cancelled, SparkApplication {namespace}/{name} deleted" in stderr
    # No garbage collector runs under envtest: the application waits for it, marked for foreground deletion.
    assert _app(kubeflow, namespace, name)["metadata"]["deletionTimestamp"]
    driver = client.CoreV1Api(kubeflow.kube.api).read_namespaced_pod(f"{name}-driver", namespace)
    assert driver.metadata.owner_references[0].name == name  # what the garbage collector deletes it by


@pytest.mark.envtest
def test_the_project_roles_let_the_step_run_the_application_and_the_driver_start_executors(cluster, kube_api):
    """manifests/base/rbac.yaml (the step) and manifests/spark (the driver), as service-account tokens."""
    import yaml
    from kubeharness.rbac import bind_project_role, service_account_token

    kubeflow, namespace = cluster
    admin = kubeflow.kube.api
    bind_project_role(admin, namespace, "pipeline-runner")
    rbac = client.RbacAuthorizationV1Api(admin)
    for document in yaml.safe_load_all((REPO / "manifests" / "spark" / "spark-driver-rbac.yaml").read_text()):
        if document["kind"] == "Role":
            rbac.create_namespaced_role(namespace, document)
        elif document["kind"] == "RoleBinding":
            rbac.create_namespaced_role_binding(namespace, document)  # the account exists (fixture)

    def as_account(account: str) -> client.ApiClient:
        return kube_api.api_client(service_account_token(admin, namespace, account))

    name = resource_name("spark", RUN_ID, "validate")
    launcher = KubernetesLauncher(as_account("pipeline-runner"), echo=lambda line: None, poll_interval_s=0.05)
    thread, outcome = _run_in_thread(lambda: launcher.run(make_app(namespace), timeout_s=60))
    kubeflow.wait_for(lambda: _state(kubeflow, namespace, name) == "SUBMITTED", what="SUBMITTED")
    _set_driver(kubeflow, namespace, f"{name}-driver", "Succeeded", exit_code=0)
    thread.join(60)
    assert "error" not in outcome, outcome.get("error")  # create, watch, list pods: granted

    driver = client.CoreV1Api(as_account("dmlops-spark"))
    executor = {"metadata": {"name": f"{name}-exec-1", "labels": {"spark-role": "executor"}},
                "spec": {"containers": [{"name": "spark-kubernetes-executor", "image": IMAGE}]}}
    driver.create_namespaced_pod(namespace, executor)
    driver.delete_collection_namespaced_pod(namespace, label_selector="spark-role=executor")
    with pytest.raises(ApiException) as refused:
        driver.list_namespaced_secret(namespace)
    assert refused.value.status == 403
