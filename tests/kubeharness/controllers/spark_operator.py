"""Kubeflow Spark Operator (kubeflow/spark-operator, master 38082f33): SparkApplication v1beta2.

Behaviours, each from the upstream file named:

| behaviour | upstream |
|---|---|
| admission: name a DNS-1035 label ("invalid SparkApplication name ..."); a pod template needs sparkVersion >= 3.0.0; nodeSelector not on both the application and driver/executor; driverIngressOptions with a service port and URL format, each unique; sparkConf without the keys the operator manages (master, images, service accounts, OAuth tokens) and with ``spark.kubernetes.namespace`` only equal to the application's; on update, checked only when the spec changed | internal/webhook/sparkapplication_validator.go, sparkconf_validator.go |
| new application: ``submissionID`` (a UUID), ``driverInfo.podName`` (``spec.driver.podName``, else sparkConf ``spark.kubernetes.driver.pod.name``, else ``<name>-driver``), ``lastSubmissionAttemptTime``, ``submissionAttempts`` + 1; then ``SUBMITTED`` and ``executionAttempts`` + 1, or ``SUBMISSION_FAILED`` with "failed to submit spark application: ..." | internal/controller/sparkapplication/controller.go submitSparkApplication; pkg/util/sparkapplication.go GetDriverPodName; submission.go Submit, runSparkSubmit (its doubled "failed to run spark-submit: " prefix) |
| driver pod labels: the application's labels (not ``kueue.x-k8s.io/*``), ``spec.driver.labels``, ``sparkoperator.k8s.io/app-name``, ``launched-by-spark-operator``, ``submission-id``, ``mutated-by-spark-operator`` (no pod template); Spark's own ``spark-role=driver``, ``spark-app-selector`` | submission.go driverConfOption; pkg/common/spark.go (label names, container ``spark-kubernetes-driver``) |
| driver pod: owner reference to the application; ``spec.driver.env`` in its container | internal/webhook/sparkpod_defaulter.go addOwnerReference, addEnvVars |
| state from the driver pod: Pending → ``SUBMITTED``, Running → ``RUNNING``, Succeeded (or the driver container exited 0) → ``SUCCEEDING``, Failed → ``FAILING`` with "driver container failed with ExitCode: N, Reason: R" (or "driver container status missing"); driver pod gone → ``FAILING``, "driver pod not found"; ``sparkApplicationId`` from ``spark-app-selector``; ``terminationTime`` | controller.go updateDriverState; pkg/util/sparkapplication.go GetDriverState, DriverStateToApplicationState |
| restartPolicy Never: ``SUCCEEDING`` → ``COMPLETED``, ``FAILING`` and ``SUBMISSION_FAILED`` → ``FAILED`` (errorMessage kept) | controller.go reconcileSucceeding/Failing/FailedSubmissionSparkApplication; pkg/util/sparkapplication.go ShouldRetry |

Simulated, not reproduced: spark-submit itself. The driver pod runs ``spark-submit --master local[<executor
instances x cores>] --deploy-mode client <main file> <arguments>`` in the application's image, so the job
runs on the driver alone: no executor pods, driver Service or web UI Service/Ingress, and no Spark
configuration ConfigMap. Memory overhead is not added to the pod's memory request. Restart policies other
than Never (retries, PENDING_RERUN), suspension, the defaulting webhook (dmlops sets every field it
defaults), the validator's resource-quota check (off unless the operator runs with
``--enable-resource-quota-enforcement``: cmd/operator/webhook/start.go), batch schedulers and the driver
creation grace period are not simulated: an application with another restart policy is recorded as a
controller error, so a test that relies on one fails.
"""

from __future__ import annotations

import copy
import json
import re
import uuid

from kubernetes.client.rest import ApiException

from kubeharness.controllers.base import Controller, Obj, now, owner_reference, pod_phase

GROUP, VERSION, PLURAL = "sparkoperator.k8s.io", "v1beta2", "sparkapplications"
PREFIX = "sparkoperator.k8s.io/"
APP_NAME_LABEL = PREFIX + "app-name"
LAUNCHED_LABEL = PREFIX + "launched-by-spark-operator"
MUTATED_LABEL = PREFIX + "mutated-by-spark-operator"
SUBMISSION_LABEL = PREFIX + "submission-id"
ROLE_LABEL = "spark-role"
APP_SELECTOR_LABEL = "spark-app-selector"
DRIVER_CONTAINER = "spark-kubernetes-driver"
WEBHOOK_NAME = "validate-sparkapplication.sparkoperator.k8s.io"
WEBHOOK_PATH = "/validate-sparkoperator-k8s-io-v1beta2-sparkapplication"
_DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
# sparkconf_validator.go deniedSparkConfKeys
_DENIED_CONF = {
    "spark.kubernetes.authenticate.driver.serviceAccountName": "configure the service account via the CRD spec instead",
    "spark.kubernetes.authenticate.executor.serviceAccountName": "configure the service account via the CRD spec instead",
    **{f"spark.kubernetes.authenticate.{who}{what}": "authentication credentials are managed by the operator"
       for who in ("", "driver.", "executor.") for what in ("oauthTokenFile", "oauthToken")},
    "spark.master": "this value is managed by the operator",
    "spark.kubernetes.driver.master": "this value is managed by the operator",
    "spark.kubernetes.container.image": "use the image field on the CRD instead",
    "spark.kubernetes.driver.container.image": "use the image field on the CRD instead",
    "spark.kubernetes.executor.container.image": "use the image field on the CRD instead",
}


def _semver(version: str) -> tuple[int, ...]:
    numbers = re.findall(r"\d+", version.lstrip("v"))[:3]
    return tuple(int(n) for n in numbers) + (0,) * (3 - len(numbers))


def _dns1035_errors(name: str) -> list[str]:
    """k8s.io/apimachinery pkg/util/validation IsDNS1035Label's messages."""
    errors = []
    if len(name) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1035.match(name):
        errors.append("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                      "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
                      "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')")
    return errors


def validate(app: Obj, old: Obj | None = None) -> str | None:
    """The validating webhook's refusal of a create (or of an update from ``old``), or None."""
    meta, spec = app.get("metadata") or {}, app.get("spec") or {}
    name_errors = _dns1035_errors(meta.get("name", ""))
    if name_errors:
        return f'invalid SparkApplication name "{meta.get("name", "")}": {", ".join(name_errors)}'
    if old is not None and (old.get("spec") or {}) == spec:
        return None
    driver, executor = spec.get("driver") or {}, spec.get("executor") or {}
    if (driver.get("template") is not None or executor.get("template") is not None) and \
            _semver(spec.get("sparkVersion", "")) < (3, 0, 0):
        return "pod template feature requires Spark version 3.0.0 or higher"
    if spec.get("nodeSelector") is not None and (driver.get("nodeSelector") is not None
                                                 or executor.get("nodeSelector") is not None):
        return "node selector cannot be defined at both SparkApplication and Driver/Executor"
    ports, formats = set(), set()
    for option in spec.get("driverIngressOptions") or []:
        port = option.get("servicePort")
        if port is None:
            return "DriverIngressOptions has nill ServicePort"
        if port in ports:
            return f"DriverIngressOptions has duplicate ServicePort: {port}"
        ports.add(port)
        url_format = option.get("ingressURLFormat") or ""
        if not url_format:
            return "DriverIngressOptions has empty IngressURLFormat"
        if url_format in formats:
            return f"DriverIngressOptions has duplicate IngressURLFormat: {url_format}"
        formats.add(url_format)
    for key, value in (spec.get("sparkConf") or {}).items():
        if key in _DENIED_CONF:
            return f'sparkConf key "{key}" is not allowed: {_DENIED_CONF[key]}'
        if key == "spark.kubernetes.namespace" and value != meta.get("namespace"):
            return (f'sparkConf key "{key}" is not allowed: must equal the application namespace '
                    f'"{meta.get("namespace")}", got "{value}"')
    return None


def driver_pod_name(app: Obj) -> str:
    """pkg/util/sparkapplication.go GetDriverPodName."""
    spec = app["spec"]
    return ((spec.get("driver") or {}).get("podName") or (spec.get("sparkConf") or {}).get("spark.kubernetes.driver.pod.name")
            or f"{app['metadata']['name']}-driver")


def _local_path(uri: str) -> str:
    return uri[len("local://"):] if uri.startswith("local://") else uri


class SparkOperator(Controller):
    """SparkApplications as the Spark Operator reconciles them, with spark-submit simulated (module docstring)."""

    watches = ((GROUP, VERSION, PLURAL),)

    def reconcile_all(self) -> None:
        self.each(GROUP, VERSION, PLURAL, self.reconcile)

    def reconcile(self, app: Obj) -> None:
        status = copy.deepcopy(app.get("status") or {})
        state = (status.get("applicationState") or {}).get("state", "")
        if state in ("COMPLETED", "FAILED"):
            return
        policy = ((app["spec"].get("restartPolicy") or {}).get("type")) or "Never"
        if policy != "Never":
            raise NotImplementedError(f"restartPolicy {policy} is not simulated (only Never)")
        if state == "":
            self._submit(app, status)
        elif state in ("SUBMITTED", "RUNNING"):
            self._update_driver_state(app, status)
        elif state == "SUCCEEDING":
            status["applicationState"]["state"] = "COMPLETED"
        elif state in ("FAILING", "SUBMISSION_FAILED"):
            status["applicationState"]["state"] = "FAILED"
            status["terminationTime"] = status.get("terminationTime") or now()
        if status != (app.get("status") or {}):
            self.kube.patch_status(app, PLURAL, status)

    def _submit(self, app: Obj, status: Obj) -> None:
        status["submissionID"] = str(uuid.uuid4())
        status["driverInfo"] = {"podName": driver_pod_name(app)}
        status["lastSubmissionAttemptTime"] = now()
        status["submissionAttempts"] = status.get("submissionAttempts", 0) + 1
        try:
            self.kube.core.create_namespaced_pod(app["metadata"]["namespace"], self._driver_pod(app, status))
        except ApiException as error:  # spark-submit fails with the API server's answer on its stderr
            try:
                detail = json.loads(error.body or "{}").get("message") or error.reason
            except ValueError:
                detail = error.body or error.reason
            status["applicationState"] = {
                "state": "SUBMISSION_FAILED",
                "errorMessage": "failed to submit spark application: failed to run spark-submit: "
                                f"failed to run spark-submit: {detail}"}
            return
        status["applicationState"] = {"state": "SUBMITTED"}
        status["executionAttempts"] = status.get("executionAttempts", 0) + 1

    def _driver_pod(self, app: Obj, status: Obj) -> Obj:
        meta, spec = app["metadata"], app["spec"]
        driver, executor = spec.get("driver") or {}, spec.get("executor") or {}
        labels = {key: value for key, value in (meta.get("labels") or {}).items() if not key.startswith("kueue.x-k8s.io/")}
        labels.update(driver.get("labels") or {})
        labels.update({APP_NAME_LABEL: meta["name"], LAUNCHED_LABEL: "true", SUBMISSION_LABEL: status["submissionID"],
                       ROLE_LABEL: "driver", APP_SELECTOR_LABEL: "spark-" + uuid.uuid4().hex})
        if driver.get("template") is None:
            labels[MUTATED_LABEL] = "true"
        slots = (executor.get("instances") or 1) * (executor.get("cores") or 1)
        command = ["spark-submit", "--master", f"local[{slots}]", "--deploy-mode", "client", "--name", meta["name"],
                   _local_path(spec["mainApplicationFile"]), *(spec.get("arguments") or [])]
        container = {"name": DRIVER_CONTAINER, "image": driver.get("image") or spec.get("image"), "command": command,
                     "env": [{"name": "SPARK_APPLICATION_ID", "value": labels[APP_SELECTOR_LABEL]},
                             *(driver.get("env") or [])],
                     "resources": {"requests": {"cpu": str(driver.get("coreRequest") or driver.get("cores") or 1)}}}
        if spec.get("imagePullPolicy"):
            container["imagePullPolicy"] = spec["imagePullPolicy"]
        pod_spec = {"containers": [container], "restartPolicy": "Never"}
        if driver.get("serviceAccount"):
            pod_spec["serviceAccountName"] = driver["serviceAccount"]
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": status["driverInfo"]["podName"], "labels": labels,
                             "ownerReferences": [owner_reference(app)]},
                "spec": pod_spec}

    def _update_driver_state(self, app: Obj, status: Obj) -> None:
        pod = self.kube.read("Pod", app["metadata"]["namespace"], status["driverInfo"]["podName"])
        application = status["applicationState"]
        if pod is None:
            application.update(state="FAILING", errorMessage="driver pod not found")
            status["terminationTime"] = now()
            return
        status["sparkApplicationId"] = pod["metadata"]["labels"].get(APP_SELECTOR_LABEL, "")
        terminated = next((s["state"]["terminated"] for s in (pod.get("status") or {}).get("containerStatuses") or []
                           if s.get("name") == DRIVER_CONTAINER and (s.get("state") or {}).get("terminated")), None)
        phase = pod_phase(pod)
        if phase == "Pending":
            driver_state = "PENDING"
        elif phase in ("Running", "Failed") and terminated is not None:
            driver_state = "COMPLETED" if terminated.get("exitCode") == 0 else "FAILED"
        elif phase == "Running":
            driver_state = "RUNNING"
        elif phase == "Succeeded":
            driver_state = "COMPLETED"
        elif phase == "Failed":
            driver_state = "FAILED"
        else:
            driver_state = "UNKNOWN"
        if driver_state in ("COMPLETED", "FAILED"):
            status["terminationTime"] = status.get("terminationTime") or now()
        if driver_state == "FAILED":
            if terminated is None:
                application["errorMessage"] = "driver container status missing"
            elif terminated.get("exitCode"):
                application["errorMessage"] = (f"driver container failed with ExitCode: {terminated['exitCode']}, "
                                               f"Reason: {terminated.get('reason', '')}")
        application["state"] = {"PENDING": "SUBMITTED", "RUNNING": "RUNNING", "COMPLETED": "SUCCEEDING",
                                "FAILED": "FAILING"}.get(driver_state, "UNKNOWN")
