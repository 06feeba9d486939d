"""Model storage layouts KServe's storage initializer downloads, and the InferenceService that serves them.

Runtimes:

- ``dmlops``: the dmlops predictor (``python -m dmlops.serving``, ClusterServingRuntime ``dmlops``): the
  exported directory as it is (model files + ``metadata.json``), so preprocessing and schema checks run
  in the server. Protocols v1 and v2.
- ``triton``: NVIDIA Triton (``kserve-tritonserver``): a model repository ``<name>/config.pbtxt`` +
  ``<name>/1/model.onnx`` (backend ``onnx``; Triton's PyTorch backend loads TorchScript, not the
  ``torch.export`` program torch models are exported as).
  Clients send encoded tensors (``numeric`` FP32, ``categorical`` INT64): no preprocessing in the server.
- ``tfserving``: TensorFlow Serving (``kserve-tensorflow-serving``): ``<version>/saved_model.pb``.

Storage URIs are any URL :mod:`dmlops.platform.storage` writes (``gs://``, ``s3://``, KFP's ``minio://``, a
local path) or ``pvc://<claim>/<path>``, written through the claim's mount in the step's pod.

KServe's storage initializer does not read ``minio://`` (kserve pkg/controller/v1beta1/inferenceservice/
utils/utils.go, SupportedStorageURIPrefixList; the predictor gets ``InvalidSpec`` otherwise): a model on
KFP's artifact store is served from its ``s3://`` form, by the ServiceAccount :data:`KFP_ARTIFACT_READER`
(manifests/base/kserve-storage.yaml), whose Secret carries the store's endpoint and credentials the way
KServe's credential builder reads them (kserve pkg/credentials/service_account_credentials.go and
pkg/credentials/s3/s3_secret.go: the Secrets listed by the ServiceAccount, keys ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY`` as the default inferenceservice-config names them, ``serving.kserve.io/s3-*``
annotations on the Secret).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dmlops.privacy.signing import verify_key_env
from dmlops.platform.naming import is_dns1035_label
from dmlops.platform.storage import is_minio, location, put
from dmlops.training.export import METADATA_FILE, fetch

RUNTIMES = ("dmlops", "triton", "tfserving")
# KServe's deployment modes (kserve pkg/constants/constants.go, DeploymentModeType): Knative (a Knative
# Service per component, traffic split, scale to zero) and Standard (Deployment + Service + HPA). Since
# KServe 0.16 the controller normalizes the older names Serverless and RawDeployment to these and records
# the new name in status.deploymentMode; its validating webhook then rejects an update whose annotation
# differs from that recorded name (validateDeploymentMode in
# pkg/apis/serving/v1beta1/inference_service_validation.go), so only the new names survive an update.
KNATIVE, STANDARD = "Knative", "Standard"
DEPLOYMENT_MODES = (KNATIVE, STANDARD)
LEGACY_DEPLOYMENT_MODES = {"Serverless": KNATIVE, "RawDeployment": STANDARD}
DMLOPS_MODEL_FORMAT = "dmlops"
DMLOPS_RUNTIME = "dmlops"
DMLOPS_HTTP_PORT = 8080
PVC_MOUNT_ROOT = "/mnt/pvc"
KFP_ARTIFACT_READER = "dmlops-kfp-artifact-reader"  # ServiceAccount with KFP's artifact store credentials
TAG_ROUTING_ANNOTATION = "serving.kserve.io/enable-tag-routing"
DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
TRITON_BACKEND = ("onnx", "onnxruntime_onnx", "model.onnx")  # KServe model format, Triton platform, file name
LOG_SINK_URL_ENV = "DMLOPS_PREDICTION_LOG_SINK_URL"  # where InferenceServices send their CloudEvents


def serving_runtime_container() -> dict[str, Any]:
    """The container of the ``dmlops`` ClusterServingRuntime: command, arguments (with KServe's
    ``{{.Name}}`` placeholder for the model name), HTTP port; protocols v1 and v2, Prometheus metrics on
    ``/metrics`` of the same port."""
    return {
        "name": "kserve-container",
        "command": ["python", "-m", "dmlops.serving"],
        "args": ["--model_dir=/mnt/models", "--model_name={{.Name}}", f"--http_port={DMLOPS_HTTP_PORT}",
                 "--enable_grpc=false"],
        "ports": [{"containerPort": DMLOPS_HTTP_PORT, "protocol": "TCP"}],
    }


def deployment_mode_name(mode: str) -> str:
    """KServe's current name of a deployment mode; the deprecated ``Serverless``/``RawDeployment`` are
    accepted and mapped to ``Knative``/``Standard``."""
    name = LEGACY_DEPLOYMENT_MODES.get(mode, mode)
    if name not in DEPLOYMENT_MODES:
        raise ValueError(f"deployment_mode {mode!r}: choose one of {', '.join(DEPLOYMENT_MODES)}")
    return name


def writable_location(storage_uri: str, pvc_mount_root: str = PVC_MOUNT_ROOT) -> str:
    """Where a step writes ``storage_uri``: the URI itself, or for ``pvc://claim/path`` the path under the
    claim's mount (``<pvc_mount_root>/<claim>/path``)."""
    if storage_uri.startswith("pvc://"):
        claim, _, path = storage_uri.removeprefix("pvc://").partition("/")
        if not claim or not path:
            raise ValueError(f"storage_uri {storage_uri!r}: expected pvc://<claim>/<path>")
        return f"{pvc_mount_root.rstrip('/')}/{claim}/{path}"
    return storage_uri


def kserve_storage(uri: str, service_account: str = "") -> tuple[str, str]:
    """The ``storageUri`` and ``serviceAccountName`` KServe serves the model at ``uri`` with: KFP's
    ``minio://`` as ``s3://``, read by :data:`KFP_ARTIFACT_READER` unless ``service_account`` names
    another; any other URI and ``service_account`` unchanged."""
    if is_minio(uri):
        return location(uri), service_account or KFP_ARTIFACT_READER
    return uri, service_account


def _triton_config(name: str, platform: str, metadata: dict[str, Any]) -> str:
    numeric = len(metadata["inputs"]["numeric"]["columns"])
    categorical = len(metadata["inputs"]["categorical"]["columns"])
    return (
        f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: 0\n'
        f'input [\n  {{ name: "numeric" data_type: TYPE_FP32 dims: [ -1, {numeric} ] }},\n'
        f'  {{ name: "categorical" data_type: TYPE_INT64 dims: [ -1, {categorical} ] }}\n]\n'
        'output [\n  { name: "logit" data_type: TYPE_FP32 dims: [ -1 ] }\n]\n'
    )


def package_model(model_uri: str, storage_uri: str, *, runtime: str = "dmlops", model_name: str = "model",
                  version: int = 1) -> dict[str, Any]:
    """Write the exported model at ``model_uri`` to ``storage_uri`` in ``runtime``'s layout; returns
    what the InferenceService needs (storage URI, model format name, runtime, protocol). Triton serves
    the ONNX file of a torch export."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
    source = fetch(model_uri)
    metadata = json.loads((source / METADATA_FILE).read_text())
    files = metadata.get("model_files", {})
    with tempfile.TemporaryDirectory(prefix="dmlops-package-") as scratch:
        layout = Path(scratch) / "model"
        if runtime == "dmlops":
            shutil.copytree(source, layout)
            served = {"format": DMLOPS_MODEL_FORMAT, "runtime": DMLOPS_RUNTIME, "protocol": "v1"}
        elif runtime == "triton":
            if "onnx" not in files:
                raise ValueError(f"{model_uri}: Triton serves the ONNX file; this export has {sorted(files)}")
            format_name, platform, file_name = TRITON_BACKEND
            (layout / model_name / str(version)).mkdir(parents=True)
            shutil.copy(source / files["onnx"], layout / model_name / str(version) / file_name)
            (layout / model_name / "config.pbtxt").write_text(_triton_config(model_name, platform, metadata))
            shutil.copy(source / METADATA_FILE, layout / METADATA_FILE)
            served = {"format": format_name, "runtime": "kserve-tritonserver", "protocol": "v2"}
        else:
            if "saved_model" not in files:
                raise ValueError(f"{model_uri}: TF Serving needs a SavedModel; this export has {sorted(files)}")
            shutil.copytree(source / files["saved_model"], layout / str(version))
            served = {"format": "tensorflow", "runtime": "kserve-tensorflow-serving", "protocol": "v1"}
        put(layout, writable_location(storage_uri))
    return {"storage_uri": storage_uri, **served}


def inference_service(
    name: str,
    namespace: str,
    storage_uri: str,
    *,
    model_format: str = DMLOPS_MODEL_FORMAT,
    runtime: str = DMLOPS_RUNTIME,
    protocol: str = "v1",
    deployment_mode: str = KNATIVE,
    canary_traffic_percent: int | None = None,
    service_account: str = "",
    min_replicas: int = 1,
    max_replicas: int = 3,
    cpu: str = "1",
    memory: str = "1Gi",
    labels: dict[str, str] | None = None,
    model_args: list[str] | None = None,
    logger_url: str | None = None,
) -> dict[str, Any]:
    """An InferenceService (serving.kserve.io/v1beta1) as a plain dict.

    Knative services get tag routing, so the previous and the latest revision each have a URL the
    canary gates can call; ``canary_traffic_percent`` sends that share to the latest revision.
    Standard (raw Deployment) has no traffic split: it must not be given a canary percentage.
    ``deployment_mode`` may be given by its deprecated name (``Serverless``, ``RawDeployment``); the
    annotation always carries the current one. ``logger_url``: KServe's agent sends every request and
    response to this URL as CloudEvents (``spec.predictor.logger``, mode ``all``), e.g. to the prediction
    log sink (:mod:`dmlops.serving.log_sink`); None takes ``$DMLOPS_PREDICTION_LOG_SINK_URL`` (so a deploy
    step whose pod has it set logs), "" or unset: no logger. With ``$DMLOPS_MODEL_VERIFY_SECRET``
    (``<secret>/<key>`` of the model-signing public key) set in this pod, the predictor gets the key as
    ``DMLOPS_MODEL_VERIFY_KEY`` from that Secret and refuses unsigned or tampered models
    (:func:`dmlops.privacy.signing.verify_key_env`).
    """
    if not is_dns1035_label(name):
        raise ValueError(f"InferenceService name {name!r} must be a DNS-1035 label (lower case, starts with a letter)")
    deployment_mode = deployment_mode_name(deployment_mode)
    if canary_traffic_percent is not None:
        if deployment_mode != KNATIVE:
            raise ValueError("canary_traffic_percent needs deployment_mode Knative (Standard has no traffic split)")
        if not 0 <= canary_traffic_percent <= 100:
            raise ValueError(f"canary_traffic_percent must be 0..100, got {canary_traffic_percent}")
    annotations = {DEPLOYMENT_MODE_ANNOTATION: deployment_mode, "serving.kserve.io/enable-prometheus-scraping": "true"}
    if deployment_mode == KNATIVE:
        annotations[TAG_ROUTING_ANNOTATION] = "true"
    model: dict[str, Any] = {
        "modelFormat": {"name": model_format},
        "runtime": runtime,
        "protocolVersion": protocol,
        "storageUri": storage_uri,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}},
    }
    if model_args:
        model["args"] = list(model_args)
    verify_key = verify_key_env()
    if verify_key:
        model["env"] = [verify_key]
    predictor: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas, "model": model}
    if service_account:
        predictor["serviceAccountName"] = service_account
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    logger_url = os.environ.get(LOG_SINK_URL_ENV, "") if logger_url is None else logger_url
    if logger_url:
        predictor["logger"] = {"mode": "all", "url": logger_url}
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}), "annotations": annotations},
        "spec": {"predictor": predictor},
    }
