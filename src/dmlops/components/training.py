"""Components that train a model with a distributed strategy (the user's training code, or dmlops's
tabular model for a binary, multiclass or regression label) and evaluate it."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from dmlops.images import TORCH_IMAGE


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    label: str = "",
    task: str = "",
    entrypoint: str = "",
    entrypoint_args: dict = {},
    packages_to_install: list = [],
    strategy: str = "torch-ddp",
    num_workers: int = 2,
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
    checkpoint_uri: str = "",
    checkpoint_every: int = 0,
    max_restarts: int = 1,
    backend: str = "local",
    worker_cpu: str = "1",
    worker_memory: str = "2Gi",
    worker_gpu: int = 0,
    node_selector: dict = {},
    tolerations: list = [],
    namespace: str = "",
    timeout_seconds: int = 0,
    job_api: str = "training-operator",
    worker_images: dict = {},
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Train on ``train_data`` with ``num_workers`` workers of ``strategy`` (torch-ddp, horovod-torch,
    horovod-tf, tf-multiworker) and export the model as ``model``: the user's ``entrypoint`` (a function
    or script that uses :mod:`dmlops.training.runtime`) or, by default, dmlops's tabular trainer, an MLP
    with categorical embeddings for ``label``: binary (sigmoid, cross-entropy), multiclass (softmax,
    cross-entropy; the sorted classes are recorded and served by name) or regression (mean squared
    error on the standardised label; the export answers in the label's units).

    A user entrypoint gets ``entrypoint_args`` as its arguments and the data, export and checkpoint
    locations from the runtime; the tabular inputs below (features, hyperparameters) are not passed to
    it. A worker whose code raises fails the step with its traceback and is not restarted.

    For the tabular trainer, features are the listed columns, or inferred (strings categorical, numbers numeric) minus
    ``exclude_features``; ``batch_size`` is global. Checkpoints go to ``checkpoint_uri`` (default: beside
    the model) every ``checkpoint_every`` steps (0: every epoch); a failed worker group restarts up to
    ``max_restarts`` times from the newest one.

    Backend ``kubernetes`` runs the workers as a training job named after ``run_id`` and ``task_name``
    (a retried step reattaches to it): a PyTorchJob, or with ``job_api`` "trainer" a Trainer v2 TrainJob,
    for torch-ddp; an MPIJob for horovod-*; a TFJob for tf-multiworker. Its pods run
    ``worker_images["torch"]`` or ``worker_images["tf"]`` by ``strategy``, sized and placed by
    ``worker_*``, ``node_selector`` and ``tolerations``. Its workers read the inputs and write the model at
    their object-store URIs (KFP MinIO: the step needs its credentials as AWS_* environment variables); the
    step then copies the export into ``model``'s local path, so the artifact KFP records holds the same files.

    Args:
        train_data: Parquet training set (label and feature columns); preprocessing is fitted on it alone.
        eval_data: Parquet evaluation set with the same columns; gives the exported metrics.
        label: The tabular trainer's label column; a null fails with the row named. Unused by a user
            entrypoint.
        task: binary (a 0/1 or bool label), multiclass (strings or integers) or regression (numbers);
            empty: inferred from the label (bool or 0/1: binary; strings or integers with at most 20
            values: multiclass; other numbers: regression).
        entrypoint: The training code every worker runs: ``package.module:function`` or a script path in the
            worker image, or a function's source (``dmlops.training.worker.function_entrypoint(func)``);
            empty: dmlops's tabular trainer.
        entrypoint_args: Arguments of the entrypoint (keywords of a function, ``--name value`` of a script);
            for the tabular trainer they override its inputs of the same name.
        packages_to_install: pip requirements installed in every worker before the entrypoint runs.
        model: The export: a torch.export program (model.pt2) and ONNX (torch) or a SavedModel (TensorFlow) plus metadata.json;
            metadata: framework, strategy, workers, model files, sha256 of every file, inputs and metrics.
        metrics: Every number of the entrypoint's final report (the tabular trainer, on eval_data: AUC,
            accuracy and log loss for binary; accuracy, macro-F1, log loss and one-vs-rest AUC for multiclass;
            RMSE, MAE and R² for regression; final train loss, samples per second, train seconds, ...).
        classification: ROC curve (``roc``) and confusion matrix (``confusion_matrix``, with ``classes``
            for more than two) when the final report has them (the tabular trainer's classifiers do;
            empty for regression).
        report: Markdown report of the metrics, the confusion matrix and the settings.
        strategy: torch-ddp, horovod-torch, horovod-tf or tf-multiworker.
        num_workers: Worker processes (local) or pods (kubernetes).
        numeric_features: Numeric feature columns; empty: inferred from the Parquet schema.
        categorical_features: Categorical feature columns (embedded); empty: string columns.
        exclude_features: Columns never used as features when features are inferred (ids, leaky columns).
        epochs: Passes over the training set.
        batch_size: Global batch size, split evenly across workers.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay.
        hidden_units: Width of each hidden layer of the MLP.
        embedding_dim: Embedding width of each categorical feature.
        dropout: Dropout after each hidden layer (0 to 1).
        seed: Seed of initialisation and shuffling; runs with the same seed and workers are identical.
        checkpoint_uri: Where checkpoints go (path, gs://, s3://); empty: beside the model. On a cluster it
            must be shared storage.
        checkpoint_every: Checkpoint every this many steps; 0: at the end of every epoch.
        max_restarts: Times a failed worker group restarts (from the newest checkpoint) before the step fails.
        backend: local (processes on this machine), kubernetes (a training job) or auto (kubernetes inside a
            cluster pod, local elsewhere).
        worker_cpu: CPU request and limit of each worker pod (kubernetes).
        worker_memory: Memory request and limit of each worker pod (kubernetes).
        worker_gpu: nvidia.com/gpu per worker pod (0 or 1: one training process per pod); 1: the workers
            train on CUDA.
        node_selector: Node labels the worker pods must run on (kubernetes).
        tolerations: Kubernetes tolerations of the worker pods, as dicts (key, operator, value, effect).
        namespace: Namespace of the training job; empty: the step's own namespace.
        timeout_seconds: Fail (and delete the job) after this many seconds; 0: no limit locally, 24 h on a
            cluster.
        job_api: training-operator (Training Operator v1 jobs and MPIJob) or trainer (Trainer v2 TrainJob,
            torch-ddp only).
        worker_images: Images of the worker pods by framework, {"torch": ..., "tf": ...}; a framework not given
            runs dmlops's torch-horovod or tf-horovod image of this version (ghcr.io/dmlops).
        run_id: The pipeline run's id; with ``task_name`` it names the job so a retried step reattaches.
        task_name: The task's name in the pipeline.
    """
    from dmlops.images import image
    from dmlops.platform.backend import resolve_backend
    from dmlops.training.config import TF_STRATEGIES, step_run
    from dmlops.training.launch import WorkerResources, download_export, run_training
    from dmlops.training.metrics import log_classification, markdown_report, scalar_metrics

    backend = resolve_backend(backend)
    local = backend == "local"
    # local workers use the artifacts' paths; cluster workers, in pods of their own, their object-store URIs
    train_uri, eval_uri, export_uri = ((train_data.path, eval_data.path, model.path) if local
                                       else (train_data.uri, eval_data.uri, model.uri))
    run = dict(train_uri=train_uri, eval_uri=eval_uri, export_uri=export_uri, strategy=strategy, seed=seed,
               checkpoint_uri=checkpoint_uri or f"{export_uri.rstrip('/')}-checkpoints",
               checkpoint_every=checkpoint_every, device="cuda" if worker_gpu > 0 else "cpu")
    tabular = dict(
        label=label, task=task, numeric_features=numeric_features, categorical_features=categorical_features,
        exclude_features=exclude_features, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        weight_decay=weight_decay, hidden_units=[int(units) for units in hidden_units],
        embedding_dim=embedding_dim, dropout=dropout)
    config = step_run(entrypoint, entrypoint_args, packages_to_install, tabular, **run)
    resources = WorkerResources(cpu=worker_cpu, memory=worker_memory, gpu=worker_gpu,
                                node_selector=node_selector, tolerations=tolerations)
    images = {"torch": image("torch-horovod"), "tf": image("tf-horovod"), **worker_images}
    worker_image = images["tf" if strategy in TF_STRATEGIES else "torch"]
    exported = run_training(config, num_workers, backend=backend, resources=resources,
                            max_restarts=max_restarts, timeout=timeout_seconds or None, image=worker_image,
                            namespace=namespace, run_id=run_id, task_name=task_name, job_api=job_api)
    if not local:  # KFP uploads model.path to model.uri after this body: the same files go back
        download_export(model.uri, model.path)

    results = exported["metrics"]
    model.framework = exported["framework"]
    model.metadata.update({
        "framework": exported["framework"], "strategy": strategy, "workers": num_workers,
        "model_files": exported["model_files"], "files_sha256": exported["files"],
        "label": exported.get("label", label), "inputs": exported["inputs"], **scalar_metrics(results),
        **{key: exported[key] for key in ("task", "classes") if key in exported},
    })
    for name, value in scalar_metrics(results).items():
        metrics.log_metric(name, value)
    log_classification(classification, results)
    with open(report.path, "w") as handle:
        handle.write(markdown_report(f"Training: {strategy} x {num_workers}", results,
                                     {"entrypoint": config.resolved_entrypoint.splitlines()[0], "label": label,
                                      "task": exported.get("task", task),
                                      "epochs": epochs, "batch_size": batch_size,
                                      "learning_rate": learning_rate, "backend": backend}))


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    eval_data: Input[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    threshold: float = 0.5,
    label: str = "",
    task: str = "",
):
    """Evaluate an exported model on ``eval_data`` by its task: binary AUC, accuracy, log loss, ROC curve
    and confusion matrix at ``threshold``; multiclass accuracy, macro-F1, log loss, one-vs-rest AUC and
    the confusion matrix over the class names; regression RMSE, MAE and R². The model's file digests are
    checked first.

    A model exported by the user's own code (its metadata declares input tensors, no dmlops
    preprocessing) is evaluated on ``eval_data`` holding one column per input, each row's value of that
    input (a number, or a list for a vector input), and the label column: ``label``, or the one the
    export declares. Its task is ``task``, or the one the export declares, or multiclass when the model
    answers one score per class (class ``i`` is output ``i`` unless the export declares ``classes``);
    scores that are not already probabilities are taken as logits.

    Args:
        model: A model exported by ``train`` (torch.export program or SavedModel with metadata.json).
        eval_data: Parquet dataset with the model's feature columns and its label column, or for a user's
            export its input columns and the label column.
        metrics: The task's metrics, the task and the rows evaluated.
        classification: ROC curve (binary) and confusion matrix (classifiers); empty for regression.
        report: Markdown report of the metrics and the confusion matrix.
        threshold: Probability at or above which a binary prediction counts as positive.
        label: A user's export: the label column of ``eval_data``; empty: the label its metadata declares.
            Unused for dmlops's tabular models (their label is recorded).
        task: A user's export: binary, multiclass or regression; empty: declared by the export, or
            multiclass for one score per class. Unused for dmlops's tabular models.
    """
    from dmlops.training.evaluate import evaluate_model
    from dmlops.training.metrics import log_classification, markdown_report, scalar_metrics

    results = evaluate_model(model.path, eval_data.path, threshold, label=label, task=task)
    for name, value in scalar_metrics(results).items():
        metrics.log_metric(name, value)
    metrics.metadata["task"] = results["task"]
    log_classification(classification, results)
    with open(report.path, "w") as handle:
        handle.write(markdown_report("Evaluation", results, {"framework": results["framework"], "task": results["task"]}))
