"""Roll a model out behind an endpoint, locally or on KServe, with the canary policy of
:mod:`dmlops.serving.rollout`.

- Local: the stable and the canary are two local model servers (:mod:`dmlops.serving.local`); promote =
  the canary becomes the stable server, rollback = the canary is stopped. The stable server keeps
  answering throughout.
- KServe, Knative mode: the InferenceService is updated with ``canaryTrafficPercent``; the gates call the
  ``prev`` and ``latest`` revisions through their tag-routing URLs; promote sets the percentage to 100 (the new
  revision takes all traffic), rollback sets it to 0 (the previous revision keeps 100%).
- KServe, Standard mode (raw Deployment): no traffic split, so the update rolls out in place and is
  smoke-tested; a failed smoke test restores the previous spec.

A first deploy (no stable yet) goes to 100% once its smoke test passes; if it fails, the rollout fails.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dmlops.platform.backend import SERVICE_ACCOUNT_DIR
from dmlops.serving.answers import target_of
from dmlops.serving.features import FeatureContract
from dmlops.serving.local import EndpointState, start_server, state_dir, stop_server
from dmlops.serving.packaging import (
    DEPLOYMENT_MODE_ANNOTATION,
    DMLOPS_RUNTIME,
    KNATIVE,
    deployment_mode_name,
    inference_service,
    kserve_storage,
    package_model,
)
from dmlops.serving.rollout import (
    DMLOPS_V1,
    FIRST_DEPLOY,
    PROMOTE,
    ROLLBACK,
    Decision,
    ReplayRows,
    RequestFormat,
    RolloutPolicy,
    TrafficStats,
    judge,
    replay,
    replay_requests,
    request_format,
    smoke_failed,
    wait_until_answering,
)
from dmlops.training.evaluate import tensor_inputs
from dmlops.training.export import METADATA_FILE, fetch


class RolloutFailed(RuntimeError):
    """A first deploy whose smoke test failed: there is no stable model to fall back to."""

    def __init__(self, decision: Decision):
        self.decision = decision
        super().__init__("; ".join(decision.reasons))


@dataclass
class RolloutResult:
    """Where the endpoint is after the rollout, which revisions took part, and the decision. On KServe
    ``url`` is the external URL (``status.url``, through the ingress) and ``predict_url`` the prediction
    URL inside the cluster (on ``status.address.url``); locally both are on 127.0.0.1."""

    backend: str
    endpoint: str
    url: str
    predict_url: str
    stable_revision: str
    canary_revision: str
    decision: Decision
    details: dict[str, str] = field(default_factory=dict)

    def query_hint(self) -> str:
        """A command that queries the endpoint (with a real example row for a local endpoint)."""
        if self.backend == "local":
            return EndpointState.load(self.endpoint).query_command()
        return (f"from a pod in the cluster: curl -s -H 'Content-Type: application/json' "
                f"-d '{{\"instances\": [{{\"<feature>\": <value>, ...}}]}}' {self.predict_url}")

    def markdown(self) -> str:
        details = {"backend": self.backend, "endpoint": self.endpoint, "URL": self.predict_url,
                   "stable revision": self.stable_revision or "-", "canary revision": self.canary_revision or "-",
                   **self.details}
        return self.decision.markdown(f"Rollout of {self.endpoint}", details)


def model_metadata(model_uri: str) -> dict[str, Any]:
    """The metadata.json of the exported model at ``model_uri`` (its files and, with a verification key
    configured, its signature checked against it)."""
    return json.loads((fetch(model_uri) / METADATA_FILE).read_text())


def features_of(metadata: dict[str, Any]) -> list[str]:
    """The feature names of an exported model, in request order; a user's export: its input tensors."""
    if "preprocessing" not in metadata:
        return list(tensor_inputs(metadata))
    inputs = metadata["inputs"]
    return [*inputs["numeric"]["columns"], *inputs["categorical"]["columns"]]


def model_features(model_uri: str) -> list[str]:
    """The feature names of the exported model at ``model_uri``, in request order."""
    return features_of(model_metadata(model_uri))


def label_of(metadata: dict[str, Any]) -> str:
    """The label column an exported model was trained on ("" when a user's export does not say)."""
    return metadata["preprocessing"]["label"] if "preprocessing" in metadata else metadata.get("label", "")


def task_of(metadata: dict[str, Any]) -> str:
    """The task kind of an exported model (:func:`dmlops.serving.answers.target_of`)."""
    return target_of(metadata).task


def classes_of(metadata: dict[str, Any]) -> list[Any] | None:
    """A classifier's classes, by which replayed labels become class indices (None: the labels are
    the indices, or numbers)."""
    return target_of(metadata).classes or None


Batches = list[list[dict[str, Any]]]


def _smoke(url: str, batches: Batches, policy: RolloutPolicy, request: RequestFormat = DMLOPS_V1,
           headers: dict[str, str] | None = None) -> TrafficStats:
    return replay({"canary": url}, batches, concurrency=policy.concurrency, timeout_s=policy.request_timeout_s,
                  request=request, headers=headers)["canary"]


def _split(rows: ReplayRows, policy: RolloutPolicy) -> tuple[Batches, ReplayRows]:
    """The smoke requests and the judged window."""
    cut = policy.smoke_requests
    return rows.batches[:cut], ReplayRows(rows.batches[cut:], rows.row_ids[cut:], rows.labels)


def _judged(stable_url: str, canary_url: str, smoke: TrafficStats, window: ReplayRows, policy: RolloutPolicy,
            task: str, request: RequestFormat = DMLOPS_V1, headers: dict[str, str] | None = None) -> Decision:
    """Replay the window to the stable and the canary and judge the canary."""
    stats = replay({"stable": stable_url, "canary": canary_url}, window.batches,
                   concurrency=policy.concurrency, timeout_s=policy.request_timeout_s, request=request,
                   headers=headers, row_ids=window.row_ids)
    return judge(policy, smoke, stats["stable"], stats["canary"], window.labels, task)


def service_account_headers(service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> dict[str, str]:
    """``Authorization: Bearer <this pod's service-account token>`` when the token is mounted, else none:
    predictors behind Istio's RequestAuthentication (manifests/overlays/multi-user) accept the
    namespace's service-account tokens."""
    token = service_account_dir / "token"
    return {"Authorization": f"Bearer {token.read_text().strip()}"} if token.is_file() else {}


def _prediction_log_args(prediction_log: str) -> tuple[str, ...]:
    return ("--prediction_log", prediction_log) if prediction_log else ()


def _first_deploy_decision(smoke: TrafficStats, reason: str) -> Decision:
    failure = smoke_failed(smoke)
    return Decision(ROLLBACK if failure else FIRST_DEPLOY, [failure or reason], [], smoke)


def deploy_local(
    model_uri: str,
    endpoint: str,
    eval_uri: str,
    policy: RolloutPolicy,
    *,
    model_format: str = "",
    feast_config: str = "",
    prediction_log: str = "",
) -> RolloutResult:
    """Roll ``model_uri`` out to the local endpoint ``endpoint`` (the model is served under that name),
    its server logging every answered request to ``prediction_log`` when given."""
    state = EndpointState.load(endpoint)
    if state.canary is not None:  # left by an interrupted rollout
        stop_server(state.canary)
        state.canary = None
    metadata = model_metadata(model_uri)
    smoke_batches, window = _split(replay_requests(
        eval_uri, features_of(metadata), policy.smoke_requests + policy.window_requests, policy.rows_per_request,
        label_of(metadata), classes_of(metadata)), policy)
    request = request_format(DMLOPS_RUNTIME, target=target_of(metadata))
    canary = start_server(model_uri, endpoint, log_dir=state_dir() / "logs", model_format=model_format,
                          feast_config=feast_config, extra_args=_prediction_log_args(prediction_log))
    state.canary = canary
    state.example = {"instances": smoke_batches[0][:1]}
    state.save()
    smoke = _smoke(canary.predict_url, smoke_batches, policy, request)
    stable = state.stable
    if stable is None:
        decision = _first_deploy_decision(smoke, f"first deploy: smoke test passed ({smoke.requests} requests); 100% to it")
    elif smoke_failed(smoke):
        decision = Decision(ROLLBACK, [smoke_failed(smoke)], [], smoke)
    else:
        decision = _judged(stable.predict_url, canary.predict_url, smoke, window, policy, task_of(metadata), request)
    if decision.promoted:
        state.stable, state.canary = canary, None
        state.save()
        if stable is not None:
            stop_server(stable)
    else:
        state.canary = None
        state.save()
        stop_server(canary)
        if stable is None:
            raise RolloutFailed(decision)
    serving = state.stable
    return RolloutResult(
        "local", endpoint, serving.url, serving.predict_url,
        stable_revision=f"{endpoint}-{serving.port}", canary_revision=f"{endpoint}-{canary.port}",
        decision=decision,
        details={"stable model": stable.model_uri if stable else "-", "canary model": canary.model_uri,
                 "serving model": serving.model_uri, "state file": str(state.path)},
    )


def _read_service(launcher, service: dict[str, Any]) -> dict[str, Any] | None:
    from kubernetes.client.rest import ApiException

    metadata = service["metadata"]
    try:
        return launcher.custom.get_namespaced_custom_object(
            "serving.kserve.io", "v1beta1", metadata["namespace"], "inferenceservices", metadata["name"]
        )
    except ApiException as error:
        if error.status == 404:
            return None
        raise


def _previous(service: dict[str, Any], existing: dict[str, Any]) -> dict[str, Any]:
    """The InferenceService as it was before this rollout: the whole previous spec, labels and annotations
    (the launcher makes the live object equal to what it is given, so nothing of the failed update stays)."""
    metadata = existing["metadata"]
    return {
        "apiVersion": service["apiVersion"], "kind": service["kind"],
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"],
                     "labels": dict(metadata.get("labels") or {}),
                     "annotations": dict(metadata.get("annotations") or {})},
        "spec": copy.deepcopy(existing["spec"]),
    }


def _with_canary(service: dict[str, Any], percent: int | None) -> dict[str, Any]:
    """``service`` with the predictor's canaryTrafficPercent set, or without it (all traffic to the
    latest revision) when ``percent`` is None."""
    updated = copy.deepcopy(service)
    updated["spec"]["predictor"].pop("canaryTrafficPercent", None)
    if percent is not None:
        updated["spec"]["predictor"]["canaryTrafficPercent"] = percent
    return updated


def _host_url(url: str, host: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, host + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))


def cluster_url(status: dict[str, Any]) -> str:
    """The InferenceService's cluster-local URL, ``status.address.url`` (``http://<name>.<namespace>.svc.
    <cluster domain>``): what a pod in the cluster calls. ``status.url`` is on the ingress domain
    (``example.com`` unless an administrator configured DNS for it) and is for clients outside."""
    url = (status.get("address") or {}).get("url", "")
    if not url:
        raise RuntimeError("InferenceService is Ready but has no status.address.url (its cluster-local address)")
    return url


def tag_urls(status: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The predictor's traffic targets by tag (``prev``, ``latest``): revision name and cluster-local URL.

    KServe copies the traffic targets of the predictor's Knative Service; each tag's URL there is on the
    external domain (``http://<tag>-<route>.<namespace>.<ingress domain>``). Knative also makes a Service
    named after the tag's host name in the route's namespace (knative/serving
    pkg/reconciler/route/resources/service.go, MakeK8sPlaceholderService), reachable in the cluster as
    ``<tag>-<route>.<namespace>.svc.<cluster domain>``: the cluster-local URL is that first host label
    with the namespace and cluster domain of the predictor's ``address.url``.
    """
    predictor = (status.get("components") or {}).get("predictor") or {}
    address = urlsplit((predictor.get("address") or {}).get("url", ""))
    domain = (address.hostname or "").partition(".")[2]
    if not domain:
        raise RuntimeError(
            "InferenceService has no status.components.predictor.address.url (its cluster-local address)"
        )
    tags = {}
    for entry in predictor.get("traffic") or []:
        if entry.get("tag") and entry.get("url"):
            label = (urlsplit(entry["url"]).hostname or "").partition(".")[0]
            tags[entry["tag"]] = {"revision": entry.get("revisionName", ""),
                                  "url": _host_url(address.geturl(), f"{label}.{domain}")}
    return tags


def deploy_kubernetes(
    launcher,
    service: dict[str, Any],
    eval_uri: str,
    features: list[str],
    policy: RolloutPolicy,
    *,
    label: str = "",
    task: str = "binary",
    classes: list[Any] | None = None,
    request: RequestFormat = DMLOPS_V1,
    headers: dict[str, str] | None = None,
    timeout_s: float = 900.0,
) -> RolloutResult:
    """Roll the InferenceService dict ``service`` (see :func:`dmlops.serving.packaging.inference_service`)
    out through the platform launcher, judged by ``policy`` on replayed ``eval_uri`` rows sent in the
    runtime's ``request`` format with ``headers``; the ``label`` column of those rows (when given and
    present; class indices by ``classes``) feeds the quality gates of ``task``."""
    name = service["metadata"]["name"]
    smoke_batches, window = _split(replay_requests(
        eval_uri, features, policy.smoke_requests + policy.window_requests, policy.rows_per_request, label, classes),
        policy)
    existing = _read_service(launcher, service)
    knative = deployment_mode_name(service["metadata"]["annotations"][DEPLOYMENT_MODE_ANNOTATION]) == KNATIVE
    previous_uri = ((existing["spec"]["predictor"].get("model") or {}).get("storageUri", "-") if existing
                    else "-")
    details = {"InferenceService": f"{service['metadata']['namespace']}/{name}",
               "stable model": previous_uri,
               "canary model": service["spec"]["predictor"]["model"]["storageUri"]}

    if existing is None or not knative:
        result = launcher.apply(_with_canary(service, None), timeout_s=timeout_s)
        url, internal = result.status.get("url", ""), cluster_url(result.status)
        predictor = (result.status.get("components") or {}).get("predictor") or {}
        revision = predictor.get("latestReadyRevision", "")
        wait_until_answering(internal, name, request, policy.route_settle_s, headers)
        smoke = _smoke(request.url(internal, name), smoke_batches, policy, request, headers)
        if existing is None:
            decision = _first_deploy_decision(smoke, f"first deploy: smoke test passed ({smoke.requests} requests)")
            if not decision.promoted:
                raise RolloutFailed(decision)
        elif smoke_failed(smoke):
            launcher.apply(_previous(service, existing), timeout_s=timeout_s)
            decision = Decision(ROLLBACK, [smoke_failed(smoke), "Standard mode: previous spec restored"], [], smoke)
        else:
            decision = Decision(PROMOTE, [f"Standard mode (no traffic split): updated in place, smoke test passed "
                                          f"({smoke.requests} requests)"], [], smoke)
        return RolloutResult("kubernetes", name, url, request.url(internal, name), revision, "", decision, details)

    result = launcher.apply(_with_canary(service, policy.canary_percent), timeout_s=timeout_s)
    tags = tag_urls(result.status)
    if "prev" not in tags or "latest" not in tags:
        raise RuntimeError(
            f"InferenceService {name}: no 'prev'/'latest' tag URLs in status.components.predictor.traffic; "
            f"the service needs the annotation serving.kserve.io/enable-tag-routing=true (got tags {sorted(tags)})"
        )
    for tag in ("latest", "prev"):
        wait_until_answering(tags[tag]["url"], name, request, policy.route_settle_s, headers)
    smoke = _smoke(request.url(tags["latest"]["url"], name), smoke_batches, policy, request, headers)
    if smoke_failed(smoke):
        decision = Decision(ROLLBACK, [smoke_failed(smoke)], [], smoke)
    else:
        decision = _judged(request.url(tags["prev"]["url"], name), request.url(tags["latest"]["url"], name), smoke,
                           window, policy, task, request, headers)
    final = launcher.apply(_with_canary(service, 100 if decision.promoted else 0), timeout_s=timeout_s)
    url, internal = final.status.get("url", ""), cluster_url(final.status)
    serving_revision = tags["latest" if decision.promoted else "prev"]["revision"]
    return RolloutResult("kubernetes", name, url, request.url(internal, name), serving_revision,
                         tags["latest"]["revision"], decision,
                         {**details, "canary traffic percent": str(policy.canary_percent)})


def deploy(
    model_uri: str,
    eval_uri: str,
    endpoint: str,
    policy: RolloutPolicy,
    *,
    backend: str = "auto",
    storage_uri: str = "",
    runtime: str = DMLOPS_RUNTIME,
    model_format: str = "",
    deployment_mode: str = KNATIVE,
    namespace: str = "",
    service_account: str = "",
    cpu: str = "1",
    memory: str = "1Gi",
    min_replicas: int = 1,
    max_replicas: int = 3,
    feast_config: str = "",
    prediction_log: str = "",
    model_dir: str = "",
    timeout_s: float = 900.0,
) -> RolloutResult:
    """Roll the exported model at ``model_uri`` out to ``endpoint`` on the local or the KServe backend.

    On KServe the model is packaged for ``runtime`` at ``storage_uri`` (for the dmlops runtime the export
    is served where it is when ``storage_uri`` is empty) and the InferenceService ``endpoint`` is created
    or updated in ``namespace`` (default: the pod's own). ``model_dir`` is a local copy of ``model_uri``
    when the step has one (KFP's launcher downloads input artifacts), read instead of downloading it
    again. ``prediction_log``: where the model server logs every request it answers (dmlops runtime).
    A model on KFP's ``minio://`` store is served as ``s3://`` with the credentials of
    :data:`~dmlops.serving.packaging.KFP_ARTIFACT_READER` unless ``service_account`` names another.
    """
    from dmlops.platform.backend import resolve_backend

    model_metadata(model_dir or model_uri)  # an unsigned or tampered model is refused before anything starts
    if resolve_backend(backend) == "local":
        return deploy_local(model_uri, endpoint, eval_uri, policy, model_format=model_format, feast_config=feast_config,
                            prediction_log=prediction_log)
    from dmlops.platform.kubernetes import KubernetesLauncher, current_namespace

    if runtime != DMLOPS_RUNTIME and not storage_uri:
        raise ValueError(f"runtime {runtime!r} needs its own model layout: give storage_uri (gs://, s3://, pvc://)")
    local_copy = model_dir or model_uri
    if storage_uri:
        served = package_model(local_copy, storage_uri, runtime=runtime, model_name=endpoint)
    else:
        served = {"storage_uri": model_uri, "format": "dmlops", "runtime": DMLOPS_RUNTIME, "protocol": "v1"}
    storage, service_account = kserve_storage(served["storage_uri"], service_account)
    metadata = model_metadata(local_copy)
    contract = FeatureContract.from_metadata(metadata) if runtime != DMLOPS_RUNTIME else None
    request = request_format(runtime, contract, target_of(metadata))
    model_args = []
    if runtime == DMLOPS_RUNTIME and model_format:
        model_args = ["--model_format", model_format]
    if feast_config:
        if runtime != DMLOPS_RUNTIME:
            raise ValueError("feast_config: only the dmlops runtime looks up online features")
        model_args += ["--feast_config", feast_config]
    if prediction_log:
        if runtime != DMLOPS_RUNTIME:
            raise ValueError("prediction_log: only the dmlops runtime logs its predictions (others: KServe's logger)")
        model_args += _prediction_log_args(prediction_log)
    service = inference_service(
        endpoint, namespace or current_namespace(), storage, model_format=served["format"],
        runtime=served["runtime"], protocol=served["protocol"], deployment_mode=deployment_mode,
        service_account=service_account, min_replicas=min_replicas, max_replicas=max_replicas, cpu=cpu,
        memory=memory, model_args=model_args,
    )
    return deploy_kubernetes(KubernetesLauncher(), service, eval_uri, features_of(metadata), policy,
                             label=label_of(metadata), task=task_of(metadata), classes=classes_of(metadata),
                             request=request,
                             headers=service_account_headers(), timeout_s=timeout_s)
