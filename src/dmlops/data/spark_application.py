"""Run a job of the Spark engine: embedded in this process, or as a Kubeflow Spark Operator ``SparkApplication``.

A job is one data operation run by the engine's entry point, ``python -m dmlops.data.spark <operation>
<arguments.json>`` (``operation`` a data component's name such as ``validate``; the JSON file holds the
component's inputs, artifacts as URIs). :func:`run_spark_job` runs it:

- ``backend="local"``: the entry point runs in this process (Spark embedded, ``local[*]``);
- ``backend="kubernetes"``: a ``SparkApplication`` (sparkoperator.k8s.io/v1beta2) built by
  :func:`spark_application` goes through the platform launcher (create or reattach by a name derived from
  the run and task, stream the driver's log, wait for ``COMPLETED``/``FAILED``, delete on SIGTERM). The
  driver runs :data:`DRIVER_SCRIPT` of the spark image (``dmlops/data/spark_driver.py``), which writes the
  arguments it is given as JSON text to a file and runs the entry point: under spark-submit, whose
  ``spark.master`` the entry point's SparkSession takes, with executors as the spec asks.

On the cluster the driver and executors read and write object storage: ``minio://`` URIs become ``s3://``
with KFP's store settings and credentials in their environment (:func:`dmlops.platform.storage.pod_env`),
and a local path is refused (it exists only in the step's pod). A component passes its output artifacts'
URIs and names their local paths in ``outputs``: after the job each is copied to its path, which KFP uploads
to the same URI after the component's body (as the training step does with its export).

A data component with ``engine="spark"`` calls :func:`spark_component`: on Kubernetes it runs the
component's job as a SparkApplication and applies the job's metadata document to the component's
artifacts; elsewhere the component runs Spark embedded in its own process.
"""

from __future__ import annotations

import json
import runpy
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmlops.platform import storage
from dmlops.platform.backend import resolve_backend
from dmlops.platform.naming import resource_name, run_labels

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"
ENTRY_MODULE = "dmlops.data.spark"
# Where the spark image (containers/spark/Dockerfile) keeps dmlops/data/spark_driver.py.
DRIVER_SCRIPT = "/opt/dmlops/spark_driver.py"
# The pyspark the spark image installs (containers/spark/requirements.lock).
SPARK_VERSION = "4.3.0"
# The service account the driver runs as: it creates and deletes its executor pods (manifests/base/spark-rbac.yaml).
SPARK_SERVICE_ACCOUNT = "dmlops-spark"
DEFAULT_TIMEOUT_S = 6 * 3600.0


class SparkJobError(RuntimeError):
    """The entry point exited with a non-zero status."""


@dataclass(frozen=True)
class SparkResources:
    """Driver and executors of a SparkApplication (ignored by the local backend). Memory is in Spark's
    JVM notation (``512m``, ``4g``)."""

    driver_cores: int = 1
    driver_memory: str = "2g"
    executor_cores: int = 1
    executor_memory: str = "2g"
    executor_instances: int = 2

    def __post_init__(self) -> None:
        for name in ("driver_cores", "executor_cores", "executor_instances"):
            if getattr(self, name) < 1:
                raise ValueError(f"SparkResources.{name} must be at least 1; got {getattr(self, name)}")


def run_entry_point(operation: str, arguments: Mapping[str, Any]) -> None:
    """Run ``python -m dmlops.data.spark <operation> <arguments.json>`` in this process, the arguments
    written to a temporary JSON file. An exception of the job propagates; a non-zero exit status raises
    :class:`SparkJobError`."""
    with tempfile.TemporaryDirectory(prefix="dmlops-spark-") as folder:
        path = Path(folder) / "arguments.json"
        path.write_text(json.dumps(dict(arguments)))
        saved = sys.argv
        sys.argv = [ENTRY_MODULE, operation, str(path)]
        try:
            runpy.run_module(ENTRY_MODULE, run_name="__main__", alter_sys=True)
        except SystemExit as exit_:
            if exit_.code not in (None, 0):
                raise SparkJobError(f"python -m {ENTRY_MODULE} {operation} exited with status {exit_.code}") from None
        finally:
            sys.argv = saved


def pod_arguments(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``arguments`` as the driver pod reads them, and the object-store URIs among them: every ``minio://``
    URI as ``s3://``; a local path (a string starting with ``/`` or ``file://``) is refused, naming its key."""
    uris: list[str] = []

    def convert(value: Any, where: str) -> Any:
        if isinstance(value, Mapping):
            return {key: convert(item, f"{where}.{key}") for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item, f"{where}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, str) and ("://" in value or value.startswith("/")):
            converted = storage.pod_uri(value, where)
            uris.append(value)
            return converted
        return value

    converted = {key: convert(value, key) for key, value in arguments.items()}
    return converted, uris


def _env_list(env: Mapping[str, Any]) -> list[dict[str, Any]]:
    """EnvVar entries: a string value, or a ``valueFrom`` mapping such as ``{"secretKeyRef": ...}``."""
    return [
        {"name": name, "value": value} if isinstance(value, str) else {"name": name, "valueFrom": dict(value)}
        for name, value in sorted(env.items())
    ]


def spark_application(
    name: str,
    namespace: str,
    operation: str,
    arguments: Mapping[str, Any],
    *,
    image: str,
    resources: SparkResources = SparkResources(),
    service_account: str = SPARK_SERVICE_ACCOUNT,
    labels: Mapping[str, str] | None = None,
    env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The SparkApplication that runs ``operation`` with ``arguments`` (already as the driver reads them).

    A Python application in cluster mode whose main file is :data:`DRIVER_SCRIPT` of ``image``, given
    ``operation`` and the arguments as JSON text; ``restartPolicy`` Never (a failed step is retried by
    KFP, which reattaches or starts again); ``labels`` on the application, which the operator copies to
    the driver and executor pods; ``env`` in the driver and the executors."""
    if not image:
        raise ValueError("spark_application needs the image of the driver and executors (dmlops.images.image('spark'))")
    if not operation:
        raise ValueError("spark_application needs the operation to run (a data component's name, e.g. 'validate')")
    env_list = _env_list(env or {})
    pod_labels = dict(labels or {})

    def pod(cores: int, memory: str) -> dict[str, Any]:
        spec: dict[str, Any] = {"cores": cores, "memory": memory, "labels": pod_labels}
        if env_list:
            spec["env"] = env_list
        return spec

    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(pod_labels)},
        "spec": {
            "type": "Python",
            "mode": "cluster",
            "image": image,
            "imagePullPolicy": "IfNotPresent",
            "mainApplicationFile": f"local://{DRIVER_SCRIPT}",
            "arguments": [operation, json.dumps(dict(arguments), sort_keys=True)],
            "sparkVersion": SPARK_VERSION,
            "restartPolicy": {"type": "Never"},
            "driver": {**pod(resources.driver_cores, resources.driver_memory), "serviceAccount": service_account},
            "executor": {
                **pod(resources.executor_cores, resources.executor_memory),
                "instances": resources.executor_instances,
            },
        },
    }


def run_spark_job(
    operation: str,
    arguments: Mapping[str, Any],
    backend: str = "local",
    *,
    run_id: str = "",
    task_name: str = "",
    image: str = "",
    namespace: str = "",
    resources: SparkResources = SparkResources(),
    service_account: str = SPARK_SERVICE_ACCOUNT,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    outputs: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Run the Spark job ``operation`` with ``arguments`` (the component's inputs, artifacts as URIs).

    ``backend`` "local" runs it in this process; "kubernetes" as a SparkApplication named
    ``resource_name("spark", run_id, task_name)`` and labelled with the run and task (a retried step
    reattaches to it), in ``namespace`` (default: this pod's), running ``image`` (default: the spark
    image of this version); "auto" picks kubernetes inside a pod. ``outputs`` maps the keys of
    ``arguments`` that are output URIs to the local paths (the artifacts' ``.path``) they are copied to
    after a job on Kubernetes; the local backend is given local paths and ignores it. Returns what ran: the
    backend and, on Kubernetes, the SparkApplication and how it ended. A failed application raises
    :class:`~dmlops.platform.JobFailed` with the operator's error message and the end of the driver's log.
    """
    backend = resolve_backend(backend)
    if backend == "local":
        run_entry_point(operation, arguments)
        return {"backend": "local", "operation": operation}
    from dmlops.images import image as family_image
    from dmlops.platform.kubernetes import KubernetesLauncher, current_namespace

    if not run_id:
        raise ValueError("run_spark_job on kubernetes needs run_id and task_name (dsl.PIPELINE_JOB_ID_PLACEHOLDER and "
                         "dsl.PIPELINE_TASK_NAME_PLACEHOLDER): they name the SparkApplication a retried step reattaches to")
    missing = sorted(set(outputs or {}) - set(arguments))
    if missing:
        raise ValueError(f"outputs {missing} are not keys of the job's arguments {sorted(arguments)}")
    converted, uris = pod_arguments(arguments)
    application = spark_application(
        resource_name("spark", run_id, task_name),
        namespace or current_namespace(),
        operation,
        converted,
        image=image or family_image("spark"),
        resources=resources,
        service_account=service_account,
        labels=run_labels(run_id, task_name),
        env=storage.pod_env(uris),
    )
    result = KubernetesLauncher().run(application, timeout_s=timeout_s)
    for key, local_path in (outputs or {}).items():
        download(arguments[key], local_path)
    return {"backend": "kubernetes", "operation": operation, **result.to_dict()}


def spark_component(
    operation: str,
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    parameters: Mapping[str, Any],
    *,
    engine: str,
    backend: str,
    run_id: str,
    task_name: str,
    metrics: Any = None,
) -> dict[str, Any] | None:
    """Run a data component's ``operation`` as a SparkApplication when ``engine`` is "spark" and ``backend``
    resolves to "kubernetes"; else return None (the component runs in its own process).

    ``inputs`` and ``outputs`` map the entry point's artifact names to the component's KFP artifacts, which
    the job reads and writes at their URIs; ``parameters`` are its other arguments. The job's metadata
    document goes beside the first output; after the job each output's local path holds what was written
    at its URI, each output gets its metadata from the document, ``metrics`` (a KFP Metrics artifact) its
    ``"metrics"``, and the document's ``"outputs"`` (the component's returned values) are returned."""
    if resolve_backend(backend) != "kubernetes" or engine != "spark":
        return None
    first = next(iter(outputs.values()))
    metadata_uri = f"{first.uri.rstrip('/')}-spark-metadata.json"
    arguments = {**{name: artifact.uri for name, artifact in {**inputs, **outputs}.items()}, **parameters,
                 "metadata": metadata_uri}
    run_spark_job(operation, arguments, "kubernetes", run_id=run_id, task_name=task_name,
                  outputs={name: artifact.path for name, artifact in outputs.items()})
    filesystem, path = storage.filesystem(metadata_uri)
    document = json.loads(filesystem.cat_file(path))
    for name, artifact in outputs.items():
        artifact.metadata.update(document.get(name) or {})
    for name, value in (document.get("metrics") or {}).items():
        metrics.log_metric(name, value)
    return dict(document.get("outputs") or {})


def download(uri: str, local_path: str) -> None:
    """Copy what the job wrote at ``uri`` (a file, or a directory's files) to ``local_path``."""
    filesystem, path = storage.filesystem(uri)
    if not filesystem.exists(path):
        raise SparkJobError(f"the Spark job wrote nothing at {uri}, one of its outputs")
    Path(local_path).parent.mkdir(parents=True, exist_ok=True)
    if filesystem.isdir(path):
        Path(local_path).mkdir(parents=True, exist_ok=True)
        filesystem.get(f"{path.rstrip('/')}/", f"{str(local_path).rstrip('/')}/", recursive=True)
    else:
        filesystem.get(path, str(local_path))
