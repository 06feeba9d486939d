"""Start a distributed training run on a backend: worker processes here, or a training job on Kubernetes.

On Kubernetes the workers run in pods of their own, so they read and write object storage (``gs://``,
``s3://``; a KFP ``minio://`` URI is read as ``s3://`` on the KFP MinIO, :mod:`dmlops.platform.storage`)
rather than the step's local artifact paths. The job is named after the pipeline run and task, so a retried step reattaches to it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from dmlops.platform import storage
from dmlops.platform.backend import resolve_backend
from dmlops.platform.local import LocalRunResult, run_workers
from dmlops.platform.naming import resource_name, run_labels, secret_reference
from dmlops.training.config import TF_STRATEGIES, RunConfig, RunSource
from dmlops.training.export import METADATA_FILE
from dmlops.privacy.encryption import KEYS_SECRET, KEYS_VARIABLE
from dmlops.privacy.signing import SIGNING_KEY, SIGNING_SECRET
from dmlops.training.jobs import (
    Placement, Resource, SecretFile, horovodrun_command, mpi_job, pytorch_job, tf_job, train_job,
)

# How each strategy's workers are started, named after the operator that starts them on a cluster.
LAUNCH_KIND = {
    "torch-ddp": "pytorch",
    "tf-multiworker": "tensorflow",
    "horovod-torch": "mpi",
    "horovod-tf": "mpi",
}
WORKER_MODULE = "dmlops.training.worker"  # the entry point every worker runs (python -m)
# Which API runs a torch-ddp job: Training Operator v1 (PyTorchJob) or Kubeflow Trainer v2 (TrainJob).
JOB_APIS = ("training-operator", "trainer")
TRAINER_RUNTIME = "torch-distributed"
DEFAULT_TIMEOUT_S = 24 * 3600.0
SIGNING_KEY_MOUNT_PATH = "/var/run/secrets/dmlops/model-signing"  # where rank 0 finds the private key
PARQUET_KEYS_MOUNT_PATH = "/var/run/secrets/dmlops/parquet-keys"  # where every rank finds the master keys


@dataclass
class WorkerResources:
    """What each worker pod asks for on a cluster (ignored by the local backend)."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def check_worker_gpus(job_name: str, num_workers: int, gpu: int) -> None:
    """Refuse more than one GPU per worker pod: each pod runs one training process, which uses one GPU."""
    if gpu > 1:
        raise ValueError(
            f"job {job_name}: one training process per pod uses one GPU; for {num_workers} workers with "
            f"{gpu} GPUs each ask for {num_workers * gpu} workers with 1 GPU"
        )


def as_run(config: RunSource) -> RunConfig:
    """The run of ``config`` (a RunConfig as it is, a trainer's settings as the run they make)."""
    return config.run_config()


def restart_policy(strategy: str) -> str:
    """``ExitCode`` (a worker's permanent error, exit code 1-127, is not restarted: see
    :mod:`dmlops.training.worker`), except under horovodrun/mpirun, which exit 1 for every failed
    worker whatever its cause: there ``OnFailure``."""
    return "OnFailure" if LAUNCH_KIND[strategy] == "mpi" else "ExitCode"


def worker_command(config: RunSource) -> list[str]:
    """The command every worker runs."""
    return [sys.executable, "-m", WORKER_MODULE, *as_run(config).to_args()]


def read_export_metadata(export_uri: str) -> dict[str, Any]:
    """The metadata.json of a finished export (its metrics, files and digests)."""
    filesystem, path = storage.filesystem(export_uri)
    return json.loads(filesystem.cat_file(f"{path}/{METADATA_FILE}"))


def download_export(export_uri: str, local_directory: str) -> None:
    """Copy a finished export from object storage into ``local_directory`` (e.g. an output artifact's path)."""
    filesystem, path = storage.filesystem(export_uri)
    os.makedirs(local_directory, exist_ok=True)
    filesystem.get(f"{path.rstrip('/')}/", f"{local_directory.rstrip('/')}/", recursive=True)


def run_training(
    config: RunSource,
    num_workers: int,
    backend: str = "local",
    resources: WorkerResources | None = None,
    max_restarts: int = 1,
    timeout: float | None = None,
    image: str = "",
    namespace: str = "",
    job_name: str = "",
    *,
    run_id: str = "",
    task_name: str = "",
    job_api: str = "training-operator",
) -> dict[str, Any]:
    """Train on ``backend`` ("local", "kubernetes" or "auto") and return the export's metadata.

    ``image``, ``namespace``, ``job_name`` / ``run_id`` + ``task_name`` and ``job_api`` are those of
    :func:`run_kubernetes`; the local backend ignores them."""
    config = as_run(config)
    if resolve_backend(backend) == "local":
        run_local(config, num_workers, max_restarts, timeout)
    else:
        run_kubernetes(config, num_workers, resources or WorkerResources(), image, namespace, job_name,
                       max_restarts, timeout, run_id=run_id, task_name=task_name, job_api=job_api)
    return read_export_metadata(config.export_uri)


def run_local(
    config: RunSource, num_workers: int, max_restarts: int = 1, timeout: float | None = None,
) -> LocalRunResult:
    """Train with ``num_workers`` local processes started as the strategy's operator would start pods
    (the packages to install are installed once, here, before they start)."""
    from dmlops.training.worker import install_packages

    config = as_run(config)
    install_packages(config.packages_to_install)
    return run_workers(LAUNCH_KIND[config.strategy], num_workers, worker_command(config),
                       max_restarts=max_restarts, timeout=timeout, restart_policy=restart_policy(config.strategy))


DATA_URIS = ("train_uri", "eval_uri", "export_uri", "checkpoint_uri")  # the RunConfig fields pods read


def cluster_config(config: RunConfig) -> RunConfig:
    """``config`` with every data URI as pods read it (:func:`dmlops.platform.storage.pod_uri`: minio://
    becomes s3://; a local path is refused, since it exists only in this pod)."""
    return dataclasses.replace(config, **{name: storage.pod_uri(getattr(config, name), name) for name in DATA_URIS})


def worker_env(config: RunConfig) -> dict[str, Any]:
    """Environment of pods that run ``config`` (:func:`dmlops.platform.storage.pod_env`): this pod's
    object-store settings and, for KFP MinIO URIs, the endpoint and the credentials of KFP's Secret."""
    return storage.pod_env(getattr(config, name) for name in DATA_URIS)


def signing_key_file() -> SecretFile | None:
    """The model-signing private key for the pods that export (rank 0): the Secret key this step's
    ``DMLOPS_MODEL_SIGNING_SECRET`` names (``<secret>/<key>``) as a read-only file, its path in
    ``DMLOPS_MODEL_SIGNING_KEY_FILE``; None when no Secret is named."""
    reference = secret_reference(SIGNING_SECRET)
    if reference is None:
        return None
    return SecretFile(reference[0], reference[1], "model-signing-key", SIGNING_KEY_MOUNT_PATH, "signing-key.pem",
                      f"{SIGNING_KEY}_FILE")


def parquet_keys_file() -> SecretFile | None:
    """The Parquet master key file for every pod that trains (each reads encrypted data): the Secret key
    this step's ``DMLOPS_PARQUET_KEYS_SECRET`` names as a read-only file, its path in
    ``DMLOPS_PARQUET_KEYS_FILE``; None when no Secret is named."""
    reference = secret_reference(KEYS_SECRET)
    if reference is None:
        return None
    return SecretFile(reference[0], reference[1], "parquet-keys", PARQUET_KEYS_MOUNT_PATH, "keys.json", KEYS_VARIABLE)


def training_job(
    config: RunSource,
    num_workers: int,
    resources: WorkerResources,
    image: str,
    namespace: str,
    job_name: str,
    *,
    labels: dict[str, str] | None = None,
    max_restarts: int = 1,
    job_api: str = "training-operator",
) -> Resource:
    """The custom resource that runs ``config``'s workers: a PyTorchJob (``job_api`` "training-operator")
    or a TrainJob on the ``torch-distributed`` runtime ("trainer") for torch-ddp, an MPIJob (v2beta1)
    whose Launcher horovodruns the workers for horovod-*, a TFJob for tf-multiworker. A failed pod is
    restarted up to ``max_restarts`` times (training operator jobs), resuming from its checkpoint; a
    permanent error (exit codes 1-127) is not (``restartPolicy: ExitCode``). A TrainJob has no field for
    either (no ``podFailurePolicy``, ``backoffLimit`` or ``restartPolicy`` in its spec or runtime patches):
    its training runtime decides, and ``torch-distributed`` restarts a failed pod in place (JobSet's
    OnFailure) up to the Job's default backoffLimit of 6, whatever the exit code. With
    ``DMLOPS_MODEL_SIGNING_SECRET`` set here, the pods of rank 0 get the signing key (:func:`signing_key_file`)
    and sign the export; with ``DMLOPS_PARQUET_KEYS_SECRET``, every pod gets the Parquet master keys
    (:func:`parquet_keys_file`) to read encrypted data."""
    config = as_run(config)
    if job_api not in JOB_APIS:
        raise ValueError(f"unknown job_api {job_api!r}; use 'training-operator' (PyTorchJob, TFJob, MPIJob) "
                         "or 'trainer' (Kubeflow Trainer v2 TrainJob)")
    if not image:
        raise ValueError(
            f"job {job_name}: no worker image; pass the image the workers run in (dmlops.images."
            f"{'TF_IMAGE' if config.strategy in TF_STRATEGIES else 'TORCH_IMAGE'} for {config.strategy})"
        )
    if max_restarts < 0:
        raise ValueError(f"job {job_name}: max_restarts must be 0 or more; got {max_restarts}")
    check_worker_gpus(job_name, num_workers, resources.gpu)
    cluster = cluster_config(config)
    placement = Placement(cpu=resources.cpu, memory=resources.memory, gpu=resources.gpu,
                          node_selector=resources.node_selector, tolerations=resources.tolerations,
                          labels=labels or {})
    worker = ["python", "-m", WORKER_MODULE]
    signing_key, parquet_keys = signing_key_file(), parquet_keys_file()
    common: dict[str, Any] = dict(image=image, env=worker_env(config), workers=num_workers, placement=placement,
                                  leader_files=[signing_key] if signing_key else [],
                                  worker_files=[parquet_keys] if parquet_keys else [])
    restarts: dict[str, Any] = dict(restart_policy=restart_policy(config.strategy) if max_restarts else "Never",
                                    backoff_limit=max_restarts)
    kind = LAUNCH_KIND[config.strategy]
    if job_api == "trainer":
        if config.strategy != "torch-ddp":
            raise ValueError(f"job_api 'trainer' runs torch-ddp only; {config.strategy} uses 'training-operator'")
        return train_job(job_name, namespace, command=["torchrun", "--module", WORKER_MODULE],
                         args=cluster.to_args(), runtime=TRAINER_RUNTIME, procs_per_node=1, **common)
    if kind == "pytorch":
        return pytorch_job(job_name, namespace, command=worker, args=cluster.to_args(), **common, **restarts)
    if kind == "tensorflow":
        return tf_job(job_name, namespace, command=worker, args=cluster.to_args(), **common, **restarts)
    return mpi_job(job_name, namespace, command=horovodrun_command(num_workers, [*worker, *cluster.to_args()]),
                   **common, **restarts)


def run_kubernetes(
    config: RunSource,
    num_workers: int,
    resources: WorkerResources,
    image: str,
    namespace: str,
    job_name: str,
    max_restarts: int = 1,
    timeout: float | None = None,
    *,
    run_id: str = "",
    task_name: str = "",
    job_api: str = "training-operator",
) -> None:
    """Train as a training job on the cluster (:func:`training_job`) through the platform launcher:
    create it, or reattach to the one an earlier attempt of the same run and task created, stream the
    primary worker's log and wait until it finishes (:class:`~dmlops.platform.JobFailed` when it fails;
    deleted on timeout or SIGTERM).

    The job is named ``job_name``, else ``resource_name("train", run_id, task_name)``, and labelled with
    ``run_labels(run_id, task_name)``; ``namespace`` defaults to this pod's (or the kubeconfig's)."""
    from dmlops.platform.kubernetes import KubernetesLauncher, current_namespace

    if not job_name and not run_id:
        raise ValueError("run_kubernetes needs run_id and task_name (the pipeline run id and task name, "
                         "dsl.PIPELINE_JOB_ID_PLACEHOLDER and dsl.PIPELINE_TASK_NAME_PLACEHOLDER) or a job_name")
    job = training_job(
        config, num_workers, resources, image, namespace or current_namespace(),
        job_name or resource_name("train", run_id, task_name),
        labels=run_labels(run_id, task_name) if run_id else None, max_restarts=max_restarts, job_api=job_api,
    )
    KubernetesLauncher().run(job, timeout_s=timeout or DEFAULT_TIMEOUT_S)
