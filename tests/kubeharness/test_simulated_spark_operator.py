"""The simulated Spark Operator on a real API server: the driver pod and the status it writes.

envtest runs no kubelet: the tests play it by setting the driver pod's phase through its status subresource.
"""

from __future__ import annotations

import pytest
from kubernetes import client

from kubeharness.controllers.spark_operator import validate
from kubeharness.kubeflow import kubeflow  # noqa: F401 - fixture

SPARK = ("sparkoperator.k8s.io", "v1beta2", "sparkapplications")


def _app(name: str, **spec) -> dict:
    return {"apiVersion": "sparkoperator.k8s.io/v1beta2", "kind": "SparkApplication",
            "metadata": {"name": name, "labels": {"team": "data", "kueue.x-k8s.io/queue-name": "q"}},
            "spec": {"type": "Python", "mode": "cluster", "image": "dmlops/spark:test", "sparkVersion": "4.3.0",
                     "mainApplicationFile": "local:///opt/dmlops/spark_driver.py", "arguments": ["validate", "{}"],
                     "restartPolicy": {"type": "Never"},
                     "driver": {"cores": 1, "memory": "1g", "labels": {"role": "d"},
                                "env": [{"name": "AWS_REGION", "value": "eu-west-1"}]},
                     "executor": {"cores": 2, "memory": "1g", "instances": 3}, **spec}}


def _get(kubeflow, namespace: str, name: str) -> dict:
    return kubeflow.kube.get_custom(*SPARK[:2], SPARK[2], namespace, name) or {}


def _state(kubeflow, namespace: str, name: str) -> str:
    return (_get(kubeflow, namespace, name).get("status") or {}).get("applicationState", {}).get("state", "")


def _create(kubeflow, namespace: str, app: dict) -> None:
    kubeflow.kube.custom.create_namespaced_custom_object(*SPARK[:2], namespace, SPARK[2], app)


def _set_phase(kubeflow, namespace: str, pod: str, phase: str, **status) -> None:
    client.CoreV1Api(kubeflow.kube.api).patch_namespaced_pod_status(pod, namespace, {"status": {"phase": phase, **status}})


@pytest.mark.envtest
def test_driver_pod_labels_owner_and_status_to_completed(kubeflow, kube_namespace):
    """controller.go submitSparkApplication, updateDriverState; submission.go driverConfOption;
    sparkpod_defaulter.go addOwnerReference, addEnvVars; pkg/util/sparkapplication.go."""
    _create(kubeflow, kube_namespace, _app("etl"))
    kubeflow.wait_for(lambda: _state(kubeflow, kube_namespace, "etl") == "SUBMITTED", what="SUBMITTED")
    status = _get(kubeflow, kube_namespace, "etl")["status"]
    assert (status["driverInfo"]["podName"], status["submissionAttempts"], status["executionAttempts"]) == ("etl-driver", 1, 1)
    pod = kubeflow.kube.read("Pod", kube_namespace, "etl-driver")
    labels = pod["metadata"]["labels"]
    assert {key: labels[key] for key in ("team", "role", "spark-role", "sparkoperator.k8s.io/app-name",
                                         "sparkoperator.k8s.io/launched-by-spark-operator",
                                         "sparkoperator.k8s.io/submission-id")} == {
        "team": "data", "role": "d", "spark-role": "driver", "sparkoperator.k8s.io/app-name": "etl",
        "sparkoperator.k8s.io/launched-by-spark-operator": "true",
        "sparkoperator.k8s.io/submission-id": status["submissionID"]}
    assert "kueue.x-k8s.io/queue-name" not in labels
    assert pod["metadata"]["ownerReferences"][0]["name"] == "etl"
    container = pod["spec"]["containers"][0]
    assert container["name"] == "spark-kubernetes-driver"
    # simulated spark-submit: the job runs on the driver with as many slots as the executors would have
    assert container["command"] == ["spark-submit", "--master", "local[6]", "--deploy-mode", "client", "--name", "etl",
                                    "/opt/dmlops/spark_driver.py", "validate", "{}"]
    assert {"name": "AWS_REGION", "value": "eu-west-1"} in container["env"]

    _set_phase(kubeflow, kube_namespace, "etl-driver", "Running")
    kubeflow.wait_for(lambda: _state(kubeflow, kube_namespace, "etl") == "RUNNING", what="RUNNING")
    assert _get(kubeflow, kube_namespace, "etl")["status"]["sparkApplicationId"] == labels["spark-app-selector"]
    _set_phase(kubeflow, kube_namespace, "etl-driver", "Succeeded")
    kubeflow.wait_for(lambda: _state(kubeflow, kube_namespace, "etl") == "COMPLETED", what="COMPLETED")
    assert _get(kubeflow, kube_namespace, "etl")["status"]["terminationTime"]
    kubeflow.raise_errors()


@pytest.mark.envtest
def test_a_driver_that_fails_or_vanishes_fails_the_application(kubeflow, kube_namespace):
    """controller.go updateDriverState ("driver container status missing", "driver pod not found") and
    reconcileFailingSparkApplication (restartPolicy Never: FAILED)."""
    _create(kubeflow, kube_namespace, _app("no-status"))
    _create(kubeflow, kube_namespace, _app("gone"))
    for name in ("no-status", "gone"):
        kubeflow.wait_for(lambda name=name: _state(kubeflow, kube_namespace, name) == "SUBMITTED", what=name)
    _set_phase(kubeflow, kube_namespace, "no-status-driver", "Failed")
    kubeflow.kube.delete_pod(kube_namespace, "gone-driver")
    for name, message in (("no-status", "driver container status missing"), ("gone", "driver pod not found")):
        kubeflow.wait_for(lambda name=name: _state(kubeflow, kube_namespace, name) == "FAILED", what=f"{name} FAILED")
        assert _get(kubeflow, kube_namespace, name)["status"]["applicationState"]["errorMessage"] == message
    kubeflow.raise_errors()


def test_the_validator_skips_an_update_that_leaves_the_spec_alone():
    """sparkapplication_validator.go ValidateUpdate: only a changed spec is validated (the name always)."""
    app = _app("etl", sparkConf={"spark.master": "local"})
    app["metadata"]["namespace"] = "ns"
    assert validate(app, old=app) is None
    assert validate(app).startswith('sparkConf key "spark.master" is not allowed')
    assert validate({**app, "metadata": {"name": "a.b", "namespace": "ns"}}, old=app).startswith(
        'invalid SparkApplication name "a.b"')
