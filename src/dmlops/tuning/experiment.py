"""Build Katib ``Experiment`` (kubeflow.org/v1beta1) dicts, and substitute trial parameters as Katib does.

The trial template carries a job custom resource (batch ``Job``, ``PyTorchJob``, ``TFJob`` or ``MPIJob``)
whose primary container runs a command with ``${trialParameters.<name>}`` placeholders. Katib replaces
each placeholder with the value of the parameter (or trial metadata such as ``${trialSpec.Name}``) the
trial parameter references; :func:`substitute_trial_parameters` does the same, so the local tuner runs
exactly the command a Katib trial runs.

Katib's pod webhook runs the primary container as ``sh -c "<command and args joined by spaces>"``,
keeping a container that already runs ``sh -c`` as it is (katib pkg/webhook/v1beta1/pod/utils.go,
wrapWorkerContainer). Unquoted, the shell would drop empty words and split or reinterpret values with
spaces, ``&``, ``?``, quotes or ``$``: :func:`trial_job` therefore runs every trial as ``sh -c`` over its
shell-quoted words (:func:`shell_command`), so the program gets its arguments unchanged, with or without
the webhook.
"""

from __future__ import annotations

import copy
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from dmlops.training.jobs import Placement, batch_job, horovodrun_command, mpi_job, pytorch_job, tf_job
from dmlops.tuning.spec import SpecError, TuningSpec

API_VERSION = "kubeflow.org/v1beta1"
COLLECTOR_KINDS = ("StdOut", "File")
DEFAULT_METRICS_FILE = "/var/log/katib/metrics.log"  # Katib's default fileSystemPath for the File collector
MAX_EXPERIMENT_NAME_LENGTH = 40  # Katib's validator: trial and suggestion names are derived from it
_EXPERIMENT_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_TWO_GROUPS = re.compile(r"\(.*\).*\(.*\)")  # Katib's check that a filter captures a name and a value
TRIAL_METADATA = {
    "${trialSpec.Name}": "name",
    "${trialSpec.Namespace}": "namespace",
    "${trialSpec.Kind}": "kind",
    "${trialSpec.APIVersion}": "apiVersion",
}
_PLACEHOLDER = re.compile(r"\$\{trialParameters\.([^}]+)\}")

_JOB_SUCCESS = 'status.conditions.#(type=="Complete")#|#(status=="True")#'
_KUBEFLOW_SUCCESS = 'status.conditions.#(type=="Succeeded")#|#(status=="True")#'
_FAILED = 'status.conditions.#(type=="Failed")#|#(status=="True")#'


@dataclass(frozen=True)
class TrialKind:
    """How Katib tells a trial of this job kind finished, and which pod carries its metrics."""

    api_version: str
    kind: str
    success_condition: str
    failure_condition: str
    primary_pod_labels: dict[str, str] = field(default_factory=dict)


TRIAL_KINDS = {
    "Job": TrialKind("batch/v1", "Job", _JOB_SUCCESS, _FAILED),
    "PyTorchJob": TrialKind(
        "kubeflow.org/v1", "PyTorchJob", _KUBEFLOW_SUCCESS, _FAILED, {"training.kubeflow.org/job-role": "master"}
    ),
    "TFJob": TrialKind("kubeflow.org/v1", "TFJob", _KUBEFLOW_SUCCESS, _FAILED, {"training.kubeflow.org/job-role": "master"}),
    "MPIJob": TrialKind(
        "kubeflow.org/v2beta1", "MPIJob", _KUBEFLOW_SUCCESS, _FAILED, {"training.kubeflow.org/job-role": "launcher"}
    ),
}


@dataclass(frozen=True)
class MetricsCollector:
    """Katib's metrics collector: ``StdOut`` reads the primary container's log, ``File`` reads
    ``path`` (``TEXT`` lines or ``JSON`` objects). ``metrics_format`` overrides the ``name=value`` filter:
    regular expressions with two groups, the metric's name and its value (TEXT only, as Katib's
    validator requires: validator.go, validateMetricsCollector)."""

    kind: str = "StdOut"
    path: str = DEFAULT_METRICS_FILE
    file_format: str = "TEXT"
    metrics_format: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in COLLECTOR_KINDS:
            raise SpecError(f"metrics collector kind {self.kind!r} is not supported; use one of {', '.join(COLLECTOR_KINDS)}")
        if self.file_format not in ("TEXT", "JSON"):
            raise SpecError(f"metrics file format {self.file_format!r} is unknown; use TEXT or JSON")
        if self.kind == "File" and not self.path.startswith("/"):
            raise SpecError(f"metrics file path {self.path!r} must be absolute (a path inside the trial container)")
        if self.kind == "File" and self.file_format == "JSON" and self.metrics_format:
            raise SpecError(
                "spec.metricsCollectorSpec.source.filter must be empty when fileSystemPath.format is JSON "
                "(each JSON line names its metrics); drop the filter or use format TEXT"
            )
        for pattern in self.metrics_format:
            try:
                re.compile(pattern)
            except re.error as error:
                raise SpecError(f"spec.metricsCollectorSpec.source.filter.metricsFormat {pattern!r}: {error}") from None
            if not _TWO_GROUPS.search(pattern):
                raise SpecError(
                    f"spec.metricsCollectorSpec.source.filter.metricsFormat {pattern!r} needs two groups, the "
                    r"metric's name and its value, e.g. '([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)'"
                )

    def to_katib(self) -> dict[str, Any]:
        collector: dict[str, Any] = {"collector": {"kind": self.kind}}
        source: dict[str, Any] = {}
        if self.kind == "File":
            source["fileSystemPath"] = {"path": self.path, "kind": "File", "format": self.file_format}
        if self.metrics_format:
            source["filter"] = {"metricsFormat": list(self.metrics_format)}
        if source:
            collector["source"] = source
        return collector

    @classmethod
    def from_katib(cls, spec: dict[str, Any] | None) -> MetricsCollector:
        spec = spec or {}
        source = spec.get("source") or {}
        path = source.get("fileSystemPath") or {}
        return cls(
            kind=(spec.get("collector") or {}).get("kind", "StdOut"),
            path=path.get("path", DEFAULT_METRICS_FILE),
            file_format=path.get("format", "TEXT"),
            metrics_format=tuple((source.get("filter") or {}).get("metricsFormat") or ()),
        )


@dataclass(frozen=True)
class TrialTemplate:
    """A job custom resource with ``${trialParameters.<name>}`` placeholders, the container that runs the
    training command, and what each trial parameter refers to (a spec parameter or trial metadata)."""

    trial_spec: dict[str, Any]
    primary_container: str
    trial_parameters: dict[str, str]

    @property
    def kind(self) -> TrialKind:
        kind = self.trial_spec.get("kind", "")
        if kind not in TRIAL_KINDS or TRIAL_KINDS[kind].api_version != self.trial_spec.get("apiVersion"):
            known = ", ".join(f"{k.kind} ({k.api_version})" for k in TRIAL_KINDS.values())
            raise SpecError(
                f"trial spec kind {kind!r} ({self.trial_spec.get('apiVersion')}) is not a supported trial kind; use {known}"
            )
        return TRIAL_KINDS[kind]


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Every container of every pod template in a Job or Kubeflow training job dict."""
    spec = resource.get("spec") or {}
    templates = []
    if "template" in spec:
        templates.append(spec["template"])
    for key in ("pytorchReplicaSpecs", "tfReplicaSpecs", "mpiReplicaSpecs"):
        templates += [replica.get("template") or {} for replica in (spec.get(key) or {}).values()]
    return [container for template in templates for container in (template.get("spec") or {}).get("containers") or []]


def primary_container(experiment: dict[str, Any]) -> dict[str, Any]:
    """The trial template's primary container (by ``primaryContainerName``)."""
    template = experiment["spec"]["trialTemplate"]
    name = template.get("primaryContainerName", "")
    for container in containers(template["trialSpec"]):
        if container.get("name") == name:
            return container
    raise SpecError(f"trialTemplate.primaryContainerName {name!r} names no container of the trial spec")


def build_experiment(
    spec: TuningSpec,
    name: str,
    namespace: str,
    template: TrialTemplate,
    *,
    collector: MetricsCollector = MetricsCollector(),
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Katib Experiment running ``template`` over ``spec``'s search space."""
    if len(name) > MAX_EXPERIMENT_NAME_LENGTH or not _EXPERIMENT_NAME.match(name):
        raise SpecError(
            f"metadata.name {name!r}: Katib takes lower-case letters, digits and '-', starting with a letter and "
            f"ending with a letter or digit, at most {MAX_EXPERIMENT_NAME_LENGTH} characters; build it with "
            "dmlops.platform.resource_name (40 by default)"
        )
    kind = template.kind
    names = [container.get("name") for container in containers(template.trial_spec)]
    if template.primary_container not in names:
        raise SpecError(f"primary container {template.primary_container!r} is not in the trial spec; containers: {names}")
    parameter_names = {parameter.name for parameter in spec.parameters}
    references = list(template.trial_parameters.values())
    repeated = sorted({reference for reference in references if references.count(reference) > 1})
    if repeated:
        raise SpecError(f"spec.trialTemplate.trialParameters: references {repeated} are used twice; Katib takes each once")
    for trial_parameter, reference in template.trial_parameters.items():
        if "{" in trial_parameter or "}" in trial_parameter:
            raise SpecError(f"spec.trialTemplate.trialParameters: name {trial_parameter!r} must not contain '{{' or '}}'")
        if reference not in parameter_names and reference not in TRIAL_METADATA:
            raise SpecError(
                f"trial parameter {trial_parameter!r} references {reference!r}, which is neither a spec parameter "
                f"{sorted(parameter_names)} nor trial metadata {sorted(TRIAL_METADATA)}"
            )
    used = set(_PLACEHOLDER.findall(str(template.trial_spec)))
    undefined = sorted(used - set(template.trial_parameters))
    if undefined:
        raise SpecError(f"the trial spec uses ${{trialParameters.X}} placeholders with no trial parameter: {undefined}")
    unused = sorted(set(template.trial_parameters) - used)
    if unused:
        raise SpecError(f"trial parameters {unused} appear nowhere in the trial spec; use or drop them")
    untuned = sorted(parameter_names - set(template.trial_parameters.values()))
    if untuned:
        raise SpecError(f"spec parameters {untuned} reach no trial: reference them from a trial parameter")
    for parameter in spec.parameters:
        quoted = [value for value in parameter.values if "'" in str(value)]
        if quoted:  # the value would end the quoted word it replaces in the trial's sh -c command
            raise SpecError(
                f"parameter {parameter.name!r}: feasibleSpace.list value {quoted[0]!r} has a single quote, which "
                "the trial's shell command cannot carry (Katib puts values into it as they are); drop the quote"
            )
    trial_spec = copy.deepcopy(template.trial_spec)
    metadata = trial_spec.get("metadata") or {}
    for key in ("name", "namespace"):  # Katib names each trial's job itself, in the Experiment's namespace
        metadata.pop(key, None)
    if not metadata:
        trial_spec.pop("metadata", None)
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace, **({"labels": dict(labels)} if labels else {})},
        "spec": {
            **spec.to_katib(),
            "metricsCollectorSpec": collector.to_katib(),
            "trialTemplate": {
                "primaryContainerName": template.primary_container,
                **({"primaryPodLabels": dict(kind.primary_pod_labels)} if kind.primary_pod_labels else {}),
                "successCondition": kind.success_condition,
                "failureCondition": kind.failure_condition,
                "trialParameters": [
                    {"name": trial_parameter, "reference": reference}
                    for trial_parameter, reference in template.trial_parameters.items()
                ],
                "trialSpec": trial_spec,
            },
        },
    }


def substitute_trial_parameters(
    experiment: dict[str, Any], assignments: dict[str, str], trial_name: str
) -> dict[str, Any]:
    """The trial spec of ``experiment`` for one trial: every ``${trialParameters.X}`` replaced by the
    assignment (or trial metadata) that X references, as Katib's experiment controller does."""
    spec = experiment["spec"]
    trial_spec = spec["trialTemplate"]["trialSpec"]
    metadata = {
        "name": trial_name,
        "namespace": experiment["metadata"].get("namespace", "default"),
        "kind": trial_spec.get("kind", ""),
        "apiVersion": trial_spec.get("apiVersion", ""),
    }
    values = {}
    for entry in spec["trialTemplate"].get("trialParameters") or []:
        reference = entry["reference"]
        if reference in TRIAL_METADATA:
            values[entry["name"]] = metadata[TRIAL_METADATA[reference]]
        elif reference in assignments:
            values[entry["name"]] = str(assignments[reference])
        else:
            raise SpecError(f"trial parameter {entry['name']!r} references {reference!r}, which the trial was not assigned")

    def replace(value: Any) -> Any:
        if isinstance(value, str):
            missing = [name for name in _PLACEHOLDER.findall(value) if name not in values]
            if missing:
                raise SpecError(f"trial spec placeholder ${{trialParameters.{missing[0]}}} has no trial parameter")
            return _PLACEHOLDER.sub(lambda match: values[match.group(1)], value)
        if isinstance(value, dict):
            return {key: replace(item) for key, item in value.items()}
        if isinstance(value, list):
            return [replace(item) for item in value]
        return value

    return replace(trial_spec)


def shell_command(argv: list[str]) -> list[str]:
    """``argv`` as ``["sh", "-c", "<its words, shell-quoted>"]``: the shell gives the program exactly
    ``argv``, also after Katib appends its redirection. A ``${trialParameters.X}`` placeholder is quoted
    like any word, so the value Katib puts in its place reaches the program as one argument."""
    return ["sh", "-c", shlex.join(argv)]


def shell_words(command: list[str]) -> list[str]:
    """The program and arguments a ``sh -c "<quoted words>"`` command runs (``command`` itself otherwise)."""
    if command[:2] == ["sh", "-c"] and len(command) == 3:
        return shlex.split(command[2])
    return list(command)


def flag_arguments(base_args: list[str], trial_parameters: dict[str, str]) -> list[str]:
    """Command-line arguments with each ``--<flag>`` of a trial parameter set to its placeholder.

    The flag of trial parameter ``learning_rate`` is ``--learning-rate``; an existing ``--flag value``
    pair is replaced, a missing one appended.
    """
    args = list(base_args)
    for trial_parameter in trial_parameters:
        flag = "--" + trial_parameter.replace("_", "-")
        placeholder = "${trialParameters." + trial_parameter + "}"
        if flag in args:
            position = args.index(flag)
            if position + 1 >= len(args):
                raise SpecError(f"argument {flag} has no value in {base_args}")
            args[position + 1] = placeholder
        else:
            args += [flag, placeholder]
    return args


def trial_job(
    kind: str,
    image: str,
    command: list[str],
    num_workers: int = 1,
    *,
    cpu: str = "1",
    memory: str = "2Gi",
    gpu: int = 0,
    env: dict[str, Any] | None = None,
    references: dict[str, str] | None = None,
) -> TrialTemplate:
    """A trial template whose job runs ``command`` (with its placeholders) on ``num_workers`` workers,
    built by :mod:`dmlops.training.jobs` as a training step builds it: a batch ``Job`` (one pod), a
    ``PyTorchJob`` (Master + Workers), a ``TFJob`` (Chief + Workers, TF_CONFIG) or an ``MPIJob`` (v2beta1:
    a Launcher that horovodruns ``command`` over the Workers). The containers run it as
    :func:`shell_command`, the form Katib's webhook keeps. A failed trial is not restarted: Katib
    counts it. Trial parameters are found from the ``${trialParameters.X}`` placeholders, each
    referencing the spec parameter X unless ``references`` says otherwise (e.g.
    ``{"trialName": "${trialSpec.Name}"}``)."""
    if kind not in TRIAL_KINDS:
        raise SpecError(f"trial kind {kind!r} is unknown; use one of {', '.join(TRIAL_KINDS)}")
    if num_workers < 1 or (kind == "Job" and num_workers != 1):
        raise SpecError(f"a {kind} trial needs {'exactly 1' if kind == 'Job' else 'at least 1'} worker, got {num_workers}")
    # Katib names each trial's job and puts it in the Experiment's namespace; build_experiment drops these.
    name, namespace = "trial", "default"
    placement = Placement(cpu=cpu, memory=memory, gpu=gpu)
    common: dict[str, Any] = dict(image=image, env=env, backoff_limit=0, restart_policy="Never", placement=placement)
    shell = shell_command(command)
    if kind == "Job":
        job = batch_job(name, namespace, command=shell, **common)
    elif kind == "PyTorchJob":
        job = pytorch_job(name, namespace, command=shell, workers=num_workers, **common)
    elif kind == "TFJob":
        job = tf_job(name, namespace, command=shell, workers=num_workers, **common)
    else:
        job = mpi_job(name, namespace, command=shell_command(horovodrun_command(num_workers, command)),
                      workers=num_workers, api_version=TRIAL_KINDS[kind].api_version, **common)
    job.pop("metadata")
    primary = containers(job)[0]["name"]  # the Job's, Master's, Chief's or Launcher's container
    parameters = {
        placeholder: (references or {}).get(placeholder, placeholder)
        for placeholder in _PLACEHOLDER.findall(" ".join(command))
    }
    return TrialTemplate(trial_spec=job, primary_container=primary, trial_parameters=parameters)
