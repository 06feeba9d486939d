"""Tune the hyperparameters of a training run's entrypoint: one Experiment, run locally or on Katib.

Each trial runs ``python -m dmlops.training.worker`` with the run's entrypoint and each searched
hyperparameter as the entrypoint argument ``--<name> ${trialParameters.<name>}`` (the user's function
gets it as a keyword, a script in its argv), and exports its model under ``<trials_uri>/<trial name>``. Trials that run
in pods read the URIs as pods read them and get the environment that reaches the object store
(:mod:`dmlops.platform.storage`; KFP's ``minio://`` artifacts as ``s3://`` with KFP's MinIO Secret), as
the workers of a training step do; a trial given a GPU trains on CUDA.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from dmlops.training.config import RunSource, argument_value
from dmlops.training.launch import WORKER_MODULE, as_run, check_worker_gpus, cluster_config, worker_env
from dmlops.tuning.experiment import MetricsCollector, build_experiment, flag_arguments, trial_job
from dmlops.tuning.results import TuningResult, apply_policy
from dmlops.tuning.spec import TuningSpec

TRIAL_KIND = {"torch-ddp": "PyTorchJob", "tf-multiworker": "TFJob", "horovod-torch": "MPIJob", "horovod-tf": "MPIJob"}
_TRIAL_NAME = {"trialName": "${trialSpec.Name}"}


def worker_experiment(
    search: dict[str, Any],
    config: RunSource,
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
    """The Experiment that tunes ``config``'s entrypoint: the worker's arguments with each searched
    hyperparameter's flag set to its placeholder, each trial exporting to ``<trials_uri>/<trial name>``, on CUDA when
    ``gpu``. ``in_pods`` (Katib) makes every URI one a pod reads and adds the object-store environment
    (:func:`~dmlops.training.launch.cluster_config`, :func:`~dmlops.training.launch.worker_env`); the
    local tuner (``in_pods=False``) reads this machine's paths."""
    check_worker_gpus(name, num_workers, gpu)
    spec = TuningSpec.from_katib(search)
    config = dataclasses.replace(as_run(config), export_uri=f"{trials_uri.rstrip('/')}/${{trialParameters.trialName}}",
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
    """``defaults`` with the best trial's value of each searched hyperparameter, read as the worker reads
    it (JSON, else text) and given the default's type (a list default takes comma-separated text)."""
    chosen = dict(defaults)
    for name, text in result.best_parameters.items():
        value = argument_value(str(text))
        default = defaults.get(name)
        if isinstance(default, list) and isinstance(value, str):
            value = [argument_value(part.strip()) for part in value.split(",") if part.strip()]
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            value = type(default)(value)
        chosen[name] = value
    return chosen
