"""Component that tunes the training worker's hyperparameters: Katib on a cluster, Optuna locally."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from dmlops.components.images import TORCH_IMAGE


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def tune(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    label: str,
    search_space: dict,
    best_parameters: Output[Artifact],
    trials: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    max_trial_count: int = 0,
    parallel_trial_count: int = 0,
    strategy: str = "torch-ddp",
    num_workers: int = 1,
    numeric_features: list = [],
    categorical_features: list = [],
    exclude_features: list = [],
    epochs: int = 3,
    batch_size: int = 1024,
    learning_rate: float = 0.001,
    weight_decay: float = 0.0,
    hidden_units: list = [64, 32],
    embedding_dim: int = 8,
    dropout: float = 0.0,
    seed: int = 0,
    backend: str = "local",
    namespace: str = "",
    worker_cpu: str = "1",
    worker_memory: str = "2Gi",
    worker_gpu: int = 0,
    trial_image: str = "",
    timeout_seconds: int = 3600,
    on_failure: str = "fail",
    on_goal_not_reached: str = "accept",
) -> NamedTuple("Tuned", best_objective=float, epochs=int, batch_size=int, learning_rate=float,
                weight_decay=float, hidden_units=list, embedding_dim=int, dropout=float):
    """Search the worker's hyperparameters with ``search_space``, a Katib ``Experiment.spec`` dict
    (parameters named after worker hyperparameters, objective on a metric the worker prints such as
    ``auc``, algorithm, trial counts, early stopping). ``backend`` ``kubernetes`` runs a Katib Experiment
    (trials as PyTorchJob/TFJob/MPIJob per ``strategy``, in ``trial_image``); ``local`` runs the same
    trials with Optuna.

    Outputs the best parameters as JSON, the trials table, an HTML report (objective vs each parameter),
    and every hyperparameter as its own output (tuned or passed through) for the training step.
    ``max_trial_count``/``parallel_trial_count`` above 0 override the spec's budget (a pipeline parameter).
    ``on_failure`` (fail | use-best) and ``on_goal_not_reached`` (accept | fail) decide when the step fails.
    """
    import os
    from collections import namedtuple

    from dmlops.platform.naming import resource_name
    from dmlops.training.config import TrainConfig
    from dmlops.tuning.results import html_report, write_best_parameters, write_trials
    from dmlops.tuning.worker_search import chosen_hyperparameters, run_search, worker_experiment

    local = backend == "local"
    search_space = dict(search_space)
    if max_trial_count > 0:
        search_space["maxTrialCount"] = max_trial_count
    if parallel_trial_count > 0:
        search_space["parallelTrialCount"] = parallel_trial_count
    defaults = dict(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, weight_decay=weight_decay,
                    hidden_units=[int(units) for units in hidden_units], embedding_dim=embedding_dim, dropout=dropout)
    config = TrainConfig(
        train_uri=train_data.path if local else train_data.uri, eval_uri=eval_data.path if local else eval_data.uri,
        label=label, export_uri="trial", strategy=strategy, numeric_features=numeric_features,
        categorical_features=categorical_features, exclude_features=exclude_features, seed=seed, **defaults,
    )
    workdir = os.path.join(os.path.dirname(trials.path), "trial_runs")
    if not local and not trial_image:
        raise ValueError("backend 'kubernetes' needs trial_image, the image trials run in "
                         "(pass dmlops.components.images.TORCH_IMAGE from the pipeline)")
    if not local and not namespace:
        from dmlops.platform.kubernetes import current_namespace

        namespace = current_namespace()
    experiment = worker_experiment(
        search_space, config.to_args(), workdir if local else f"{trials.uri}-models",
        name=resource_name("tune", best_parameters.uri, "tune"), namespace=namespace or "default",
        strategy=strategy, num_workers=num_workers, image=trial_image, cpu=worker_cpu, memory=worker_memory, gpu=worker_gpu,
    )
    result = run_search(experiment, backend, workdir, timeout_s=timeout_seconds,
                        on_failure=on_failure, on_goal_not_reached=on_goal_not_reached)

    write_best_parameters(result, best_parameters.path)
    rows = write_trials(result, trials.path)
    with open(report.path, "w") as handle:
        handle.write(html_report(result))
    summary = result.summary()
    best_parameters.metadata.update({**result.best_parameters, "best_trial": result.best_trial,
                                     "best_objective": result.best_objective, "experiment": result.experiment})
    trials.metadata.update({"rows": rows, **summary})
    metrics.log_metric(f"best_{result.objective_metric}", result.best_objective)
    for state in ("succeeded", "failed", "earlyStopped", "killed"):
        metrics.log_metric(f"trials_{state}", summary[f"trials_{state}"])
    chosen = chosen_hyperparameters(result, defaults)
    Tuned = namedtuple("Tuned", ["best_objective", *chosen])
    return Tuned(result.best_objective, **chosen)
