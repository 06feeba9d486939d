"""Components that train a tabular binary classifier with a distributed strategy and evaluate it."""

from kfp import dsl
from kfp.dsl import ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from dmlops.components.images import TF_IMAGE, TORCH_IMAGE


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def train(
    train_data: Input[Dataset],
    eval_data: Input[Dataset],
    label: str,
    model: Output[Model],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
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
    worker_images: dict = {"torch": TORCH_IMAGE, "tf": TF_IMAGE},
    run_id: str = dsl.PIPELINE_JOB_ID_PLACEHOLDER,
    task_name: str = dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
):
    """Train an MLP with categorical embeddings on ``train_data`` with ``num_workers`` workers of
    ``strategy`` (torch-ddp, horovod-torch, horovod-tf, tf-multiworker) and export it as ``model``.

    Features are the listed columns, or inferred (strings categorical, numbers numeric) minus
    ``exclude_features``; ``batch_size`` is global. Checkpoints go to ``checkpoint_uri`` (default: beside
    the model) every ``checkpoint_every`` steps (0: every epoch); a failed worker group restarts up to
    ``max_restarts`` times from the newest one.

    Backend ``kubernetes`` runs the workers as a training job named after ``run_id`` and ``task_name``
    (a retried step reattaches to it): a PyTorchJob, or with ``job_api`` "trainer" a Trainer v2 TrainJob,
    for torch-ddp; an MPIJob for horovod-*; a TFJob for tf-multiworker. Its pods run
    ``worker_images["torch"]`` or ``worker_images["tf"]`` by ``strategy``, sized and placed by
    ``worker_*``, ``node_selector`` and ``tolerations``. Its workers read the inputs and write the model at their object-store URIs (KFP MinIO:
    the step needs its credentials as AWS_* environment variables); the step then copies the export into
    ``model``'s local path, so the artifact KFP records holds the same files.
    """
    from dmlops.platform.backend import resolve_backend
    from dmlops.training.config import TF_STRATEGIES, TrainConfig
    from dmlops.training.launch import WorkerResources, download_export, run_training
    from dmlops.training.metrics import markdown_report, scalar_metrics

    backend = resolve_backend(backend)
    local = backend == "local"
    # local workers use the artifacts' paths; cluster workers, in pods of their own, their object-store URIs
    train_uri, eval_uri, export_uri = ((train_data.path, eval_data.path, model.path) if local
                                       else (train_data.uri, eval_data.uri, model.uri))
    config = TrainConfig(
        train_uri=train_uri, eval_uri=eval_uri, label=label, export_uri=export_uri,
        strategy=strategy, numeric_features=numeric_features, categorical_features=categorical_features,
        exclude_features=exclude_features, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
        weight_decay=weight_decay, hidden_units=[int(units) for units in hidden_units],
        embedding_dim=embedding_dim, dropout=dropout, seed=seed,
        checkpoint_uri=checkpoint_uri or f"{export_uri.rstrip('/')}-checkpoints", checkpoint_every=checkpoint_every,
        device="cuda" if worker_gpu > 0 else "cpu",
    )
    resources = WorkerResources(cpu=worker_cpu, memory=worker_memory, gpu=worker_gpu,
                                node_selector=node_selector, tolerations=tolerations)
    image = worker_images["tf" if strategy in TF_STRATEGIES else "torch"]
    exported = run_training(config, num_workers, backend=backend, resources=resources,
                            max_restarts=max_restarts, timeout=timeout_seconds or None, image=image,
                            namespace=namespace, run_id=run_id, task_name=task_name, job_api=job_api)
    if not local:  # KFP uploads model.path to model.uri after this body: the same files go back
        download_export(model.uri, model.path)

    results = exported["metrics"]
    model.framework = exported["framework"]
    model.metadata.update({
        "framework": exported["framework"], "strategy": strategy, "workers": num_workers,
        "model_files": exported["model_files"], "files_sha256": exported["files"],
        "label": label, "inputs": exported["inputs"], **scalar_metrics(results),
    })
    for name in ("auc", "accuracy", "log_loss", "train_loss", "samples_per_second", "train_seconds"):
        metrics.log_metric(name, results[name])
    classification.log_roc_curve(results["roc"]["fpr"], results["roc"]["tpr"], results["roc"]["thresholds"])
    classification.log_confusion_matrix(["0", "1"], results["confusion_matrix"])
    with open(report.path, "w") as handle:
        handle.write(markdown_report(f"Training: {strategy} x {num_workers}", results,
                                     {"label": label, "epochs": epochs, "batch_size": batch_size,
                                      "learning_rate": learning_rate, "backend": backend}))


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def evaluate(
    model: Input[Model],
    eval_data: Input[Dataset],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    report: Output[Markdown],
    threshold: float = 0.5,
):
    """Evaluate an exported model on ``eval_data``: AUC, accuracy, log loss, ROC curve and confusion
    matrix at ``threshold``. The model's file digests are checked first."""
    from dmlops.training.evaluate import evaluate_model
    from dmlops.training.metrics import markdown_report

    results = evaluate_model(model.path, eval_data.path, threshold)
    for name in ("auc", "accuracy", "log_loss", "positive_rate", "rows"):
        metrics.log_metric(name, results[name])
    classification.log_roc_curve(results["roc"]["fpr"], results["roc"]["tpr"], results["roc"]["thresholds"])
    classification.log_confusion_matrix(["0", "1"], results["confusion_matrix"])
    with open(report.path, "w") as handle:
        handle.write(markdown_report("Evaluation", results, {"framework": results["framework"]}))
