"""The rollout component: serve a trained model behind an endpoint with a metric-gated canary."""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Metrics, Model, Output

from dmlops.components.images import SERVE_IMAGE


@dsl.component(base_image=SERVE_IMAGE, install_kfp_package=False)
def deploy(
    model: Input[Model],
    eval_data: Input[Dataset],
    endpoint: str,
    metrics: Output[Metrics],
    report: Output[Markdown],
    backend: str = "auto",
    canary_percent: int = 10,
    smoke_requests: int = 10,
    window_requests: int = 200,
    rows_per_request: int = 1,
    concurrency: int = 4,
    max_error_rate: float = 0.0,
    max_p99_ms: float = 500.0,
    max_p99_ratio: float = 3.0,
    max_prediction_shift: float = 0.25,
    storage_uri: str = "",
    runtime: str = "dmlops",
    model_format: str = "",
    deployment_mode: str = "Serverless",
    namespace: str = "",
    service_account: str = "",
    cpu: str = "1",
    memory: str = "1Gi",
    min_replicas: int = 1,
    max_replicas: int = 3,
    feast_config: str = "",
    timeout_seconds: int = 900,
) -> NamedTuple("RolloutOutputs", [("endpoint_url", str), ("predict_url", str), ("stable_revision", str),
                                   ("canary_revision", str), ("decision", str)]):
    """Roll ``model`` out to ``endpoint``: a first deploy goes to 100% after a smoke test; otherwise the
    model goes out as a canary at ``canary_percent``%, smoke requests run, then rows of ``eval_data`` are
    replayed to the stable and the canary and gates on error rate, p99 latency and prediction shift (PSI)
    promote it to 100% or roll it back (the stable keeps 100%).

    ``backend``: ``local`` (two local model servers that outlive the step; ``dmlops serve --stop`` stops
    them), ``kubernetes`` (a KServe InferenceService named ``endpoint``, Serverless with a canary or
    RawDeployment updated in place) or ``auto``. ``storage_uri`` (gs://, s3://, pvc://) repackages the
    model there for ``runtime``: ``dmlops`` (the default; without ``storage_uri`` KServe downloads the model
    artifact itself), ``triton`` or ``tfserving``. ``model_format``: ``native`` or ``onnx``.
    """
    from collections import namedtuple

    from dmlops.platform.backend import resolve_backend
    from dmlops.serving.deploy import deploy as roll_out
    from dmlops.serving.rollout import RolloutPolicy

    policy = RolloutPolicy(
        canary_percent=canary_percent, smoke_requests=smoke_requests, window_requests=window_requests,
        rows_per_request=rows_per_request, concurrency=concurrency, max_error_rate=max_error_rate,
        max_p99_ms=max_p99_ms, max_p99_ratio=max_p99_ratio, max_prediction_shift=max_prediction_shift,
    )
    backend = resolve_backend(backend)
    result = roll_out(
        model.uri if backend == "kubernetes" else model.path, eval_data.path, endpoint, policy,
        backend=backend, storage_uri=storage_uri, runtime=runtime, model_format=model_format,
        deployment_mode=deployment_mode,
        namespace=namespace, service_account=service_account, cpu=cpu, memory=memory,
        min_replicas=min_replicas, max_replicas=max_replicas, feast_config=feast_config,
        timeout_s=float(timeout_seconds),
    )
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
