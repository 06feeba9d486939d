"""Start a distributed training run on a backend: worker processes here, or a training job on Kubernetes."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import fsspec

from dmlops.platform.backend import resolve_backend
from dmlops.platform.local import LocalRunResult, run_workers
from dmlops.training.config import TrainConfig
from dmlops.training.export import METADATA_FILE

# How each strategy's workers are started, named after the operator that starts them on a cluster.
LAUNCH_KIND = {
    "torch-ddp": "pytorch",
    "tf-multiworker": "tensorflow",
    "horovod-torch": "mpi",
    "horovod-tf": "mpi",
}


@dataclass
class WorkerResources:
    """What each worker pod asks for on a cluster (ignored by the local backend)."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpu: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


def worker_command(config: TrainConfig) -> list[str]:
    """The command every worker runs."""
    return [sys.executable, "-m", "dmlops.training.worker", *config.to_args()]


def read_export_metadata(export_uri: str) -> dict[str, Any]:
    """The metadata.json of a finished export (its metrics, files and digests)."""
    filesystem, path = fsspec.core.url_to_fs(export_uri)
    return json.loads(filesystem.cat_file(f"{path}/{METADATA_FILE}"))


def run_training(
    config: TrainConfig,
    num_workers: int,
    backend: str = "local",
    resources: WorkerResources | None = None,
    max_restarts: int = 1,
    timeout: float | None = None,
    image: str = "",
    namespace: str = "",
    job_name: str = "",
) -> dict[str, Any]:
    """Train on ``backend`` ("local", "kubernetes" or "auto") and return the export's metadata."""
    if resolve_backend(backend) == "local":
        run_local(config, num_workers, max_restarts, timeout)
    else:
        run_kubernetes(config, num_workers, resources or WorkerResources(), image, namespace, job_name,
                       max_restarts, timeout)
    return read_export_metadata(config.export_uri)


def run_local(config: TrainConfig, num_workers: int, max_restarts: int = 1, timeout: float | None = None) -> LocalRunResult:
    """Train with ``num_workers`` local processes started as the strategy's operator would start pods."""
    return run_workers(LAUNCH_KIND[config.strategy], num_workers, worker_command(config),
                       max_restarts=max_restarts, timeout=timeout)


def run_kubernetes(
    config: TrainConfig,
    num_workers: int,
    resources: WorkerResources,
    image: str,
    namespace: str,
    job_name: str,
    max_restarts: int = 1,
    timeout: float | None = None,
) -> None:
    """Train as a training job on the cluster (PyTorchJob / TFJob / MPIJob / TrainJob running
    :func:`worker_command`), waiting for it to finish."""
    raise NotImplementedError(
        "the kubernetes backend for training is not available yet: use backend='local'"
    )
