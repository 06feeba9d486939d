"""Tune the dmlops training worker's hyperparameters: one Experiment, run locally or on Katib.

Each trial runs ``python -m dmlops.training.worker`` with the tuned flags set to
``${trialParameters.<name>}`` and exports its model under ``<trials_uri>/<trial name>``. Trials that run
in pods read the URIs as pods read them and get the environment that reaches the object store
(:mod:`dmlops.platform.storage`; KFP's ``minio://`` artifacts as ``s3://`` with KFP's MinIO Secret), as
the workers of a training step do; a trial given a GPU trains on CUDA.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dmlops.training.config import TrainConfig
from dmlops.training.launch import WORKER_MODULE, check_worker_gpus, cluster_config, worker_env
from dmlops.tuning.experiment import MetricsCollector, build_experiment, flag_arguments, trial_job
from dmlops.tuning.results import TuningResult, apply_policy
from dmlops.tuning.spec import SpecError, TuningSpec

TUNABLE = ("epochs", "batch_size", "learning_rate", "weight_decay", "hidden_units", "embedding_dim", "dropout")
TRIAL_KIND = {"torch-ddp": "PyTorchJob", "tf-multiworker": "TFJob", "horovod-torch": "MPIJob", "horovod-tf": "MPIJob"}
_TRIAL_NAME = {"trialName": "${trialSpec.Name}"}


def worker_experiment(
    search: dict[str, Any],
    config: TrainConfig,
    trials_uri: str,
    *,
    name: str,
    namespace: str,
    num_workers: int = 1,
    image: str = "",
    cpu: str = "1",
    memory: str = "2Gi",
    gpu: int = 0,
    in_pods: bool = True,
) -> dict[str, Any]:
    """The Experiment that tunes the worker: ``config``'s arguments with each searched hyperparameter's
    flag set to its placeholder, each trial exporting to ``<trials_uri>/<trial name>``, on CUDA when
    ``gpu``. ``in_pods`` (Katib) makes every URI one a pod reads and adds the object-store environment
    (:func:`~dmlops.training.launch.cluster_config`, :func:`~dmlops.training.launch.worker_env`); the
    local tuner (``in_pods=False``) reads this machine's paths."""
    check_worker_gpus(name, num_workers, gpu)
    spec = TuningSpec.from_katib(search)
    unknown = sorted({parameter.name for parameter in spec.parameters} - set(TUNABLE))
    if unknown:
        raise SpecError(f"parameters {unknown} are not worker hyperparameters; tune any of {', '.join(TUNABLE)}")
    config = dataclasses.replace(config, export_uri=f"{trials_uri.rstrip('/')}/${{trialParameters.trialName}}",
                                 device="cuda" if gpu else "cpu")
    env = None
    if in_pods:
        env = worker_env(config)  # from the URIs as given: a minio:// one brings KFP's Secret
        config = cluster_config(config)
    args = flag_arguments(config.to_args(), {parameter.name: parameter.name for parameter in spec.parameters})
    kind = "Job" if num_workers == 1 and config.strategy == "torch-ddp" else TRIAL_KIND[config.strategy]
    template = trial_job(kind, image, ["python", "-m", WORKER_MODULE, *args], num_workers,
                         cpu=cpu, memory=memory, gpu=gpu, env=env, references=_TRIAL_NAME)
    return build_experiment(spec, name, namespace, template, collector=MetricsCollector("StdOut"))


def run_search(
    experiment: dict[str, Any],
    backend: str,
    workdir: str | Path,
    *,
    timeout_s: float,
    on_failure: str = "fail",
    on_goal_not_reached: str = "accept",
) -> TuningResult:
    """Run the Experiment on ``backend`` (local Optuna or Katib) and apply the outcome policies."""
    if backend == "local":
        from dmlops.tuning.local import LocalTuner

        result = LocalTuner(experiment, workdir, trial_timeout_s=timeout_s).run()
    elif backend == "kubernetes":
        from dmlops.platform.kubernetes import KubernetesLauncher
        from dmlops.tuning.katib import run_experiment

        result = run_experiment(experiment, KubernetesLauncher(), timeout_s=timeout_s)
    else:
        raise ValueError(f"unknown backend {backend!r}; use 'local' or 'kubernetes'")
    return apply_policy(result, on_failure=on_failure, on_goal_not_reached=on_goal_not_reached)


def chosen_hyperparameters(result: TuningResult, defaults: dict[str, Any]) -> dict[str, Any]:
    """Every tunable hyperparameter: the best trial's value where it was searched, else the default."""
    chosen = {name: defaults[name] for name in TUNABLE}
    for name, value in result.best_parameters.items():
        if name == "hidden_units":
            value = [int(units) for units in str(value).split(",") if units.strip()]
        elif name in ("epochs", "batch_size", "embedding_dim"):
            value = int(value)
        else:
            value = float(value)
        chosen[name] = value
    return chosen
