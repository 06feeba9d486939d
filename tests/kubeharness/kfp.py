"""A small Kubeflow Pipelines backend: runs a compiled pipeline's tasks as pods on a real cluster.

It does what KFP v2's driver and launcher do for each task, on the pods a real KFP would run:

- **Walk** the root DAG (``backend/src/v2/driver/driver.go`` resolves a task's inputs once its
  ``dependentTasks`` and producers have succeeded; Argo runs independent tasks at the same time). What the
  flights pipeline compiles to is supported: container tasks, inputs from pipeline parameters
  (``componentInputParameter``), constants (``runtimeValue``, with ``{{$.inputs.parameters[...]}}``
  channels filled in as ``resolveInputs`` does), other tasks' output parameters and artifacts. Conditions,
  loops, nested DAGs, importers and exit handlers are refused with :class:`UnsupportedPipeline`.
- **Build the executor input** (``driver.go`` ``provisionOutputs``): output artifacts at
  ``<pipeline root>/<pipeline>/<run id>/<task>/<output>`` under ``minio://mlpipeline/v2/artifacts``,
  output parameter files under ``/tmp/kfp/outputs/``, the executor output file
  ``/tmp/kfp_outputs/output_metadata.json``; component defaults added and ``{{$.pipeline_job_uuid}}``-style
  placeholders replaced (``component/launcher_v2.go`` ``addDefaultParams`` and ``getPlaceholders``).
- **Run each task in its own pod** (``backend/src/v2/compiler/argocompiler/container.go``): the image the
  component names with ``imagePullPolicy: Never`` (the node pulls nothing), as the ServiceAccount
  ``pipeline-runner``, the launcher wrapping the component's command
  (:mod:`kubeharness.kfp_launcher`, mounted from a ConfigMap as the real launcher binary is copied in by an
  init container), the MinIO credentials from the Secret ``mlpipeline-minio-artifact``, and the
  kfp-kubernetes platform settings a pipeline compiled with them carries (Secrets as env or volumes,
  node selectors, tolerations).
- **Read each task's outputs** back (the real launcher publishes them to ML Metadata; here it uploads
  them as JSON beside the artifacts).

MinIO is where KFP's manifests put it, ``http://minio-service.kubeflow:9000`` (the harness makes that
Service point at its S3 server, and the node's cluster DNS resolves it).
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
RESULTS_ROOT = "minio://mlpipeline/v2/launcher-results"
OUTPUT_METADATA_FILE = "/tmp/kfp_outputs/output_metadata.json"
OUTPUT_PARAMETER_DIR = "/tmp/kfp/outputs"
LAUNCHER_CONFIGMAP = "kfp-launcher-script"
LAUNCHER_MOUNT = "/kfp-launcher"
LAUNCHER_SCRIPT = Path(__file__).with_name("kfp_launcher.py")
SERVICE_ACCOUNT = "pipeline-runner"
MINIO_SECRET = "mlpipeline-minio-artifact"
# kubeflow/pipelines backend/src/v2/config/env.go: the default MinIO endpoint of the artifact store.
MINIO_ENDPOINT = "http://minio-service.kubeflow:9000"
CHANNEL = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")
# Task fields this backend runs; any other (triggerPolicy: If/Elif/Else, iteratorPolicy: ParallelFor, ...) is refused.
SUPPORTED_TASK_FIELDS = {"componentRef", "dependentTasks", "inputs", "taskInfo", "cachingOptions", "retryPolicy"}
SUPPORTED_PLATFORM_FIELDS = {"secretAsEnv", "secretAsVolume", "nodeSelector", "tolerations"}


class UnsupportedPipeline(ValueError):
    """The compiled pipeline uses a KFP feature this backend does not run; the message names it."""


class TaskFailed(RuntimeError):
    """A task's pod failed; the message holds the tail of its log."""


@dataclass
class TaskResult:
    """One task's pod and outputs, with when its pod was created, started running and finished."""

    name: str
    pod: str
    image: str
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: float = 0.0
    running: float = 0.0
    finished: float = 0.0
    launcher: dict[str, float] = field(default_factory=dict)
    result_uri: str = ""

    @property
    def start_overhead_s(self) -> float:
        """Seconds from creating the pod to its container running (scheduling, sandbox, network)."""
        return self.running - self.created


@dataclass
class RunResult:
    run_id: str
    tasks: dict[str, TaskResult]
    seconds: float


def _pod_name(run_id: str, task: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", f"{run_id[:8]}-{task}".lower())
    return name[:63].strip("-")


def _fill_channels(value: Any, parameters: dict[str, Any]) -> Any:
    """``value`` with ``{{$.inputs.parameters['name']}}`` replaced by that input's value (driver.go)."""
    if isinstance(value, str):
        whole = CHANNEL.fullmatch(value)
        if whole:
            return parameters[whole.group(1)]
        return CHANNEL.sub(lambda match: str(parameters[match.group(1)]), value)
    if isinstance(value, list):
        return [_fill_channels(item, parameters) for item in value]
    if isinstance(value, dict):
        return {key: _fill_channels(item, parameters) for key, item in value.items()}
    return value


def _as_protojson(value: Any) -> Any:
    """A parameter value as the driver hands it over: a protobuf ``Value`` marshalled by protojson, where
    every number is a double written without a fraction when it has none (``50.0`` -> ``50``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [_as_protojson(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_protojson(item) for key, item in value.items()}
    return value


def _fill_placeholders(value: Any, placeholders: dict[str, str]) -> Any:
    if isinstance(value, str):
        for placeholder, replacement in placeholders.items():
            value = value.replace(placeholder, replacement)
        return value
    if isinstance(value, list):
        return [_fill_placeholders(item, placeholders) for item in value]
    if isinstance(value, dict):
        return {key: _fill_placeholders(item, placeholders) for key, item in value.items()}
    return value


def _command_placeholders(executor_input: dict[str, Any]) -> dict[str, str]:
    """launcher_v2.go ``getPlaceholders``: ``{{$}}`` and the per-input/output placeholders of command lines."""
    placeholders = {"{{$}}": json.dumps(executor_input)}
    inputs, outputs = executor_input["inputs"], executor_input["outputs"]
    for name, value in inputs.get("parameterValues", {}).items():
        placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = value if isinstance(value, str) else json.dumps(value)
    for name, listed in inputs.get("artifacts", {}).items():
        uri = listed["artifacts"][0]["uri"]
        placeholders[f"{{{{$.inputs.artifacts['{name}'].uri}}}}"] = uri
        placeholders[f"{{{{$.inputs.artifacts['{name}'].path}}}}"] = _local_path(uri)
    for name, parameter in outputs.get("parameters", {}).items():
        placeholders[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = parameter["outputFile"]
    for name, listed in outputs.get("artifacts", {}).items():
        uri = listed["artifacts"][0]["uri"]
        placeholders[f"{{{{$.outputs.artifacts['{name}'].uri}}}}"] = uri
        placeholders[f"{{{{$.outputs.artifacts['{name}'].path}}}}"] = _local_path(uri)
    return placeholders


def _local_path(uri: str) -> str:
    if not uri.startswith("minio://"):
        raise UnsupportedPipeline(f"artifact URI {uri}: this backend keeps artifacts on MinIO only")
    return "/minio/" + uri[len("minio://"):]


class KfpBackend:
    """Runs compiled pipelines in ``namespace`` of a cluster, with artifacts on an S3 server.

    ``s3`` is a :class:`kubeharness.s3.S3Server` (or any object with ``client()``) that pods reach at
    ``minio_endpoint``.
    :meth:`install` creates what a KFP install gives a namespace: the ServiceAccount ``pipeline-runner``,
    the Secret ``mlpipeline-minio-artifact`` and the launcher's ConfigMap.
    """

    def __init__(self, api: client.ApiClient, namespace: str, s3: Any, *, minio_endpoint: str = MINIO_ENDPOINT,
                 max_parallel: int = 3, task_timeout: float = 1800.0, poll_seconds: float = 0.25):
        self.api = api
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.s3 = s3
        self.minio_endpoint = minio_endpoint
        self.max_parallel = max_parallel
        self.task_timeout = task_timeout
        self.poll_seconds = poll_seconds

    def install(self, access_key: str, secret_key: str) -> None:
        """The ServiceAccount, the MinIO Secret and the launcher ConfigMap in the namespace (idempotent)."""
        objects = [
            (self.core.create_namespaced_service_account,
             client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT))),
            (self.core.create_namespaced_secret,
             client.V1Secret(metadata=client.V1ObjectMeta(name=MINIO_SECRET),
                             string_data={"accesskey": access_key, "secretkey": secret_key})),
            (self.core.create_namespaced_config_map,
             client.V1ConfigMap(metadata=client.V1ObjectMeta(name=LAUNCHER_CONFIGMAP),
                                data={"launcher.py": LAUNCHER_SCRIPT.read_text()})),
        ]
        for create, body in objects:
            try:
                create(self.namespace, body)
            except ApiException as error:
                if error.status != 409:
                    raise

    # -- the walk ------------------------------------------------------------------------------------------
    def run(self, pipeline: dict[str, Any], arguments: dict[str, Any] | None = None,
            platform: dict[str, Any] | None = None, run_id: str | None = None) -> RunResult:
        """Run every task of ``pipeline`` (a compiled PipelineSpec) and return their outputs.

        ``platform`` is the kfp-kubernetes platform spec compiled beside it (the YAML's second document),
        if any. Raises :class:`TaskFailed` when a task's pod fails (running tasks are left to finish and
        no further task starts), :class:`UnsupportedPipeline` before starting anything it cannot run.
        """
        started = time.monotonic()
        run_id = run_id or str(uuid.uuid4())
        tasks = pipeline["root"]["dag"]["tasks"]
        self._check_supported(pipeline, platform)
        parameters = self._pipeline_parameters(pipeline, arguments or {})
        executors = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get(
            "executors", {})
        done: dict[str, TaskResult] = {}
        running: dict[str, TaskResult] = {}
        pending = dict(tasks)
        while pending or running:
            for name in [n for n, task in pending.items() if set(self._upstream(task)) <= set(done)]:
                if len(running) >= self.max_parallel:
                    break
                task = pending.pop(name)
                running[name] = self._start(pipeline, executors, run_id, name, task, parameters, done)
            for name, result in list(running.items()):
                if self._finished(result):
                    done[name] = running.pop(name)
            if pending and not running and not any(set(self._upstream(t)) <= set(done) for t in pending.values()):
                raise UnsupportedPipeline(f"tasks {sorted(pending)} wait on tasks that never run")
            time.sleep(self.poll_seconds)
        return RunResult(run_id, done, time.monotonic() - started)

    @staticmethod
    def _upstream(task: dict[str, Any]) -> list[str]:
        producers = list(task.get("dependentTasks", []))
        inputs = task.get("inputs", {})
        for spec in [*inputs.get("parameters", {}).values(), *inputs.get("artifacts", {}).values()]:
            for kind in ("taskOutputParameter", "taskOutputArtifact"):
                if kind in spec:
                    producers.append(spec[kind]["producerTask"])
        return producers

    @staticmethod
    def _check_supported(pipeline: dict[str, Any], platform: dict[str, Any] | None) -> None:
        for name, task in pipeline["root"]["dag"]["tasks"].items():
            extra = set(task) - SUPPORTED_TASK_FIELDS
            if extra:
                raise UnsupportedPipeline(f"task {name}: {sorted(extra)} (conditions, loops, ...) are not run here")
            component = pipeline["components"][task["componentRef"]["name"]]
            if "dag" in component:
                raise UnsupportedPipeline(f"task {name}: nested pipelines are not run here")
            executor = pipeline["deploymentSpec"]["executors"][component["executorLabel"]]
            if "container" not in executor:
                raise UnsupportedPipeline(f"task {name}: executor {sorted(executor)} (importer, ...) is not run here")
            for spec in task.get("inputs", {}).get("parameters", {}).values():
                if set(spec) - {"componentInputParameter", "runtimeValue", "taskOutputParameter"}:
                    raise UnsupportedPipeline(f"task {name}: input parameter {spec} is not run here")
            for spec in task.get("inputs", {}).get("artifacts", {}).values():
                if set(spec) != {"taskOutputArtifact"}:
                    raise UnsupportedPipeline(f"task {name}: input artifact {spec} is not run here")
        if "exitHandler" in json.dumps(pipeline["root"]):
            raise UnsupportedPipeline("exit handlers are not run here")
        executors = (platform or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get(
            "executors", {})
        for label, settings in executors.items():
            extra = set(settings) - SUPPORTED_PLATFORM_FIELDS
            if extra:
                raise UnsupportedPipeline(f"executor {label}: kfp-kubernetes settings {sorted(extra)} are not run here")

    @staticmethod
    def _pipeline_parameters(pipeline: dict[str, Any], arguments: dict[str, Any]) -> dict[str, Any]:
        declared = pipeline["root"].get("inputDefinitions", {}).get("parameters", {})
        unknown = set(arguments) - set(declared)
        if unknown:
            raise ValueError(f"unknown pipeline parameters {sorted(unknown)}; the pipeline takes {sorted(declared)}")
        values = {}
        for name, spec in declared.items():
            if name in arguments:
                values[name] = arguments[name]
            elif "defaultValue" in spec:
                values[name] = spec["defaultValue"]
            elif not spec.get("isOptional"):
                raise ValueError(f"pipeline parameter {name} has no default and no argument")
        return values

    # -- one task --------------------------------------------------------------------------------------------
    def _executor_input(self, pipeline: dict[str, Any], run_id: str, name: str, task: dict[str, Any],
                        pipeline_parameters: dict[str, Any], done: dict[str, TaskResult]) -> dict[str, Any]:
        component = pipeline["components"][task["componentRef"]["name"]]
        inputs = task.get("inputs", {})
        values: dict[str, Any] = {}
        constants: dict[str, Any] = {}
        for key, spec in inputs.get("parameters", {}).items():
            if "componentInputParameter" in spec:
                values[key] = pipeline_parameters[spec["componentInputParameter"]]
            elif "taskOutputParameter" in spec:
                producer = spec["taskOutputParameter"]
                values[key] = done[producer["producerTask"]].parameters[producer["outputParameterKey"]]
            else:
                constants[key] = spec["runtimeValue"]["constant"]
        for key, constant in constants.items():
            values[key] = _fill_channels(constant, values)
        for key, spec in component.get("inputDefinitions", {}).get("parameters", {}).items():
            if key not in values and "defaultValue" in spec:
                values[key] = spec["defaultValue"]
        values = {key: value for key, value in values.items()
                  if key in component.get("inputDefinitions", {}).get("parameters", {})}
        artifacts = {}
        for key, spec in inputs.get("artifacts", {}).items():
            producer = spec["taskOutputArtifact"]
            artifact = done[producer["producerTask"]].artifacts[producer["outputArtifactKey"]]
            artifacts[key] = {"artifacts": [artifact]}
        outputs_spec = component.get("outputDefinitions", {})
        task_root = f"{PIPELINE_ROOT}/{pipeline['pipelineInfo']['name']}/{run_id}/{name}"
        outputs = {
            "artifacts": {key: {"artifacts": [{"name": key, "type": spec["artifactType"], "uri": f"{task_root}/{key}",
                                               "metadata": spec.get("metadata", {})}]}
                          for key, spec in outputs_spec.get("artifacts", {}).items()},
            "parameters": {key: {"outputFile": f"{OUTPUT_PARAMETER_DIR}/{key}"}
                           for key in outputs_spec.get("parameters", {})},
            "outputFile": OUTPUT_METADATA_FILE,
        }
        executor_input = {"inputs": {"parameterValues": _as_protojson(values), "artifacts": artifacts},
                          "outputs": outputs}
        return _fill_placeholders(executor_input, {
            "{{$.pipeline_job_name}}": f"{pipeline['pipelineInfo']['name']}-{run_id[:8]}",
            "{{$.pipeline_job_uuid}}": run_id,
            "{{$.pipeline_task_name}}": name,
            "{{$.pipeline_task_uuid}}": str(uuid.uuid5(uuid.UUID(run_id), name)),
        })

    def _start(self, pipeline: dict[str, Any], platform_executors: dict[str, Any], run_id: str, name: str,
               task: dict[str, Any], pipeline_parameters: dict[str, Any], done: dict[str, TaskResult]) -> TaskResult:
        component = pipeline["components"][task["componentRef"]["name"]]
        label = component["executorLabel"]
        container = pipeline["deploymentSpec"]["executors"][label]["container"]
        executor_input = self._executor_input(pipeline, run_id, name, task, pipeline_parameters, done)
        placeholders = _command_placeholders(executor_input)
        command = _fill_placeholders([*container.get("command", []), *container.get("args", [])], placeholders)
        leftover = [part for part in command if "{{$" in part]
        if leftover:
            raise UnsupportedPipeline(f"task {name}: placeholders not filled in: {leftover}")
        output_types = {key: spec["parameterType"]
                        for key, spec in component.get("outputDefinitions", {}).get("parameters", {}).items()}
        pod_name = _pod_name(run_id, name)
        result_uri = f"{RESULTS_ROOT}/{run_id}/{name}.json"
        env = [
            client.V1EnvVar(name="KFP_POD_NAME", value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="metadata.name"))),
            client.V1EnvVar(name="KFP_POD_UID", value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="metadata.uid"))),
            client.V1EnvVar(name="KFP_MINIO_ENDPOINT", value=self.minio_endpoint),
            client.V1EnvVar(name="KFP_MINIO_ACCESS_KEY", value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=MINIO_SECRET, key="accesskey"))),
            client.V1EnvVar(name="KFP_MINIO_SECRET_KEY", value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name=MINIO_SECRET, key="secretkey"))),
            client.V1EnvVar(name="KFP_RESULT_URI", value=result_uri),
            *[client.V1EnvVar(name=item["name"], value=str(item["value"])) for item in container.get("env", [])],
        ]
        mounts = [client.V1VolumeMount(name="kfp-launcher", mount_path=LAUNCHER_MOUNT, read_only=True)]
        volumes = [client.V1Volume(name="kfp-launcher", config_map=client.V1ConfigMapVolumeSource(
            name=LAUNCHER_CONFIGMAP))]
        settings = platform_executors.get(label, {})
        for entry in settings.get("secretAsEnv", []):
            secret = entry.get("secretName") or entry["secretNameParameter"]["runtimeValue"]["constant"]
            for mapping in entry["keyToEnv"]:
                env.append(client.V1EnvVar(name=mapping["envVar"], value_from=client.V1EnvVarSource(
                    secret_key_ref=client.V1SecretKeySelector(name=secret, key=mapping["secretKey"]))))
        for index, entry in enumerate(settings.get("secretAsVolume", [])):
            secret = entry.get("secretName") or entry["secretNameParameter"]["runtimeValue"]["constant"]
            volumes.append(client.V1Volume(name=f"secret-{index}", secret=client.V1SecretVolumeSource(
                secret_name=secret, optional=entry.get("optional", False))))
            mounts.append(client.V1VolumeMount(name=f"secret-{index}", mount_path=entry["mountPath"]))
        resources = container.get("resources", {})
        limits = {key: str(resources[field]) for key, field in (("cpu", "cpuLimit"), ("memory", "memoryLimit"))
                  if resources.get(field)}
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=pod_name, labels={
                "pipeline/runid": run_id, "pipelines.kubeflow.org/v2_component": "true",
                "dmlops.test/task": re.sub(r"[^A-Za-z0-9-]", "-", name)[:63]}),
            spec=client.V1PodSpec(
                service_account_name=SERVICE_ACCOUNT,
                restart_policy="Never",
                node_selector=settings.get("nodeSelector", {}).get("labels") or None,
                tolerations=[client.V1Toleration(**{_snake(k): v for k, v in toleration.items()})
                             for toleration in settings.get("tolerations", [])] or None,
                containers=[client.V1Container(
                    name="main", image=container["image"], image_pull_policy="Never",
                    command=["python3", f"{LAUNCHER_MOUNT}/launcher.py",
                             "--executor-input", json.dumps(executor_input),
                             "--output-parameter-types", json.dumps(output_types), "--"],
                    args=command, env=env, volume_mounts=mounts,
                    resources=client.V1ResourceRequirements(limits=limits or None),
                )],
                volumes=volumes,
            ),
        )
        self.core.create_namespaced_pod(self.namespace, pod)
        return TaskResult(name, pod_name, container["image"], created=time.monotonic(), result_uri=result_uri)

    def _finished(self, result: TaskResult) -> bool:
        pod = self.core.read_namespaced_pod(result.pod, self.namespace)
        statuses = pod.status.container_statuses or []
        if not result.running and statuses and (statuses[0].state.running or statuses[0].state.terminated):
            result.running = time.monotonic()
        phase = pod.status.phase
        if phase == "Failed":
            log = self.core.read_namespaced_pod_log(result.pod, self.namespace, tail_lines=60)
            raise TaskFailed(f"task {result.name} (pod {result.pod}, image {result.image}) failed:\n{log}")
        if phase == "Pending" and statuses and statuses[0].state.waiting and \
                statuses[0].state.waiting.reason in ("ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError"):
            raise TaskFailed(f"task {result.name} (pod {result.pod}) cannot start: "
                             f"{statuses[0].state.waiting.reason}: {statuses[0].state.waiting.message}")
        if phase != "Succeeded":
            if time.monotonic() - result.created > self.task_timeout:
                raise TaskFailed(f"task {result.name} (pod {result.pod}) still {phase} after {self.task_timeout} s")
            return False
        result.finished = time.monotonic()
        bucket, _, key = result.result_uri[len("minio://"):].partition("/")
        recorded = json.loads(self.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        result.parameters = recorded["parameters"]
        result.artifacts = recorded["artifacts"]
        result.launcher = recorded["timings"]
        return True


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def load_pipeline(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A compiled pipeline YAML: its PipelineSpec and its platform spec (None when compiled without one)."""
    import yaml

    documents = [document for document in yaml.safe_load_all(path.read_text()) if document]
    return documents[0], (documents[1] if len(documents) > 1 else None)
