"""The rollout component: serve a trained model behind an endpoint with a metric-gated canary."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from dmlops.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def deploy(
    eval_data: Input[Dataset],
    endpoint: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
    model: Input[Model] = None,
    model_uri: str = "",
    registry: str = "",
    backend: str = "auto",
    canary_percent: int = 10,
    smoke_requests: int = 10,
    window_requests: int = 200,
    rows_per_request: int = 1,
    concurrency: int = 4,
    max_error_rate: float = 0.0,
    max_p99_ms: float = 500.0,
    max_p99_ratio: float = 2.0,
    max_prediction_shift: float = 0.25,
    prediction_shift_min_rows: int = 0,
    quality_gates: str = "",
    min_labelled_rows: int = 100,
    storage_uri: str = "",
    runtime: str = "dmlops",
    model_format: str = "",
    deployment_mode: str = "Knative",
    namespace: str = "",
    service_account: str = "",
    cpu: str = "1",
    memory: str = "1Gi",
    min_replicas: int = 1,
    max_replicas: int = 3,
    feast_config: str = "",
    prediction_log: str = "",
    timeout_seconds: int = 900,
) -> NamedTuple("RolloutOutputs", [("endpoint_url", str), ("predict_url", str), ("stable_revision", str),
                                   ("canary_revision", str), ("decision", str)]):
    """Roll ``model`` out to ``endpoint``: a first deploy goes to 100% after a smoke test; otherwise the
    model goes out as a canary at ``canary_percent``%, smoke requests run, then rows of ``eval_data`` are
    replayed to the stable and the canary and gates on error rate, p99 latency and quality on the labelled
    rows (AUC and log loss by default, not worse than the stable's by more than a margin) promote it to
    100% or roll it back (the stable keeps 100%). The shift of its predictions from the stable's (PSI) is
    a warning, a gate only from ``prediction_shift_min_rows`` predictions.

    ``backend``: ``local`` (two local model servers that outlive the step; ``dmlops serve --stop`` stops
    them), ``kubernetes`` (a KServe InferenceService named ``endpoint``, Knative mode with a canary or
    Standard mode updated in place) or ``auto``. ``storage_uri`` (gs://, s3://, pvc://) repackages the
    model there for ``runtime``: ``dmlops`` (the default; without ``storage_uri`` KServe downloads the model
    artifact itself), ``triton`` or ``tfserving``. ``model_format``: ``native`` or ``onnx``.

    A registered version (``model_uri``) is read from its source, its files checked against their
    registered sha256; the rollout is recorded in the registry, and ``champion`` moves to the version
    when it is promoted (or first deployed).

    Args:
        model: The exported model (the train step's model artifact: model files and metadata.json);
            or give model_uri.
        model_uri: A registered version instead of model: models:/<name>@<alias> or models:/<name>/<version>.
        registry: With model_uri: the MLflow tracking server URL; "" takes $MLFLOW_TRACKING_URI, else the
            SQLite store under the local run's output folder.
        eval_data: Parquet rows replayed as requests (the model's feature columns), e.g. the evaluation set;
            its label column, when present, feeds the quality gates of the model's task (binary, multiclass or
            regression). For a model exported by the user's own code: one column per input the export
            declares (a list per row for a vector input) and the label it declares, as ``evaluate`` takes.
        endpoint: The endpoint's name: the local model servers' name, or the InferenceService's (a
            DNS-1035 label: lower case, starting with a letter).
        metrics: The evidence: promoted (1 or 0), smoke_error_rate, and for a judged canary
            prediction_shift_psi, ``gate_<name>`` for each gate (error_rate, p99_ms, the quality metrics,
            prediction_shift_psi when it gates) and, for each model (``stable_*``, ``canary_*``), requests,
            errors, error_rate, p50_ms, p99_ms, mean_prediction, labelled_rows and the quality metrics.
            Metadata: decision, endpoint and backend.
        report: A Markdown report: the decision and its reasons, warnings, the endpoint, the stable and the
            canary model, each gate's value and limit, both models' quality and traffic and example errors.
        backend: "local", "kubernetes" or "auto" (kubernetes inside a Kubernetes pod, else local).
        canary_percent: The share of traffic (1 to 99) the new model gets while it is judged (Knative mode).
        smoke_requests: Requests sent to the new model before the window; any failure rolls it back (a
            first deploy fails).
        window_requests: Replayed requests sent to both the stable and the canary model to judge the canary.
        rows_per_request: Rows of eval_data in each request.
        concurrency: Requests in flight at once while replaying.
        max_error_rate: The largest fraction (0 to 1) of the canary's window requests that may fail;
            0.0 rolls back on any failure.
        max_p99_ms: The canary's p99 latency limit in milliseconds.
        max_p99_ratio: The canary is rolled back for latency only when its p99 is above this many times
            the stable's and more than 20 ms above it, and a rank test over at least 100 requests per
            endpoint finds it slower (the rule is in the report).
        max_prediction_shift: The population stability index of the canary's predictions against the
            stable's (0 means the same distribution; 0.25 is a major shift) above which a warning is
            reported, or the canary rolled back when the shift gates.
        prediction_shift_min_rows: 0: the prediction shift is a warning only; N: a gate once both models
            answered at least N rows.
        quality_gates: Metrics by name with the margin the canary may be worse than the stable by,
            absolute or relative with %, e.g. "auc:0.01,log_loss:0.02" (the default for a binary model)
            or "rmse:2%" (the default for regression); metrics: auc, accuracy, log_loss, rmse, mae.
        min_labelled_rows: The fewest labelled rows answered by both models for the quality gates to
            judge; with fewer the report warns and quality is not judged.
        storage_uri: Kubernetes: gs://, s3:// or pvc:// location to package the model at for runtime;
            "" serves the model artifact where it is (dmlops runtime only; on KFP's minio:// store as
            s3:// with the ServiceAccount of manifests/base/kserve-storage.yaml). Unused locally.
        runtime: The KServe serving runtime: "dmlops" (the dmlops model server), "triton" or
            "tfserving" (these two need storage_uri). Locally the dmlops server always runs.
        model_format: "" or "native" (torch.export program or SavedModel) or "onnx" (torch exports), the file the
            model server loads.
        deployment_mode: Kubernetes: "Knative" (a Knative canary with a traffic split) or "Standard" (a
            Deployment updated in place after a smoke test; the previous spec is restored on failure).
            KServe 0.16 or later; the deprecated names "Serverless" and "RawDeployment" are accepted.
        namespace: The InferenceService's namespace; "" uses the step pod's own namespace.
        service_account: The predictor pod's service account (e.g. one with storage credentials); ""
            uses the namespace default, or for a model on KFP's artifact store dmlops-kfp-artifact-reader.
        cpu: CPU request and limit of each predictor pod (Kubernetes quantity, e.g. "1" or "500m").
        memory: Memory request and limit of each predictor pod (Kubernetes quantity, e.g. "1Gi").
        min_replicas: The fewest predictor pods (Kubernetes); 0 lets a Knative service scale to zero.
        max_replicas: The most predictor pods the autoscaler may run (Kubernetes).
        feast_config: JSON text, or a path to a JSON file, with store, features and entity_keys: the
            model server adds those online features to each request (dmlops runtime only); "" adds none.
        prediction_log: Where the model server logs every request it answers (hourly Parquet: a folder, gs://
            or s3:// URI; the feedback and monitor steps read it), dmlops runtime only; "" logs nothing.
        timeout_seconds: Kubernetes: the longest wait for the InferenceService to become ready after each
            change.

    Returns:
        endpoint_url: The endpoint's base URL after the rollout; on Kubernetes the external one
            (status.url, on KServe's ingress domain).
        predict_url: The URL that answers prediction requests in the runtime's protocol (V1 :predict;
            V2 /infer for triton); on Kubernetes the cluster-local one (on status.address.url), which
            later steps and other pods in the cluster call.
        stable_revision: The revision that serves 100% after the rollout (locally endpoint-port).
        canary_revision: The revision the new model ran as; "" in Standard mode.
        decision: "first-deploy", "promote" or "rollback".
    """
    import time
    from collections import namedtuple

    from dmlops.platform.backend import resolve_backend
    from dmlops.serving.deploy import deploy as roll_out
    from dmlops.serving.rollout import RolloutPolicy

    if model_uri:
        from dmlops.registry.mlflow_registry import record_deploy, resolve, served_at

        version, directory = resolve(model_uri, registry)
        source, local_copy = version.source, str(directory)
        serving_before = served_at(endpoint, time.time(), registry)
    elif model is not None:
        source, local_copy = model.uri, model.path
    else:
        raise ValueError("deploy: give the model artifact or a registry model_uri")

    policy = RolloutPolicy(
        canary_percent=canary_percent, smoke_requests=smoke_requests, window_requests=window_requests,
        rows_per_request=rows_per_request, concurrency=concurrency, max_error_rate=max_error_rate,
        max_p99_ms=max_p99_ms, max_p99_ratio=max_p99_ratio, max_prediction_shift=max_prediction_shift,
        prediction_shift_min_rows=prediction_shift_min_rows, quality_gates=quality_gates,
        min_labelled_rows=min_labelled_rows,
    )
    backend = resolve_backend(backend)
    result = roll_out(
        source if backend == "kubernetes" else local_copy, eval_data.path, endpoint, policy, model_dir=local_copy,
        backend=backend, storage_uri=storage_uri, runtime=runtime, model_format=model_format,
        deployment_mode=deployment_mode,
        namespace=namespace, service_account=service_account, cpu=cpu, memory=memory,
        min_replicas=min_replicas, max_replicas=max_replicas, feast_config=feast_config,
        prediction_log=prediction_log, timeout_s=float(timeout_seconds),
    )
    if model_uri:
        record_deploy(version, endpoint, result.decision.action, registry=registry,
                      stable_version=serving_before.model_version if serving_before else "")
        print(f"{version.uri}: {result.decision.action} recorded"
              + (f"; alias champion -> version {version.version}" if result.decision.promoted else ""))
    for name, value in result.decision.metrics().items():
        metrics.log_metric(name, value)
    metrics.metadata.update({"decision": result.decision.action, "endpoint": result.endpoint, "backend": result.backend})
    with open(report.path, "w") as handle:
        handle.write(result.markdown())
    print(f"{result.decision.action}: {result.endpoint} serves at {result.predict_url}\n{result.query_hint()}")
    outputs = namedtuple("RolloutOutputs",
                         ["endpoint_url", "predict_url", "stable_revision", "canary_revision", "decision"])
    return outputs(result.url, result.predict_url, result.stable_revision, result.canary_revision,
                   result.decision.action)
