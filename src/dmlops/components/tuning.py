"""Component that tunes a training entrypoint's hyperparameters: Katib on a cluster, Optuna locally."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Output

from dmlops.images import TORCH_IMAGE


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def tune(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    search_space: dict,
    best_parameters: Output[Artifact],
    trials: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
    label: str = "",
    task: str = "",
    entrypoint: str = "",
    entrypoint_args: dict = {},
    packages_to_install: list = [],
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
    """Search the hyperparameters of ``entrypoint`` (the user's training code; default: dmlops's tabular
    trainer) with ``search_space``, a Katib ``Experiment.spec`` dict (parameters named after the
    entrypoint's arguments, each trial passing them as ``--<name> <value>``; objective on a metric the
    code reports such as ``auc``, algorithm, trial counts, early stopping). ``backend`` ``kubernetes`` runs a Katib Experiment
    (trials as PyTorchJob/TFJob/MPIJob per ``strategy``, in ``trial_image``); ``local`` runs the same
    trials with Optuna.

    Outputs the best parameters as JSON, the trials table, an HTML report (objective vs each parameter),
    and every hyperparameter as its own output (tuned or passed through) for the training step.
    ``max_trial_count``/``parallel_trial_count`` above 0 override the spec's budget (a pipeline parameter).
    ``on_failure`` (fail | use-best) and ``on_goal_not_reached`` (accept | fail) decide when the step fails.

    Args:
        train_data: The Parquet training rows every trial trains on (trial pods read its URI on a cluster).
        eval_data: The Parquet rows every trial evaluates on; the objective metric is measured on them.
        label: The tabular trainer's label column (no nulls); unused by a user entrypoint.
        task: The tabular trainer's task: binary, multiclass or regression; empty: inferred from the label
            (as ``train`` does).
        entrypoint: The training code each trial runs (as ``train``'s entrypoint: ``package.module:function``,
            a script path in the trial image, or a function's source); empty: the tabular trainer.
        entrypoint_args: The entrypoint's fixed arguments; a searched parameter overrides the same name.
        packages_to_install: pip requirements installed in every trial worker before the entrypoint runs.
        search_space: A Katib Experiment.spec as a dict: parameters (named after the entrypoint's arguments;
            for the tabular trainer epochs, batch_size, learning_rate, weight_decay, hidden_units,
            embedding_dim, dropout),
            objective, algorithm, maxTrialCount, parallelTrialCount, maxFailedTrialCount, earlyStopping.
        best_parameters: The best trial as JSON: experiment, best_trial, objective_metric, best_objective
            and parameters. Metadata: each best parameter, best_trial, best_objective and experiment.
        trials: One row per trial as Parquet: trial, state, objective, best, ``param_<name>``,
            ``metric_<name>``, observations, seconds and message. Metadata: rows and the search summary
            (experiment, succeeded, reason, objective, goal, goal_reached, best_trial, best_objective, trials
            and the count per trial state).
        report: An HTML page: outcome, best parameters, the objective against each parameter, all trials.
        metrics: ``best_<objective metric>`` and the trial counts trials_succeeded, trials_failed,
            trials_earlyStopped and trials_killed.
        max_trial_count: Above 0, replaces the spec's maxTrialCount (total trials); 0 keeps the spec's.
        parallel_trial_count: Above 0, replaces the spec's parallelTrialCount (trials at once); 0 keeps the spec's.
        strategy: How each trial trains: "torch-ddp", "horovod-torch", "horovod-tf" or "tf-multiworker"
            (trials run as PyTorchJob, MPIJob or TFJob; one torch-ddp worker runs as a Job).
        num_workers: Workers per trial.
        numeric_features: Numeric feature columns; with categorical_features also empty, the features
            are inferred (numbers and booleans numeric, strings categorical).
        categorical_features: Categorical (embedded) feature columns; see numeric_features.
        exclude_features: Columns never used as features when the features are inferred.
        epochs: Passes over the training data, unless searched.
        batch_size: Global batch size (each worker takes 1/num_workers of it), unless searched.
        learning_rate: AdamW learning rate, unless searched.
        weight_decay: AdamW (decoupled) weight decay, unless searched; 0.0 means none.
        hidden_units: Sizes of the hidden layers of the MLP, unless searched.
        embedding_dim: Size of each categorical feature's embedding, unless searched.
        dropout: Dropout rate (0 to 1) after each hidden layer, unless searched; 0.0 means none.
        seed: Random seed of every trial, so trials differ only by their parameters.
        backend: "local" runs the trials here with Optuna; "kubernetes" creates a Katib Experiment.
        namespace: Namespace of the Katib Experiment; "" uses the step pod's own namespace.
        worker_cpu: CPU request and limit of each trial worker pod (Kubernetes quantity, e.g. "2" or "500m").
        worker_memory: Memory request and limit of each trial worker pod (Kubernetes quantity, e.g. "4Gi").
        worker_gpu: GPUs (nvidia.com/gpu) of each trial worker pod: 0 or 1 (one training process per pod);
            1: the trials train on CUDA.
        trial_image: The image trial pods run on kubernetes (unused locally); empty: dmlops's torch-horovod
            image of this version (ghcr.io/dmlops).
        timeout_seconds: On kubernetes the longest the whole Experiment may run; locally the longest
            one trial may run.
        on_failure: "fail" fails the step when the search failed (too many failed trials); "use-best"
            goes on with the best trial so far. No trial with an objective always fails.
        on_goal_not_reached: "accept" takes the best trial when the objective's goal was missed; "fail"
            fails the step.

    Returns:
        best_objective: The best trial's objective metric value.
        epochs: The best trial's epochs if searched, else the epochs input.
        batch_size: The best trial's batch_size if searched, else the batch_size input.
        learning_rate: The best trial's learning_rate if searched, else the learning_rate input.
        weight_decay: The best trial's weight_decay if searched, else the weight_decay input.
        hidden_units: The best trial's hidden_units if searched, else the hidden_units input.
        embedding_dim: The best trial's embedding_dim if searched, else the embedding_dim input.
        dropout: The best trial's dropout if searched, else the dropout input.
    """
    import os
    from collections import namedtuple

    from dmlops.images import image
    from dmlops.platform.naming import resource_name
    from dmlops.training.config import step_run
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
    # local trials read the artifacts' paths; trial pods their object-store URIs (worker_experiment maps them)
    run = dict(train_uri=train_data.path if local else train_data.uri,
               eval_uri=eval_data.path if local else eval_data.uri, export_uri="-", strategy=strategy, seed=seed)
    tabular = dict(label=label, task=task, numeric_features=numeric_features,
                   categorical_features=categorical_features, exclude_features=exclude_features, **defaults)
    config = step_run(entrypoint, entrypoint_args, packages_to_install, tabular, **run)
    workdir = os.path.join(os.path.dirname(trials.path), "trial_runs")
    trial_image = trial_image or image("torch-horovod")
    if not local and not namespace:
        from dmlops.platform.kubernetes import current_namespace

        namespace = current_namespace()
    experiment = worker_experiment(
        search_space, config, workdir if local else f"{trials.uri}-models",
        name=resource_name("tune", best_parameters.uri, "tune"), namespace=namespace or "default",
        num_workers=num_workers, image=trial_image, cpu=worker_cpu, memory=worker_memory, gpu=worker_gpu,
        in_pods=not local,
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
    Tuned = namedtuple("Tuned", ["best_objective", *defaults])
    return Tuned(result.best_objective, **{name: chosen[name] for name in defaults})
