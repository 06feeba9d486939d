"""Training custom resources as plain dicts, for the platform launcher to create.

- :func:`train_job`: Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1) on a training runtime
  such as ``torch-distributed``; placement goes through ``runtimePatches``.
- :func:`pytorch_job`: Training Operator v1 ``PyTorchJob`` with a Master and ``workers - 1`` Workers.
- :func:`tf_job`: Training Operator v1 ``TFJob`` with a Chief and ``workers - 1`` Workers.
- :func:`mpi_job`: ``MPIJob`` with one Launcher and ``workers`` Workers, for mpi-operator
  (kubeflow.org/v2beta1) or the Training Operator v1 (kubeflow.org/v1). The Workers run no command: the
  dmlops horovod images start sshd on port :data:`SSH_PORT` as user ``dmlops``, whose key pair the
  operator mounts at :data:`SSH_AUTH_MOUNT_PATH`; :func:`horovodrun_command` is the Launcher's command.
- :func:`batch_job`: a batch/v1 ``Job`` of one pod (a single-worker Katib trial).

``workers`` is always the number of worker pods that train (the world size in nodes). Every builder takes
a :class:`Placement`: per-worker ``cpu``/``memory``/``gpu`` (``nvidia.com/gpu``; requests equal limits),
``node_selector``, ``tolerations``, ``service_account``, ``labels`` (on the resource and its pods) and
pod ``annotations`` (by default no Istio sidecar, which would keep a finished pod running:
:mod:`dmlops.platform.mesh`).
``env`` values are strings, or a mapping such as ``{"secretKeyRef": {"name": ..., "key": ...}}`` that
becomes the variable's ``valueFrom``. ``leader_files`` are keys of Secrets mounted read-only as files
(:class:`SecretFile`) in the pods of rank 0, the one that exports the model: the PyTorchJob's Master, the
TFJob's Chief, every MPIJob Worker (horovodrun places rank 0 on the hostfile's first Worker; the Workers
share one template) with the file's variable also on the Launcher, whose environment horovodrun forwards
to the ranks, and every TrainJob node (a runtime patch applies to all nodes of a replicated job).
``worker_files`` (e.g. the Parquet master keys every rank reads data with) go to every pod that trains,
the same way. Commands and arguments reach the process unchanged: the kubelet's
``$(VAR)`` expansion is escaped (:func:`kubelet_literal`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dmlops.platform.mesh import pod_annotations
from dmlops.platform.naming import is_dns1035_label

GPU_RESOURCE = "nvidia.com/gpu"
SSH_PORT = 2222  # the port sshd listens on in the horovod images (containers/ssh/sshd_config)
SSH_AUTH_MOUNT_PATH = "/home/dmlops/.ssh"  # where sshd and ssh of user dmlops find the MPIJob's key pair
MPI_HOSTFILE = "/etc/mpi/hostfile"  # written into the Launcher by mpi-operator: "<worker host> slots=N" lines
RUNTIME_PATCH_MANAGER = "dmlops.io/training-jobs"
Resource = dict[str, Any]


@dataclass(frozen=True)
class Placement:
    """Where and with what each worker pod runs."""

    cpu: str | int | float | None = None
    memory: str | None = None
    gpu: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    service_account: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=pod_annotations)

    def resources(self) -> Resource:
        """Container resources: requests equal to limits (GPUs are limits-only in meaning)."""
        amounts: dict[str, str] = {}
        if self.cpu is not None:
            amounts["cpu"] = str(self.cpu)
        if self.memory is not None:
            amounts["memory"] = str(self.memory)
        if self.gpu:
            amounts[GPU_RESOURCE] = str(self.gpu)
        return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}

    def pod_metadata(self) -> Resource:
        """The pods' labels and annotations, where set."""
        metadata: Resource = {}
        if self.labels:
            metadata["labels"] = dict(self.labels)
        if self.annotations:
            metadata["annotations"] = dict(self.annotations)
        return metadata

    def launcher(self, cpu: str | None = None, memory: str | None = None) -> Placement:
        """The placement of an MPI launcher (it runs horovodrun/mpirun, not training): ``cpu`` and
        ``memory``, no GPU and, when the workers have GPUs, not their node selector, which picks GPU
        nodes (mpi-operator examples/v2beta1 give the Launcher neither). Tolerations, service account,
        labels and annotations stay: tolerations let it run on tainted nodes without asking for them."""
        return Placement(
            cpu=cpu, memory=memory, node_selector={} if self.gpu else self.node_selector,
            tolerations=self.tolerations, service_account=self.service_account, labels=self.labels,
            annotations=self.annotations,
        )

    def pod_spec_fields(self) -> Resource:
        """nodeSelector, tolerations and serviceAccountName, where set."""
        fields: Resource = {}
        if self.node_selector:
            fields["nodeSelector"] = dict(self.node_selector)
        if self.tolerations:
            fields["tolerations"] = [dict(toleration) for toleration in self.tolerations]
        if self.service_account:
            fields["serviceAccountName"] = self.service_account
        return fields


@dataclass(frozen=True)
class SecretFile:
    """One key of a Kubernetes Secret as a read-only file ``mount_path``/``file_name`` in a pod (volume
    ``volume``), its path in the variable ``env``; the value itself never enters the resource."""

    secret: str
    key: str
    volume: str
    mount_path: str
    file_name: str
    env: str

    @property
    def path(self) -> str:
        return f"{self.mount_path}/{self.file_name}"

    def pod_volume(self) -> Resource:
        return {"name": self.volume, "secret": {"secretName": self.secret,
                                                "items": [{"key": self.key, "path": self.file_name}]}}

    def volume_mount(self) -> Resource:
        return {"name": self.volume, "mountPath": self.mount_path, "readOnly": True}


def _mount_files(template: Resource, files: Sequence[SecretFile]) -> Resource:
    """A copy of the pod ``template`` whose first container has ``files`` mounted and their variables set."""
    mounted = copy.deepcopy(template)
    container = mounted["spec"]["containers"][0]
    mounted["spec"].setdefault("volumes", []).extend(file.pod_volume() for file in files)
    container.setdefault("volumeMounts", []).extend(file.volume_mount() for file in files)
    container.setdefault("env", []).extend({"name": file.env, "value": file.path} for file in files)
    return mounted


def kubelet_literal(text: str) -> str:
    """``text`` as a container command or argument the kubelet passes on unchanged. The kubelet replaces
    ``$(VAR)`` with the container's variable and ``$$`` with ``$`` (kubernetes
    third_party/forked/golang/expansion/expand.go), so a ``$`` before ``$`` or ``(`` is doubled."""
    return re.sub(r"\$(?=[$(])", "$$", text)


def kubelet_expand(text: str, env: Mapping[str, str]) -> str:
    """What the kubelet makes of a container command or argument: ``$$`` is ``$``, ``$(VAR)`` is the
    value of the container's variable VAR (kept as written when undefined), any other ``$`` stays."""

    def replace(match: re.Match) -> str:
        name = match.group(1)
        return "$" if name is None else env.get(name, match.group(0))

    return re.sub(r"\$(?:\$|\(([^)]*)\))", replace, text)


def _check(name: str, namespace: str, image: str, workers: int, placement: Placement) -> None:
    if not is_dns1035_label(name):
        raise ValueError(
            f"job name {name!r} is not a DNS-1035 label (lower-case letters, digits and '-', starting with "
            "a letter, at most 63 characters); build it with dmlops.platform.resource_name"
        )
    if not namespace:
        raise ValueError(f"job {name}: namespace is empty")
    if not image:
        raise ValueError(f"job {name}: image is empty")
    if workers < 1:
        raise ValueError(f"job {name}: workers must be at least 1; got {workers}")
    if placement.gpu < 0:
        raise ValueError(f"job {name}: gpu must be 0 or more; got {placement.gpu}")
    for toleration in placement.tolerations:
        if not isinstance(toleration, Mapping):
            raise ValueError(
                f"job {name}: each toleration must be a mapping like "
                f"{{'key': ..., 'operator': ...}}; got {toleration!r}"
            )


def _env(env: Mapping[str, Any] | None) -> list[Resource]:
    return [
        {"name": key, "valueFrom": dict(value)} if isinstance(value, Mapping) else {"name": key, "value": str(value)}
        for key, value in (env or {}).items()
    ]


def _container(
    name: str,
    image: str,
    command: Sequence[str],
    args: Sequence[str],
    env: Mapping[str, Any] | None,
    resources: Resource,
) -> Resource:
    container: Resource = {"name": name, "image": image}
    if command:
        container["command"] = [kubelet_literal(part) for part in command]
    if args:
        container["args"] = [kubelet_literal(part) for part in args]
    if env:
        container["env"] = _env(env)
    if resources:
        container["resources"] = resources
    return container


def _pod_template(container: Resource, placement: Placement) -> Resource:
    template: Resource = {"spec": {"containers": [container], **placement.pod_spec_fields()}}
    if placement.pod_metadata():
        template["metadata"] = placement.pod_metadata()
    return template


def _replica(replicas: int, template: Resource, restart_policy: str | None) -> Resource:
    replica: Resource = {"replicas": replicas}
    if restart_policy:
        replica["restartPolicy"] = restart_policy
    replica["template"] = copy.deepcopy(template)  # replicas must not share nested dicts
    return replica


def _metadata(name: str, namespace: str, placement: Placement) -> Resource:
    metadata: Resource = {"name": name, "namespace": namespace}
    if placement.labels:
        metadata["labels"] = dict(placement.labels)
    return metadata


def train_job(
    name: str,
    namespace: str,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    workers: int = 1,
    runtime: str = "torch-distributed",
    runtime_kind: str = "ClusterTrainingRuntime",
    procs_per_node: int | None = None,
    patched_jobs: Sequence[str] = ("node",),
    placement: Placement | None = None,
    leader_files: Sequence[SecretFile] = (),
    worker_files: Sequence[SecretFile] = (),
) -> Resource:
    """A Trainer v2 TrainJob on ``runtime``; node selector, tolerations, service account, pod labels and
    annotations are runtime patches of the replicated jobs in ``patched_jobs`` (``node``, plus ``launcher``
    for MPI, placed as :meth:`Placement.launcher`), and so are ``leader_files`` and ``worker_files``, on
    every ``node`` pod."""
    where = placement or Placement()
    files = [*leader_files, *worker_files]
    _check(name, namespace, image, workers, where)
    trainer: Resource = {"image": image, "command": [kubelet_literal(part) for part in command], "numNodes": workers}
    if args:
        trainer["args"] = [kubelet_literal(part) for part in args]
    if env or files:
        trainer["env"] = _env(env) + [{"name": file.env, "value": file.path} for file in files]
    if where.resources():
        trainer["resourcesPerNode"] = where.resources()
    if procs_per_node is not None:
        trainer["numProcPerNode"] = procs_per_node
    spec: Resource = {
        "runtimeRef": {"name": runtime, "apiGroup": "trainer.kubeflow.org", "kind": runtime_kind},
        "trainer": trainer,
    }
    jobs: list[Resource] = []
    for job in patched_jobs:
        pod = where.launcher() if job == "launcher" else where
        pod_patch: Resource = {}
        if pod.pod_metadata():
            pod_patch["metadata"] = pod.pod_metadata()
        if pod.pod_spec_fields():
            pod_patch["spec"] = pod.pod_spec_fields()
        if files and job == "node":  # the trainer's container in torch-distributed is "node"
            pod_patch.setdefault("spec", {})["volumes"] = [file.pod_volume() for file in files]
            pod_patch["spec"]["containers"] = [{"name": "node",
                                                "volumeMounts": [file.volume_mount() for file in files]}]
        if pod_patch:
            jobs.append({"name": job, "template": {"spec": {"template": pod_patch}}})
    if jobs:
        spec["runtimePatches"] = [
            {"manager": RUNTIME_PATCH_MANAGER, "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": jobs}}}}
        ]
    return {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": _metadata(name, namespace, where),
        "spec": spec,
    }


def _run_policy(backoff_limit: int) -> Resource:
    return {"backoffLimit": backoff_limit}


def _leader_and_workers(
    leader: str, container: str, image: str, command: Sequence[str], args: Sequence[str],
    env: Mapping[str, Any] | None, workers: int, restart_policy: str, where: Placement,
    leader_files: Sequence[SecretFile] = (), worker_files: Sequence[SecretFile] = (),
) -> Resource:
    """Replica specs of a Training Operator v1 job: one ``leader`` replica (rank 0, with ``leader_files``)
    and ``workers - 1`` Workers, every pod running ``command`` in the container the operator expects
    (``container``) with ``worker_files``."""
    template = _pod_template(_container(container, image, command, args, env, where.resources()), where)
    template = _mount_files(template, worker_files) if worker_files else template
    replicas = {leader: _replica(1, _mount_files(template, leader_files) if leader_files else template,
                                 restart_policy)}
    if workers > 1:
        replicas["Worker"] = _replica(workers - 1, template, restart_policy)
    return replicas


def pytorch_job(
    name: str,
    namespace: str,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    workers: int = 1,
    restart_policy: str = "OnFailure",
    backoff_limit: int = 3,
    placement: Placement | None = None,
    leader_files: Sequence[SecretFile] = (),
    worker_files: Sequence[SecretFile] = (),
) -> Resource:
    """A PyTorchJob: rank 0 is the Master, the other ``workers - 1`` are Workers (container ``pytorch``)."""
    where = placement or Placement()
    _check(name, namespace, image, workers, where)
    replicas = _leader_and_workers("Master", "pytorch", image, command, args, env, workers, restart_policy, where,
                                   leader_files, worker_files)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": _metadata(name, namespace, where),
        "spec": {"pytorchReplicaSpecs": replicas, "runPolicy": _run_policy(backoff_limit)},
    }


def tf_job(
    name: str,
    namespace: str,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    workers: int = 1,
    restart_policy: str = "OnFailure",
    backoff_limit: int = 3,
    placement: Placement | None = None,
    leader_files: Sequence[SecretFile] = (),
    worker_files: Sequence[SecretFile] = (),
) -> Resource:
    """A TFJob: the Chief (a training worker too, in MultiWorkerMirroredStrategy) plus ``workers - 1``
    Workers (container ``tensorflow``); the operator writes TF_CONFIG into each pod."""
    where = placement or Placement()
    _check(name, namespace, image, workers, where)
    replicas = _leader_and_workers("Chief", "tensorflow", image, command, args, env, workers, restart_policy, where,
                                   leader_files, worker_files)
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "TFJob",
        "metadata": _metadata(name, namespace, where),
        "spec": {"tfReplicaSpecs": replicas, "runPolicy": _run_policy(backoff_limit)},
    }


def mpi_job(
    name: str,
    namespace: str,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    workers: int = 1,
    slots_per_worker: int = 1,
    launcher_cpu: str = "1",
    launcher_memory: str = "1Gi",
    api_version: str = "kubeflow.org/v2beta1",
    restart_policy: str = "OnFailure",
    backoff_limit: int = 3,
    ssh_auth_mount_path: str = SSH_AUTH_MOUNT_PATH,
    placement: Placement | None = None,
    leader_files: Sequence[SecretFile] = (),
    worker_files: Sequence[SecretFile] = (),
) -> Resource:
    """An MPIJob: the Launcher runs ``command`` (e.g. :func:`horovodrun_command` with ``-np workers *
    slots_per_worker``) with ``launcher_cpu``/``launcher_memory`` and no GPU node (:meth:`Placement.launcher`);
    the ``workers`` Worker pods get the placement and run no command, so the image's own (sshd) starts.
    With mpi-operator (v2beta1) the key pair is mounted at ``ssh_auth_mount_path`` and the Launcher is
    created once every Worker is ready."""
    where = placement or Placement()
    _check(name, namespace, image, workers, where)
    if api_version not in ("kubeflow.org/v2beta1", "kubeflow.org/v1"):
        raise ValueError(
            f"job {name}: api_version must be kubeflow.org/v2beta1 (mpi-operator) or kubeflow.org/v1; "
            f"got {api_version!r}"
        )
    if slots_per_worker < 1:
        raise ValueError(f"job {name}: slots_per_worker must be at least 1; got {slots_per_worker}")
    launcher_placement = where.launcher(launcher_cpu, launcher_memory)
    files = [*leader_files, *worker_files]  # every rank runs on a Worker, with the Launcher's environment
    launcher_env = {**(env or {}), **{file.env: file.path for file in files}}
    launcher = _container("mpi", image, command, args, launcher_env, launcher_placement.resources())
    worker = _pod_template(_container("mpi", image, (), (), env, where.resources()), where)
    replicas = {
        "Launcher": _replica(1, _pod_template(launcher, launcher_placement), restart_policy),
        "Worker": _replica(workers, _mount_files(worker, files) if files else worker, None),
    }
    spec: Resource = {
        "slotsPerWorker": slots_per_worker,
        "runPolicy": _run_policy(backoff_limit),
        "mpiReplicaSpecs": replicas,
    }
    if api_version == "kubeflow.org/v2beta1":
        spec["mpiImplementation"] = "OpenMPI"
        spec["sshAuthMountPath"] = ssh_auth_mount_path
        spec["launcherCreationPolicy"] = "WaitForWorkersReady"
    return {"apiVersion": api_version, "kind": "MPIJob", "metadata": _metadata(name, namespace, where), "spec": spec}


def horovodrun_command(workers: int, command: Sequence[str], slots_per_worker: int = 1) -> list[str]:
    """The MPIJob Launcher's command: ``horovodrun --gloo`` over the hosts of mpi-operator's hostfile,
    reaching the Workers' sshd on :data:`SSH_PORT`."""
    return [
        "horovodrun", "--gloo", "-np", str(workers * slots_per_worker), "--hostfile", MPI_HOSTFILE,
        "--ssh-port", str(SSH_PORT), *command,
    ]


def batch_job(
    name: str,
    namespace: str,
    *,
    image: str,
    command: Sequence[str],
    args: Sequence[str] = (),
    env: Mapping[str, Any] | None = None,
    restart_policy: str = "Never",
    backoff_limit: int = 0,
    placement: Placement | None = None,
) -> Resource:
    """A batch/v1 Job of one pod (container ``training``)."""
    where = placement or Placement()
    _check(name, namespace, image, 1, where)
    template = _pod_template(_container("training", image, command, args, env, where.resources()), where)
    template["spec"]["restartPolicy"] = restart_policy
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(name, namespace, where),
        "spec": {"backoffLimit": backoff_limit, "template": template},
    }
