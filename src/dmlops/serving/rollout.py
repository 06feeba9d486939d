"""The canary policy: smoke requests, replayed traffic, and the gates that promote or roll back.

A new model goes out as a canary next to the stable one. Smoke requests check that it answers at all;
then the same window of replayed evaluation requests goes to both (interleaved, same concurrency) and
three gates compare them: the canary's error rate, its p99 latency (absolute and against the stable
one's), and the shift of its prediction distribution from the stable one's (population stability
index). All gates pass -> promote; any fails -> roll back. The evidence is kept for the KFP UI.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow.parquet as pq
import requests

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.serving.features import FeatureContract

PROMOTE, ROLLBACK, FIRST_DEPLOY = "promote", "rollback", "first-deploy"
_MAX_ERROR_SAMPLES = 5


@dataclass
class RolloutPolicy:
    """How a canary is tested and judged. Latencies in milliseconds."""

    canary_percent: int = 10
    smoke_requests: int = 10
    window_requests: int = 200
    rows_per_request: int = 1
    concurrency: int = 4
    max_error_rate: float = 0.0
    max_p99_ms: float = 500.0
    max_p99_ratio: float = 3.0
    p99_slack_ms: float = 5.0
    max_prediction_shift: float = 0.25
    request_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.canary_percent < 100:
            raise ValueError(f"canary_percent must be between 1 and 99, got {self.canary_percent}")
        if min(self.smoke_requests, self.window_requests, self.rows_per_request, self.concurrency) < 1:
            raise ValueError("smoke_requests, window_requests, rows_per_request and concurrency must be at least 1")


@dataclass
class TrafficStats:
    """What one endpoint did with a batch of requests."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def percentile_ms(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests, "errors": self.errors, "error_rate": self.error_rate,
            "p50_ms": self.percentile_ms(50), "p99_ms": self.percentile_ms(99),
            "mean_prediction": float(np.mean(self.predictions)) if self.predictions else math.nan,
        }


def replay_requests(eval_uri: str, features: list[str], count: int, rows_per_request: int) -> list[list[dict[str, Any]]]:
    """``count`` requests of ``rows_per_request`` rows each from an evaluation Parquet dataset, cycling
    through its rows; only the model's feature columns are kept."""
    filesystem, path = storage.filesystem(eval_uri)
    if not filesystem.exists(path):
        raise DataError(f"replay data {eval_uri} does not exist; pass the evaluation dataset")
    schema = pq.ParquetDataset(path, filesystem=filesystem).schema
    missing = [name for name in features if name not in schema.names]
    if missing:
        raise DataError(f"replay data {eval_uri} lacks the model's feature columns {missing}")
    needed = count * rows_per_request
    table = pq.read_table(path, filesystem=filesystem, columns=features)
    rows = table.slice(0, needed).to_pylist()
    if not rows:
        raise DataError(f"replay data {eval_uri} has no rows")
    rows = [rows[index % len(rows)] for index in range(needed)]
    return [rows[start : start + rows_per_request] for start in range(0, needed, rows_per_request)]


def _sigmoid(values: list[float]) -> list[float]:
    return (1.0 / (1.0 + np.exp(-np.asarray(values, np.float64)))).tolist()


def _flat(values: Any) -> list[float]:
    return np.asarray(values, np.float64).reshape(-1).tolist()


@dataclass(frozen=True)
class RequestFormat:
    """How replayed rows are sent to a serving runtime and its answer read back as probabilities:
    ``path`` (after the base URL, ``{name}`` = model name), ``encode(rows) -> body``,
    ``decode(document) -> probabilities``."""

    path: str
    encode: Callable[[list[dict[str, Any]]], dict[str, Any]]
    decode: Callable[[dict[str, Any]], list[float]]

    def url(self, base_url: str, model_name: str) -> str:
        return base_url.rstrip("/") + self.path.format(name=model_name)


DMLOPS_V1 = RequestFormat(
    "/v1/models/{name}:predict", lambda rows: {"instances": rows}, lambda document: _flat(document["predictions"]),
)


def request_format(runtime: str, contract: FeatureContract | None = None) -> RequestFormat:
    """The request format of a runtime: ``dmlops`` takes feature rows; ``triton`` (V2) and ``tfserving``
    (V1) take the encoded ``numeric``/``categorical`` tensors, encoded here with ``contract``, and answer
    logits."""
    if runtime == "dmlops":
        return DMLOPS_V1
    if contract is None:
        raise ValueError(f"runtime {runtime!r} takes encoded tensors: pass the model's feature contract")
    if runtime == "triton":
        def encode_v2(rows: list[dict[str, Any]]) -> dict[str, Any]:
            numeric, categorical = contract.encode(rows)
            return {"inputs": [
                {"name": "numeric", "shape": list(numeric.shape), "datatype": "FP32", "data": numeric.reshape(-1).tolist()},
                {"name": "categorical", "shape": list(categorical.shape), "datatype": "INT64",
                 "data": categorical.reshape(-1).tolist()},
            ]}

        return RequestFormat("/v2/models/{name}/infer", encode_v2,
                             lambda document: _sigmoid(_flat(document["outputs"][0]["data"])))
    if runtime == "tfserving":
        def encode_v1(rows: list[dict[str, Any]]) -> dict[str, Any]:
            numeric, categorical = contract.encode(rows)
            return {"instances": [{"numeric": n, "categorical": c} for n, c in zip(numeric.tolist(), categorical.tolist())]}

        return RequestFormat("/v1/models/{name}:predict", encode_v1,
                             lambda document: _sigmoid(_flat(document["predictions"])))
    raise ValueError(f"runtime {runtime!r}: choose dmlops, triton or tfserving")


def _answer(response: requests.Response, rows: int, request: RequestFormat) -> list[float]:
    """The probabilities in a response; ValueError for an error status or a malformed answer."""
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        values = request.decode(response.json())
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"malformed answer ({error}): {response.text[:100]}") from None
    if len(values) != rows:
        raise ValueError(f"expected {rows} predictions, got {len(values)}: {values[:5]}")
    if not all(0.0 <= value <= 1.0 for value in values):
        raise ValueError(f"predictions outside [0, 1]: {values[:5]}")
    return values


def replay(
    targets: dict[str, str],
    batches: list[list[dict[str, Any]]],
    *,
    concurrency: int,
    timeout_s: float,
    request: RequestFormat = DMLOPS_V1,
    headers: dict[str, str] | None = None,
) -> dict[str, TrafficStats]:
    """Send every batch of rows to every target URL, interleaved, ``concurrency`` at a time, with
    ``headers`` (e.g. ``Authorization``) on each request."""
    stats = {name: TrafficStats() for name in targets}
    lock = threading.Lock()
    local = threading.local()

    def send(name: str, rows: list[dict[str, Any]]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        body = request.encode(rows)
        started = time.perf_counter()
        try:
            values = _answer(session.post(targets[name], json=body, headers=headers, timeout=timeout_s), len(rows),
                             request)
            error = ""
        except (requests.RequestException, ValueError) as failure:
            values, error = [], str(failure)
        elapsed_ms = (time.perf_counter() - started) * 1000
        with lock:
            record = stats[name]
            record.requests += 1
            if error:
                record.errors += 1
                if len(record.error_samples) < _MAX_ERROR_SAMPLES:
                    record.error_samples.append(error)
            else:
                record.latencies_ms.append(elapsed_ms)
                record.predictions.extend(values)

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(send, name, rows) for rows in batches for name in targets]:
            future.result()
    return stats


def population_stability_index(reference: list[float], current: list[float], bins: int = 10) -> float:
    """PSI of ``current`` against ``reference`` over the reference's quantile bins (0 = same distribution;
    above 0.25 is conventionally a major shift)."""
    if not reference or not current:
        return math.inf
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    expected = np.clip(expected / len(reference), 1e-4, None)
    actual = np.clip(actual / len(current), 1e-4, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


@dataclass
class Gate:
    """One check of the canary: its measured value, the limit, and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool


@dataclass
class Decision:
    """The rollout's verdict with its evidence."""

    action: str
    reasons: list[str]
    gates: list[Gate]
    smoke: TrafficStats
    stable: TrafficStats | None = None
    canary: TrafficStats | None = None

    @property
    def promoted(self) -> bool:
        return self.action in (PROMOTE, FIRST_DEPLOY)

    def metrics(self) -> dict[str, float]:
        """Scalar evidence for a KFP ``Metrics`` artifact."""
        values = {"promoted": float(self.promoted), "smoke_error_rate": self.smoke.error_rate}
        values.update({f"gate_{gate.name}": gate.value for gate in self.gates})
        for role, stats in (("stable", self.stable), ("canary", self.canary)):
            if stats is not None:
                values.update({f"{role}_{key}": float(value) for key, value in stats.summary().items()})
        return {key: value for key, value in values.items() if math.isfinite(value)}

    def markdown(self, title: str, details: dict[str, str]) -> str:
        """A report for the KFP UI: the decision, the gates and both endpoints' traffic."""
        lines = [f"# {title}", "", f"**Decision: {self.action}**", ""]
        lines += [f"- {reason}" for reason in self.reasons] + [""]
        lines += ["| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in details.items()], ""]
        if self.gates:
            lines += ["## Gates", "", "| gate | value | limit | result |", "|---|---:|---:|---|"]
            lines += [f"| {gate.name} | {gate.value:.4g} | {gate.limit:.4g} | {'pass' if gate.passed else 'FAIL'} |"
                      for gate in self.gates]
            lines.append("")
        lines += ["## Traffic", "", "| | requests | errors | error rate | p50 ms | p99 ms | mean prediction |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for role, stats in (("smoke (canary)", self.smoke), ("stable", self.stable), ("canary", self.canary)):
            if stats is not None:
                summary = stats.summary()
                lines.append(
                    f"| {role} | {stats.requests} | {stats.errors} | {summary['error_rate']:.2%} | "
                    f"{summary['p50_ms']:.2f} | {summary['p99_ms']:.2f} | {summary['mean_prediction']:.4f} |"
                )
        samples = [*self.smoke.error_samples, *(self.canary.error_samples if self.canary else [])]
        if samples:
            lines += ["", "## Example errors", ""] + [f"- `{sample}`" for sample in samples[:_MAX_ERROR_SAMPLES]]
        return "\n".join(lines) + "\n"


def smoke_failed(smoke: TrafficStats) -> str:
    """Why the smoke test failed, or '' when every smoke request succeeded."""
    if smoke.errors:
        return f"smoke test: {smoke.errors} of {smoke.requests} requests failed (first: {smoke.error_samples[0]})"
    return ""


def judge(policy: RolloutPolicy, smoke: TrafficStats, stable: TrafficStats, canary: TrafficStats) -> Decision:
    """Apply the gates to a canary's window next to the stable model's."""
    p99_limit = min(policy.max_p99_ms, policy.max_p99_ratio * stable.percentile_ms(99) + policy.p99_slack_ms)
    shift = population_stability_index(stable.predictions, canary.predictions)
    canary_p99 = canary.percentile_ms(99)
    gates = [
        Gate("error_rate", canary.error_rate, policy.max_error_rate, canary.error_rate <= policy.max_error_rate),
        Gate("p99_ms", canary_p99, p99_limit, math.isfinite(canary_p99) and canary_p99 <= p99_limit),
        Gate("prediction_shift_psi", shift, policy.max_prediction_shift, shift <= policy.max_prediction_shift),
    ]
    failed = [gate for gate in gates if not gate.passed]
    reasons = [f"{gate.name} = {gate.value:.4g} exceeds {gate.limit:.4g}" for gate in failed] or [
        f"all {len(gates)} gates passed over {canary.requests} replayed requests"
    ]
    return Decision(ROLLBACK if failed else PROMOTE, reasons, gates, smoke, stable, canary)
