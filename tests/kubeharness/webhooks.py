"""Upstream admission as real admission: webhooks served over HTTPS by the test process and registered
with the API server (failurePolicy Fail), so every create goes through them as on a Kubeflow cluster.

| webhook | behaviour | upstream |
|---|---|---|
| Katib pod mutator (namespaces labelled ``katib.kubeflow.org/metrics-collector-injection=enabled``) | for pods owned (through their job) by a Trial: the Trial's labels and ``katib.kubeflow.org/trial``; ``KATIB_TRIAL_NAME`` in the primary container; on primary pods the ``metrics-logger-and-collector`` sidecar, shared process namespace, the metrics volume, and the primary container rewritten to ``sh -c "<command and args joined by spaces> 1>/var/log/katib/metrics.log 2>&1 && echo completed > <dir>/$$$$.pid"`` (empty arguments vanish in the shell) | katib pkg/webhook/v1beta1/pod/inject_webhook.go, utils.go (wrapWorkerContainer, getContainerCommand, mutatePodEnv), manifests/v1beta1/components/webhook/webhooks.yaml |
| Katib experiment validator | name, counts, objective, algorithm, parameters, trial template, metrics collector rules with Katib's field paths and messages, after Katib's defaults | katib pkg/webhook/v1beta1/experiment/validator/validator.go, experiment/validation_webhook.go |
| Spark Operator SparkApplication validator | create, and update of the spec: see ``controllers.spark_operator.validate``; denied as controller-runtime denies (403, the validator's error) | spark-operator internal/webhook/sparkapplication_validator.go; controller-runtime pkg/webhook/admission/validator_custom.go |
| Istio sidecar injector (namespaces labelled ``istio-injection=enabled``) | unless the pod's ``sidecar.istio.io/inject`` annotation or label is "false": an ``istio-proxy`` container that never exits, so a Job's pod never completes (kubeflow/kubeflow#3935) | istio pkg/kube/inject/inject.go (injectRequired), webhook.go |

The metrics sidecar runs in the primary container's image (Katib's collector image is not loaded on the
test node): it waits, through the shared process namespace, for the wrapped command to end, then prints the
metrics file, which ``controllers.katib`` parses as Katib's collector would. The Istio sidecar runs
``sleep infinity`` in the pod's first image.
"""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import os
import re
import ssl
import tempfile
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from kubeharness.controllers.base import Kube, Obj
from kubeharness.controllers.katib import DEFAULT_METRICS_FILE, SIDECAR, TRIAL_LABEL, defaulted
from kubeharness.controllers import spark_operator

CONFIGURATION = "kubeharness-dmlops"
ALGORITHMS = ("random", "tpe", "multivariate-tpe", "grid", "hyperband", "bayesianoptimization", "cmaes", "sobol",
              "enas", "darts", "pbt")
# Kubernetes interprets $$ in command/args as a literal $, so Katib writes $$$$ for the shell's $$
MARK_COMPLETED = "echo completed > {dir}/$$$$.pid"
# The kubelet starts a pod's containers in order, the primary before this sidecar: a few seconds' wait for the
# wrapped command (or the files it leaves) covers a slow start; a primary that already ended shows none.
SIDECAR_SCRIPT = (
    'timeout 5 sh -c \'until grep -qs "echo complete[d] >" /proc/[0-9]*/cmdline || [ -e {path} ] '
    '|| ls {dir}/*.pid >/dev/null 2>&1; do sleep 0.2; done\'; '
    'while grep -qs "echo complete[d] >" /proc/[0-9]*/cmdline; do sleep 0.5; done; cat {path} 2>/dev/null; true'
)


def _certificates(workdir: str) -> tuple[str, str, bytes]:
    """A CA and a server certificate for 127.0.0.1; returns (cert file, key file, CA PEM)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeharness webhook CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file, key_file = os.path.join(workdir, "tls.crt"), os.path.join(workdir, "tls.key")
    with open(cert_file, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_file, key_file, ca.public_bytes(serialization.Encoding.PEM)


# --- Katib pod mutation ------------------------------------------------------------------------------------

def find_trial(kube: Kube, obj: Obj, namespace: str) -> Obj | None:
    """The Trial that owns ``obj`` directly or through its owners (getKatibJob)."""
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if owner["kind"] == "Trial" and owner["apiVersion"] == "kubeflow.org/v1beta1":
            return kube.get_custom("kubeflow.org", "v1beta1", "trials", namespace, owner["name"])
    for owner in (obj.get("metadata") or {}).get("ownerReferences") or []:
        group, _, version = owner["apiVersion"].rpartition("/")
        if not group:
            continue
        if (group, owner["kind"]) == ("batch", "Job"):
            parent = kube.read("Job", namespace, owner["name"])
        else:
            plural = owner["kind"].lower() + "s"
            parent = kube.get_custom(group, version, plural, namespace, owner["name"])
        if parent is not None:
            trial = find_trial(kube, parent, namespace)
            if trial is not None:
                return trial
    return None


def wrap_primary(container: Obj, collector: Obj) -> None:
    """wrapWorkerContainer: the command and args joined by spaces under ``sh -c``, plus the redirection
    (StdOut) and the completion marker. The image's entrypoint is not looked up: a trial container
    without ``command`` is left as it is (Katib would read it from the registry)."""
    args = list(container.get("command") or []) + list(container.get("args") or [])
    if not container.get("command"):
        return
    command = ["sh", "-c"]
    if args[0] in ("sh", "bash") and len(args) > 1 and args[1] == "-c":
        command, args = args[:2], args[2:]
    kind = collector["collector"]["kind"]
    path = metrics_path(collector)
    if kind == "StdOut":
        args.append(f"1>{path} 2>&1")
    args += ["&&", MARK_COMPLETED.format(dir=os.path.dirname(path))]
    container["command"], container["args"] = command, [" ".join(args)]


def metrics_path(collector: Obj) -> str:
    if collector["collector"]["kind"] == "StdOut":
        return DEFAULT_METRICS_FILE
    return ((collector.get("source") or {}).get("fileSystemPath") or {}).get("path", DEFAULT_METRICS_FILE)


def mutate_trial_pod(pod: Obj, trial: Obj) -> Obj:
    """The pod after Katib's metrics-collector webhook (inject_webhook.go Mutate)."""
    pod = copy.deepcopy(pod)
    spec = trial["spec"]
    labels = pod["metadata"].setdefault("labels", {})
    labels.update(trial["metadata"].get("labels") or {})
    labels[TRIAL_LABEL] = trial["metadata"]["name"]
    containers = pod["spec"]["containers"]
    primary = next((c for c in containers if c["name"] == spec["primaryContainerName"]), None)
    if primary is None:
        raise ValueError(f"Unable to find primary container {spec['primaryContainerName']} in mutated pod containers")
    primary.setdefault("env", []).append({"name": "KATIB_TRIAL_NAME", "valueFrom": {
        "fieldRef": {"fieldPath": f"metadata.labels['{TRIAL_LABEL}']"}}})
    primary_labels = spec.get("primaryPodLabels") or {}
    collector = spec.get("metricsCollector") or {"collector": {"kind": "StdOut"}}
    kind = collector["collector"]["kind"]
    if any(labels.get(k) != v for k, v in primary_labels.items()) or kind not in ("StdOut", "File"):
        return pod
    path = metrics_path(collector)
    mount = {"name": "metrics-volume", "mountPath": os.path.dirname(path)}
    containers.append({"name": SIDECAR, "image": primary["image"], "imagePullPolicy": primary.get("imagePullPolicy", "IfNotPresent"),
                       "command": ["sh", "-c", SIDECAR_SCRIPT.format(path=path, dir=os.path.dirname(path))],
                       "resources": {"requests": {"cpu": "50m", "memory": "10Mi"}, "limits": {"cpu": "500m", "memory": "100Mi"}},
                       "volumeMounts": [mount]})
    pod["spec"]["shareProcessNamespace"] = True
    primary.setdefault("volumeMounts", []).append(mount)
    pod["spec"].setdefault("volumes", []).append({"name": "metrics-volume", "emptyDir": {}})
    wrap_primary(primary, collector)
    return pod


# --- Istio sidecar injection -------------------------------------------------------------------------------

def inject_istio(pod: Obj) -> Obj | None:
    """The pod with Istio's sidecar, or None where injection is turned off for it (injectRequired)."""
    meta = pod["metadata"]
    for source in (meta.get("annotations") or {}, meta.get("labels") or {}):
        if str(source.get("sidecar.istio.io/inject", "")).lower() in ("false", "n", "no", "off", "0"):
            return None
    if (pod.get("spec") or {}).get("hostNetwork") or any(
            c["name"] == "istio-proxy" for c in pod["spec"]["containers"]):
        return None
    pod = copy.deepcopy(pod)
    pod["spec"]["containers"].append({"name": "istio-proxy", "image": pod["spec"]["containers"][0]["image"],
                                      "imagePullPolicy": pod["spec"]["containers"][0].get("imagePullPolicy", "IfNotPresent"),
                                      "command": ["sleep", "infinity"]})
    pod["metadata"].setdefault("annotations", {})["sidecar.istio.io/status"] = json.dumps(
        {"containers": ["istio-proxy"], "volumes": [], "imagePullSecrets": None})
    pod["metadata"].setdefault("labels", {})["security.istio.io/tlsMode"] = "istio"
    return pod


# --- Katib experiment validation ---------------------------------------------------------------------------

def _value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else json.dumps(value)


def validate_experiment(experiment: Obj) -> list[str]:
    """Katib's validation errors for ``experiment`` (validator.go ValidateExperiment), as field errors print."""
    errors: list[str] = []

    def invalid(path: str, value: Any, detail: str) -> None:
        errors.append(f"{path}: Invalid value: {_value(value)}: {detail}")

    def required(path: str, detail: str) -> None:
        errors.append(f"{path}: Required value: {detail}")

    name = experiment["metadata"].get("name", "")
    if not re.match(r"^[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 40:
        invalid("metadata.name", name, "name must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character (e.g. 'my-name', or 'abc-123', regex "
                "used for validation is '^[a-z]([-a-z0-9]*[a-z0-9])?)') and may not be longer than 40 characters. ")
    experiment = defaulted(experiment)
    spec = experiment["spec"]
    max_failed, max_trials, parallel = spec.get("maxFailedTrialCount"), spec.get("maxTrialCount"), spec.get("parallelTrialCount")
    if max_failed is not None and max_failed < 0:
        invalid("spec.maxFailedTrialCount", max_failed, "should not be less than 0")
    if max_trials is not None and max_trials <= 0:
        invalid("spec.maxTrialCount", max_trials, "must be greater than 0")
    if parallel is not None and parallel <= 0:
        invalid("spec.parallelTrialCount", parallel, "must be greater than 0")
    if max_failed is not None and max_trials is not None and max_failed > max_trials:
        invalid("spec.maxFailedTrialCount", max_failed, "should be less than or equal to spec.maxTrialCount")
    if parallel is not None and max_trials is not None and parallel > max_trials:
        invalid("spec.parallelTrialCount", parallel, "should be less than or equal to spec.maxTrialCount")
    objective = spec.get("objective")
    if objective is None:
        required("spec.objective", "must be specified")
    else:
        if objective.get("type") not in ("minimize", "maximize"):
            invalid("spec.objective.type", objective.get("type", ""), "must be minimize or maximize")
        if not objective.get("objectiveMetricName"):
            required("spec.objective.objectiveMetricName", "must be specified")
        if objective.get("objectiveMetricName") in (objective.get("additionalMetricNames") or []):
            invalid("spec.objective.additionalMetricNames", objective["additionalMetricNames"],
                    "should not contain spec.objective.objectiveMetricName")
    algorithm = spec.get("algorithm")
    if algorithm is None:
        required("spec.algorithm", "must be specified")
    elif not algorithm.get("algorithmName"):
        required("spec.algorithm.algorithmName", "must be specified")
    elif algorithm["algorithmName"] not in ALGORITHMS:
        invalid("spec.algorithm.algorithmName", algorithm["algorithmName"],
                f"unable to get Suggestion config data for algorithm {algorithm['algorithmName']}: "
                f"failed to find algorithm '{algorithm['algorithmName']}' config in configmap 'katib-config'")
    if not spec.get("parameters") and not spec.get("nasConfig"):
        required("spec", "spec.parameters or spec.nasConfig must be specified")
    for index, parameter in enumerate(spec.get("parameters") or []):
        path = f"spec.parameters[{index}]"
        kind, space = parameter.get("parameterType"), parameter.get("feasibleSpace")
        if kind not in ("int", "double", "categorical", "discrete"):
            invalid(f"{path}.parameterType", kind or "", "parameterType must be one of int, double, categorical, discrete")
        if space is None:
            required(f"{path}.feasibleSpace", "feasibleSpace must be specified")
        elif kind in ("categorical", "discrete") and not space.get("list"):
            invalid(f"{path}.feasibleSpace.list", space.get("list"), f"feasibleSpace.list must be specified for {kind}")
        elif kind in ("int", "double") and not (space.get("max") or space.get("min")):
            required(f"{path}.feasibleSpace.max", "feasibleSpace.max or feasibleSpace.min must be specified")
    template = spec.get("trialTemplate")
    if template is None:
        required("spec.trialTemplate", "must be specified")
    else:
        if not template.get("primaryContainerName"):
            required("spec.trialTemplate.primaryContainerName", "must be specified")
        if not template.get("trialParameters"):
            required("spec.trialTemplate.trialParameters", "must be specified")
        if "trialSpec" not in template and "configMap" not in template:
            required("spec.trialTemplate.TrialSource",
                     "spec.trialTemplate.trialSpec or spec.trialTemplate.configMap must be specified")
        text = json.dumps(template.get("trialSpec") or {})
        for index, parameter in enumerate(template.get("trialParameters") or []):
            if "${trialParameters." + parameter.get("name", "") + "}" not in text:
                invalid(f"spec.trialTemplate.trialParameters[{index}].name", parameter.get("name", ""),
                        "parameter name must be in metadata.annotations, metadata.labels or spec in trialTemplate")
    errors += _collector_errors(spec["metricsCollectorSpec"])
    return errors


EDITABLE = ("parallelTrialCount", "maxTrialCount", "maxFailedTrialCount")


def validate_experiment_update(old: Obj, new: Obj) -> list[str]:
    """Only the trial counts of an Experiment may change (validator.go, with oldInst)."""
    if old.get("metadata", {}).get("deletionTimestamp") or new.get("metadata", {}).get("deletionTimestamp"):
        return []
    before, after = defaulted(old)["spec"], defaulted(new)["spec"]
    if {k: v for k, v in before.items() if k not in EDITABLE} != {k: v for k, v in after.items() if k not in EDITABLE}:
        return ["spec: Forbidden: only spec.parallelTrialCount, spec.maxTrialCount and spec.maxFailedTrialCount are editable"]
    return []


def _collector_errors(collector: Obj) -> list[str]:
    errors = []
    kind = collector["collector"]["kind"]
    source = collector.get("source") or {}
    path = source.get("fileSystemPath") or {}
    if kind == "File":
        if path.get("kind") != "File" or not str(path.get("path", "")).startswith("/"):
            errors.append("spec.metricsCollectorSpec.source.fileSystemPath.path: Required value: "
                          "file path where metrics file exists is required")
        if path.get("format") not in ("TEXT", "JSON"):
            errors.append("spec.metricsCollectorSpec.source.fileSystemPath.format: Required value: "
                          "format of metrics file is required for metrics collector")
        if path.get("format") == "JSON" and source.get("filter") is not None:
            errors.append('spec.metricsCollectorSpec.source.filter: Invalid value: "": '
                          "filter must be nil when format of metrics file is json")
    elif kind not in ("StdOut", "Push", "TensorFlowEvent", "PrometheusMetric", "Custom"):
        errors.append(f'spec.metricsCollectorSpec.collector.kind: Invalid value: "{kind}": invalid metrics collector kind: {kind}')
    for metrics_format in (source.get("filter") or {}).get("metricsFormat") or []:
        try:
            re.compile(metrics_format)
        except re.error as error:
            errors.append(f'spec.metricsCollectorSpec.source.filter.metricsFormat: Invalid value: "{metrics_format}": '
                          f"invalid filter: {error}")
            continue
        if not re.match(r".*\(.*\).*\(.*\).*", metrics_format):
            errors.append(f'spec.metricsCollectorSpec.source.filter.metricsFormat: Invalid value: "{metrics_format}": '
                          "two top subexpressions are required")
    return errors


# --- The server --------------------------------------------------------------------------------------------

class Webhooks:
    """The webhooks on an HTTPS port of 127.0.0.1, registered with the API server while running."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.errors: list[str] = []
        self.reviews: list[tuple[str, str]] = []  # (path, "namespace/name or generateName") of each request
        self._workdir = tempfile.TemporaryDirectory(prefix="kubeharness-webhooks-")
        cert, key, self.ca_pem = _certificates(self._workdir.name)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="kubeharness-webhooks", daemon=True)

    def start(self) -> Webhooks:
        self.thread.start()
        self._register()
        return self

    def stop(self) -> None:
        registration = client.AdmissionregistrationV1Api(self.kube.api)
        for delete in (registration.delete_mutating_webhook_configuration,
                       registration.delete_validating_webhook_configuration):
            try:
                delete(CONFIGURATION)
            except ApiException as error:
                if error.status != 404:
                    raise
        self.server.shutdown()
        self.server.server_close()
        self._workdir.cleanup()

    def _client_config(self, path: str) -> Obj:
        return {"url": f"https://127.0.0.1:{self.port}{path}", "caBundle": base64.b64encode(self.ca_pem).decode()}

    def _register(self) -> None:
        pods = [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]
        common = {"sideEffects": "None", "admissionReviewVersions": ["v1"], "failurePolicy": "Fail", "timeoutSeconds": 10}
        mutating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                    "metadata": {"name": CONFIGURATION}, "webhooks": [
                        {"name": "mutator.pod.katib.kubeflow.org", **common, "rules": pods,
                         "clientConfig": self._client_config("/mutate-pod"),
                         "namespaceSelector": {"matchLabels": {"katib.kubeflow.org/metrics-collector-injection": "enabled"}}},
                        {"name": "sidecar-injector.istio.io", **common, "rules": pods,
                         "reinvocationPolicy": "IfNeeded", "clientConfig": self._client_config("/inject"),
                         "namespaceSelector": {"matchLabels": {"istio-injection": "enabled"}}}]}
        validating = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
                      "metadata": {"name": CONFIGURATION}, "webhooks": [
                          {"name": "validator.experiment.katib.kubeflow.org", **common,
                           "clientConfig": self._client_config("/validate-experiment"),
                           "rules": [{"apiGroups": ["kubeflow.org"], "apiVersions": ["v1beta1"],
                                      "operations": ["CREATE", "UPDATE"], "resources": ["experiments"]}]},
                          {"name": spark_operator.WEBHOOK_NAME, **common,
                           "clientConfig": self._client_config(spark_operator.WEBHOOK_PATH),
                           "rules": [{"apiGroups": [spark_operator.GROUP], "apiVersions": [spark_operator.VERSION],
                                      "operations": ["CREATE", "UPDATE"], "resources": [spark_operator.PLURAL]}]}]}
        registration = client.AdmissionregistrationV1Api(self.kube.api)
        for body, create, replace in (
                (mutating, registration.create_mutating_webhook_configuration,
                 registration.replace_mutating_webhook_configuration),
                (validating, registration.create_validating_webhook_configuration,
                 registration.replace_validating_webhook_configuration)):
            try:
                create(body)
            except ApiException as error:
                if error.status != 409:
                    raise
                body["metadata"]["resourceVersion"] = self.kube.to_dict(
                    registration.read_mutating_webhook_configuration(CONFIGURATION)
                    if body["kind"].startswith("Mutating")
                    else registration.read_validating_webhook_configuration(CONFIGURATION))["metadata"]["resourceVersion"]
                replace(CONFIGURATION, body)

    def review(self, path: str, request: Obj) -> Obj:
        """The AdmissionReview response for one request."""
        obj = request["object"]
        meta = obj.get("metadata") or {}
        self.reviews.append((path, f"{request.get('namespace', '')}/{meta.get('name') or meta.get('generateName', '')}"))
        response: Obj = {"uid": request["uid"], "allowed": True}
        if path == "/validate-experiment":
            errors = validate_experiment(obj)
            if request.get("operation") == "UPDATE" and request.get("oldObject") and not errors:
                errors = validate_experiment_update(request["oldObject"], obj)
            if errors:
                message = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
                response.update(allowed=False, status={"code": 400, "message": message})
            return response
        if path == spark_operator.WEBHOOK_PATH:
            refusal = spark_operator.validate(obj, request.get("oldObject") if request.get("operation") == "UPDATE" else None)
            if refusal:
                response.update(allowed=False, status={"code": 403, "reason": "Forbidden", "message": refusal})
            return response
        if path == "/mutate-pod":
            trial = find_trial(self.kube, obj, request["namespace"])
            mutated = mutate_trial_pod(obj, trial) if trial is not None else None
        elif path == "/inject":
            mutated = inject_istio(obj)
        else:
            raise ValueError(f"no webhook at {path}")
        if mutated is not None:
            patch = [{"op": "add", "path": "/metadata", "value": mutated["metadata"]},
                     {"op": "add", "path": "/spec", "value": mutated["spec"]}]
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(patch).encode()).decode())
        return response


def _handler(webhooks: Webhooks) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            try:
                response = webhooks.review(self.path.partition("?")[0], review["request"])  # ?timeout=10s
            except Exception as error:  # noqa: BLE001 - an admission error, as the upstream webhook returns it
                webhooks.errors.append(f"{self.path}: {error!r}\n{traceback.format_exc()}")
                response = {"uid": review["request"]["uid"], "allowed": False,
                            "status": {"code": 500, "message": str(error)}}
            body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler
