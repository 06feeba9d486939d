"""Start a distributed training run on a backend: worker processes here, or a training job on Kubernetes."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from dmlops.platform.local import LocalRunResult, run_workers
from dmlops.training.config import TrainConfig

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
