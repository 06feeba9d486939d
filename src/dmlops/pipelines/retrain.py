"""The retrain pipeline: watch production, and when the data drifted or the model degraded, train on a
fresh window, compare with the champion, register, roll out as a canary and promote.

feedback joins the labels that arrived to the prediction log; monitor judges the window against the
training reference. If it drifted or degraded: training_window (the training data's last window_days
plus the labelled production rows; the latest of those held out) -> train -> evaluate the challenger
and the champion on the same holdout -> register_model (alias challenger) -> deploy the new version as
a canary judged on the holdout (alias champion moves to it only when its gates pass), its server logging
to the same prediction log.
"""

from kfp import dsl

from dmlops.components.monitoring import feedback, monitor
from dmlops.components.registry import register_model, registered_model
from dmlops.components.serving import deploy
from dmlops.components.training import evaluate, train
from dmlops.components.window import training_window
from dmlops.platform.cluster_settings import apply_to_current_pipeline


def retrain_steps(reference, labelled, champion, *, model_name, endpoint, registry, label, time_column, window_days, window_end,
                  exclude_features, epochs, num_workers, strategy, backend, predictions_uri) -> None:
    """Add the retraining branch's steps (see the module docstring) to the pipeline being traced; a plain
    function, not a nested pipeline, so cluster settings reach its steps."""
    window = training_window(reference=reference, labelled=labelled, label=label, time_column=time_column,
                             window_days=window_days, window_end=window_end).set_display_name("training window")
    holdout = window.outputs["holdout"]
    trained = train(train_data=window.outputs["train"], eval_data=holdout, label=label,
                    exclude_features=exclude_features, epochs=epochs, num_workers=num_workers, strategy=strategy,
                    backend=backend).set_display_name("train challenger")
    challenger = evaluate(model=trained.outputs["model"], eval_data=holdout, label=label).set_display_name(
        "evaluate challenger")
    with dsl.If(champion.outputs["found"] == True):  # noqa: E712 (a KFP condition, not a Python comparison)
        evaluate(model=champion.outputs["model"], eval_data=holdout, label=label).set_display_name(
            "evaluate champion")
    registered = register_model(model=trained.outputs["model"], name=model_name, metrics=challenger.outputs["metrics"],
                                train_data=window.outputs["train"], eval_data=holdout, registry=registry,
                                pipeline_run=dsl.PIPELINE_JOB_NAME_PLACEHOLDER).set_display_name("register")
    deploy(model_uri=registered.outputs["model_uri"], registry=registry, eval_data=holdout, endpoint=endpoint,
           backend=backend, prediction_log=predictions_uri).set_display_name("deploy (canary), promote champion")


@dsl.pipeline(name="retrain", description="Monitor production; on drift or degradation retrain on a fresh window, "
                                          "register and roll out as a canary.")
def retrain(
    reference_uri: str,
    predictions_uri: str,
    labels_uri: str,
    model_name: str = "flights-delay",
    endpoint: str = "flights-delay",
    registry: str = "",
    label: str = "label",
    time_column: str = "time_hour",
    monitor_window_hours: float = 168.0,
    window_days: float = 90.0,
    window_end: str = "",
    max_label_delay_hours: float = 24.0,
    max_auc_drop: float = 0.05,
    psi_threshold: float = 0.2,
    exclude_features: list = [],
    epochs: int = 2,
    num_workers: int = 1,
    strategy: str = "torch-ddp",
    backend: str = "local",
):
    """Join delayed labels to the prediction log, monitor the latest window against the training
    reference and, when it drifted or degraded, retrain and roll the new version out.

    Args:
        reference_uri: The training data (Parquet): features, the label, time_column and, for prediction
            drift, the model's probabilities in a prediction column (exclude it from training with
            exclude_features).
        predictions_uri: The predictor's prediction log (--prediction_log): folder, gs:// or s3:// URI.
        labels_uri: Delayed labels (Parquet): request_id, the label, label_time.
        model_name: The registered model's name.
        endpoint: The serving endpoint (the InferenceService on a cluster).
        registry: The MLflow tracking server URL; "" takes $MLFLOW_TRACKING_URI, else a local SQLite store.
        label: The label column.
        time_column: The training data's timestamp column.
        monitor_window_hours: The monitored window: the last this many hours before window_end.
        window_days: The training window's length in days.
        window_end: The end of both windows (ISO 8601); "" is now for the monitor and the latest row for
            the training window.
        max_label_delay_hours: A prediction without a label after this long is expired.
        max_auc_drop: degraded when the AUC is more than this below the reference's.
        psi_threshold: A feature or the prediction drifts when its PSI is above this.
        exclude_features: Columns of the training data that are not features (e.g. the prediction column).
        epochs: Training epochs.
        num_workers: Training workers.
        strategy: torch-ddp, horovod-torch, horovod-tf or tf-multiworker.
        backend: local or kubernetes.
    """
    reference = dsl.importer(artifact_uri=reference_uri, artifact_class=dsl.Dataset).set_display_name("reference")
    labels = dsl.importer(artifact_uri=labels_uri, artifact_class=dsl.Dataset).set_display_name("labels")
    joined = feedback(predictions_uri=predictions_uri, labels=labels.output, label_name=label, as_of=window_end,
                      max_label_delay_hours=max_label_delay_hours, model=model_name).set_display_name("feedback")
    watched = monitor(reference=reference.output, predictions_uri=predictions_uri,
                      labelled=joined.outputs["labelled"], window_hours=monitor_window_hours, window_end=window_end,
                      label_name=label, max_auc_drop=max_auc_drop, psi_threshold=psi_threshold,
                      model=model_name).set_display_name("monitor")
    champion = registered_model(name=model_name, registry=registry).set_display_name("champion")
    steps = dict(reference=reference.output, champion=champion, labelled=joined.outputs["labelled"], model_name=model_name,
                 endpoint=endpoint, registry=registry, label=label, time_column=time_column, window_days=window_days,
                 window_end=window_end, exclude_features=exclude_features, epochs=epochs, num_workers=num_workers,
                 strategy=strategy, backend=backend, predictions_uri=predictions_uri)
    with dsl.If(watched.outputs["drifted"] == True, name="drifted"):  # noqa: E712
        retrain_steps(**steps)
    with dsl.Elif(watched.outputs["degraded"] == True, name="degraded"):  # noqa: E712
        retrain_steps(**steps)
    apply_to_current_pipeline()
