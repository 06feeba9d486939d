"""The canary policy: smoke requests, replayed traffic, and the gates that promote or roll back.

A new model goes out as a canary next to the stable one. Smoke requests check that it answers at all;
then the same window of replayed evaluation requests goes to both (interleaved, same concurrency) and
gates compare them: the canary's error rate, its p99 latency (see :func:`latency_gate`), and its
quality on the labelled rows both answered (AUC, log loss, RMSE, ... by name, see
:mod:`dmlops.serving.quality`), not worse than the stable's by more than a stated margin once there are
at least ``min_labelled_rows``. The shift of its prediction distribution from the stable one's
(population stability index) is a warning, since a better model predicts differently; it is a gate only
from ``prediction_shift_min_rows`` predictions on. All gates pass -> promote; any fails -> roll back.
The evidence is kept for the KFP UI.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import requests
from scipy.stats import mannwhitneyu

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.privacy import encryption
from dmlops.serving.answers import answer_value
from dmlops.serving.features import FeatureContract
from dmlops.serving.quality import parse_quality_gates
from dmlops.training.data import Target

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
    max_p99_ratio: float = 2.0
    p99_floor_ms: float = 20.0
    latency_min_requests: int = 100
    latency_significance: float = 0.01
    max_prediction_shift: float = 0.25
    prediction_shift_min_rows: int = 0
    quality_gates: str = ""
    min_labelled_rows: int = 100
    request_timeout_s: float = 10.0
    # how long a just rolled-out endpoint may take to answer its readiness URL before the smoke test
    route_settle_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.canary_percent < 100:
            raise ValueError(f"canary_percent must be between 1 and 99, got {self.canary_percent}")
        if min(self.smoke_requests, self.window_requests, self.rows_per_request, self.concurrency) < 1:
            raise ValueError("smoke_requests, window_requests, rows_per_request and concurrency must be at least 1")
        if self.latency_min_requests < 1 or not 0 < self.latency_significance < 1:
            raise ValueError("latency_min_requests must be at least 1 and latency_significance between 0 and 1")
        if self.min_labelled_rows < 1 or self.prediction_shift_min_rows < 0:
            raise ValueError("min_labelled_rows must be at least 1 and prediction_shift_min_rows at least 0")
        parse_quality_gates(self.quality_gates)  # a bad spec fails here, before any server starts


@dataclass
class TrafficStats:
    """What one endpoint did with a batch of requests."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    predictions: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)
    row_predictions: dict[int, Any] = field(default_factory=dict)  # a number, or class probabilities

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


@dataclass
class ReplayRows:
    """Requests cut from an evaluation set: each request's rows (feature columns only), the evaluation-set
    index of each row, and the label of each evaluation row by index (NaN where null; None when the
    set has no label column)."""

    batches: list[list[dict[str, Any]]]
    row_ids: list[list[int]]
    labels: np.ndarray | None = None


def replay_requests(eval_uri: str, features: list[str], count: int, rows_per_request: int,
                    label: str = "", classes: list[Any] | None = None) -> ReplayRows:
    """``count`` requests of ``rows_per_request`` rows each from an evaluation Parquet dataset, cycling
    through its rows; only the model's feature columns are kept, and the ``label`` column when the set
    has it (a number per row, or with ``classes`` the index of the row's class; NaN for a null or
    unknown class)."""
    filesystem, path = storage.filesystem(eval_uri)
    if not filesystem.exists(path):
        raise DataError(f"replay data {eval_uri} does not exist; pass the evaluation dataset")
    schema = encryption.read_schema(eval_uri)  # decrypted when encrypted
    missing = [name for name in features if name not in schema.names]
    if missing:
        raise DataError(f"replay data {eval_uri} lacks the model's feature columns {missing}")
    needed = count * rows_per_request
    labelled = bool(label) and label in schema.names
    table = encryption.read_table(eval_uri, [*features, *([label] if labelled else [])])
    table = table.slice(0, needed)
    if not table.num_rows:
        raise DataError(f"replay data {eval_uri} has no rows")
    labels = None
    if labelled:
        if classes:
            index = {name: position for position, name in enumerate(classes)}
            labels = np.array([index.get(value, math.nan) for value in table[label].to_pylist()], np.float64)
        else:
            labels = np.asarray(table[label].cast("float64").to_numpy(zero_copy_only=False), np.float64)
        table = table.drop_columns([label])
    rows = table.to_pylist()
    ids = [index % len(rows) for index in range(needed)]
    starts = range(0, needed, rows_per_request)
    return ReplayRows([[rows[i] for i in ids[start : start + rows_per_request]] for start in starts],
                      [ids[start : start + rows_per_request] for start in starts], labels)


def _sigmoid(values: list[float]) -> list[float]:
    return (1.0 / (1.0 + np.exp(-np.asarray(values, np.float64)))).tolist()


def _flat(values: Any) -> list[float]:
    return np.asarray(values, np.float64).reshape(-1).tolist()


@dataclass(frozen=True)
class RequestFormat:
    """How replayed rows are sent to a serving runtime and its answer read back: ``path`` (after the base
    URL, ``{name}`` = model name), ``encode(rows) -> body``, ``decode(document) -> one answer per row`` (a
    probability or a value, or a classifier's class probabilities; ValueError for an invalid answer)."""

    path: str
    encode: Callable[[list[dict[str, Any]]], dict[str, Any]]
    decode: Callable[[dict[str, Any]], list[Any]]
    ready_path: str = "/v1/models/{name}"  # the protocol's model readiness (V1 model status; V2 .../ready)

    def url(self, base_url: str, model_name: str) -> str:
        return base_url.rstrip("/") + self.path.format(name=model_name)

    def ready_url(self, base_url: str, model_name: str) -> str:
        return base_url.rstrip("/") + self.ready_path.format(name=model_name)


def wait_until_answering(base_url: str, model_name: str, request: RequestFormat, timeout_s: float,
                         headers: dict[str, str] | None = None) -> bool:
    """Poll the model's readiness URL until it answers 200, for at most ``timeout_s``; whether it did.

    A route that has just become Ready can still answer 404 (no route for the host yet: an Envoy
    gateway's empty 404) or 503, or refuse connections, while the mesh and kube-proxy take the change in.
    Smoke requests sent in that gap would judge the routing, not the model."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(request.ready_url(base_url, model_name), headers=headers, timeout=5).status_code == 200:
                return True
        except requests.RequestException:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(1.0)


def dmlops_v1(target: Target | None = None) -> RequestFormat:
    """The dmlops runtime's V1 format for a model of ``target``'s task (default binary): each answer row
    read by :func:`dmlops.serving.answers.answer_value`."""
    target = target or Target()
    return RequestFormat("/v1/models/{name}:predict", lambda rows: {"instances": rows},
                         lambda document: [answer_value(target, entry) for entry in document["predictions"]])


DMLOPS_V1 = dmlops_v1()


def request_format(runtime: str, contract: FeatureContract | None = None, target: Target | None = None) -> RequestFormat:
    """The request format of a runtime: ``dmlops`` takes feature rows (or a user's export's inputs) and
    answers by ``target``'s task; ``triton`` (V2) and ``tfserving`` (V1) take the encoded
    ``numeric``/``categorical`` tensors, encoded here with ``contract``, and answer logits."""
    if runtime == "dmlops":
        return dmlops_v1(target)
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
                             lambda document: _sigmoid(_flat(document["outputs"][0]["data"])),
                             "/v2/models/{name}/ready")
    if runtime == "tfserving":
        def encode_v1(rows: list[dict[str, Any]]) -> dict[str, Any]:
            numeric, categorical = contract.encode(rows)
            return {"instances": [{"numeric": n, "categorical": c} for n, c in zip(numeric.tolist(), categorical.tolist())]}

        return RequestFormat("/v1/models/{name}:predict", encode_v1,
                             lambda document: _sigmoid(_flat(document["predictions"])))
    raise ValueError(f"runtime {runtime!r}: choose dmlops, triton or tfserving")


def _answer(response: requests.Response, rows: int, request: RequestFormat) -> list[Any]:
    """The answers in a response, one per row; ValueError for an error status or a malformed answer."""
    if response.status_code != 200:
        raise ValueError(f"HTTP {response.status_code}: {response.text[:200]}")
    try:
        values = request.decode(response.json())
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"malformed answer ({error}): {response.text[:100]}") from None
    if len(values) != rows:
        raise ValueError(f"expected {rows} predictions, got {len(values)}: {values[:5]}")
    return values


def replay(
    targets: dict[str, str],
    batches: list[list[dict[str, Any]]],
    *,
    concurrency: int,
    timeout_s: float,
    request: RequestFormat = DMLOPS_V1,
    headers: dict[str, str] | None = None,
    row_ids: list[list[int]] | None = None,
) -> dict[str, TrafficStats]:
    """Send every batch of rows to every target URL, interleaved, ``concurrency`` at a time, with
    ``headers`` (e.g. ``Authorization``) on each request. With ``row_ids`` (one id per row) each
    target's answers are also kept by row id."""
    stats = {name: TrafficStats() for name in targets}
    lock = threading.Lock()
    local = threading.local()

    def send(name: str, index: int) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        rows = batches[index]
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
                # the distribution compared: the answer, or a classifier's highest class probability
                record.predictions.extend(max(value) if isinstance(value, list) else value for value in values)
                if row_ids is not None:
                    record.row_predictions.update(zip(row_ids[index], values))

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for future in [pool.submit(send, name, index) for index in range(len(batches)) for name in targets]:
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
    """One check of the canary: its measured value, the limit (an upper bound, or a lower bound when
    ``higher_is_better``), and whether it passed."""

    name: str
    value: float
    limit: float
    passed: bool
    higher_is_better: bool = False

    def failure(self) -> str:
        return f"{self.name} = {self.value:.4g} {'below' if self.higher_is_better else 'exceeds'} {self.limit:.4g}"


@dataclass
class Decision:
    """The rollout's verdict with its evidence."""

    action: str
    reasons: list[str]
    gates: list[Gate]
    smoke: TrafficStats
    stable: TrafficStats | None = None
    canary: TrafficStats | None = None
    warnings: list[str] = field(default_factory=list)
    quality: dict[str, dict[str, float]] = field(default_factory=dict)
    prediction_shift: float = math.nan
    latency_rule: str = ""

    @property
    def promoted(self) -> bool:
        return self.action in (PROMOTE, FIRST_DEPLOY)

    def metrics(self) -> dict[str, float]:
        """Scalar evidence for a KFP ``Metrics`` artifact."""
        values = {"promoted": float(self.promoted), "smoke_error_rate": self.smoke.error_rate,
                  "prediction_shift_psi": self.prediction_shift}
        values.update({f"gate_{gate.name}": gate.value for gate in self.gates})
        for role, figures in self.quality.items():
            values.update({f"{role}_{name}": value for name, value in figures.items()})
        for role, stats in (("stable", self.stable), ("canary", self.canary)):
            if stats is not None:
                values.update({f"{role}_{key}": float(value) for key, value in stats.summary().items()})
        return {key: value for key, value in values.items() if math.isfinite(value)}

    def markdown(self, title: str, details: dict[str, str]) -> str:
        """A report for the KFP UI: the decision, the gates and both endpoints' traffic."""
        lines = [f"# {title}", "", f"**Decision: {self.action}**", ""]
        lines += [f"- {reason}" for reason in self.reasons] + [""]
        if self.warnings:
            lines += ["## Warnings", "", *[f"- {warning}" for warning in self.warnings], ""]
        lines += ["| | |", "|---|---|", *[f"| {key} | {value} |" for key, value in details.items()], ""]
        if self.gates:
            lines += ["## Gates", "", "| gate | value | limit | result |", "|---|---:|---:|---|"]
            lines += [f"| {gate.name} | {gate.value:.4g} | {'≥' if gate.higher_is_better else '≤'} {gate.limit:.4g} | "
                      f"{'pass' if gate.passed else 'FAIL'} |" for gate in self.gates]
            lines.append("")
            if self.latency_rule:
                lines += [self.latency_rule + ".", ""]
        if self.quality:
            names = sorted({name for figures in self.quality.values() for name in figures})
            lines += ["## Quality on the labelled rows both answered", "", "| | " + " | ".join(names) + " |",
                      "|---|" + "---:|" * len(names)]
            lines += [f"| {role} | " + " | ".join(f"{figures.get(name, math.nan):.4g}" for name in names) + " |"
                      for role, figures in self.quality.items()]
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


def _quality_gates(policy: RolloutPolicy, stable: TrafficStats, canary: TrafficStats, labels: np.ndarray | None,
                   task: str) -> tuple[list[Gate], list[str], dict[str, dict[str, float]]]:
    """The quality gates on the labelled rows both models answered, the warnings when they cannot be
    judged, and both models' figures."""
    if labels is None:
        return [], ["quality not judged: the replayed rows have no label column"], {}
    rows = sorted(row for row in stable.row_predictions.keys() & canary.row_predictions.keys()
                  if not math.isnan(labels[row]))
    if len(rows) < policy.min_labelled_rows:
        return [], [f"quality not judged: {len(rows)} labelled rows answered by both models, fewer than "
                    f"min_labelled_rows = {policy.min_labelled_rows}"], {}
    truth = labels[rows]
    answers = {role: np.array([stats.row_predictions[row] for row in rows])
               for role, stats in (("stable", stable), ("canary", canary))}
    gates, warnings = [], []
    quality: dict[str, dict[str, float]] = {role: {"labelled_rows": float(len(rows))} for role in ("stable", "canary")}
    for gate in parse_quality_gates(policy.quality_gates, task):
        name = gate.metric.name
        stable_value, canary_value = (gate.metric.compute(truth, answers[role]) for role in ("stable", "canary"))
        quality["stable"][name], quality["canary"][name] = stable_value, canary_value
        if not math.isfinite(stable_value):
            warnings.append(f"{name} not judged: undefined on these {len(rows)} rows (e.g. a single class)")
            continue
        gates.append(Gate(name, canary_value, gate.limit(stable_value), gate.passes(canary_value, stable_value),
                          gate.metric.higher_is_better))
    return gates, warnings, quality


def latency_rule(policy: RolloutPolicy) -> str:
    """The p99 latency gate's rule in words, for the deploy report."""
    return (f"p99 latency: judged from {policy.latency_min_requests} successful requests per endpoint; the canary "
            f"fails when its p99 exceeds min({policy.max_p99_ms:g} ms, max({policy.max_p99_ratio:g} x the stable's "
            f"p99, the stable's p99 + {policy.p99_floor_ms:g} ms)) and its latencies are significantly higher than "
            f"the stable's (one-sided Mann-Whitney U test, p < {policy.latency_significance:g})")


def latency_gate(policy: RolloutPolicy, stable: TrafficStats, canary: TrafficStats) -> tuple[list[Gate], list[str]]:
    """The p99 latency gate (:func:`latency_rule`), or a warning when either endpoint answered fewer than
    ``latency_min_requests``.

    A p99 of a few hundred requests rests on their few slowest, which a busy CPU stretches for either
    endpoint by chance; so the p99 says how much slower (a ratio of the stable's p99 and an absolute floor
    above it, both needed) and a rank test on all the interleaved requests says whether the canary is
    slower at all. A stall longer than a slower canary's own latency still hides it in the p99: then the
    p99 did not move past the limit, and the gate passes."""
    answered = min(len(stable.latencies_ms), len(canary.latencies_ms))
    if answered < policy.latency_min_requests:
        return [], [f"p99 latency not judged: {answered} successful requests per endpoint, fewer than "
                    f"latency_min_requests = {policy.latency_min_requests}"]
    stable_p99, canary_p99 = stable.percentile_ms(99), canary.percentile_ms(99)
    limit = min(policy.max_p99_ms, max(policy.max_p99_ratio * stable_p99, stable_p99 + policy.p99_floor_ms))
    rank_test = mannwhitneyu(canary.latencies_ms, stable.latencies_ms, alternative="greater")
    slower = canary_p99 > limit and rank_test.pvalue < policy.latency_significance
    return [Gate("p99_ms", canary_p99, limit, not slower)], []


def judge(policy: RolloutPolicy, smoke: TrafficStats, stable: TrafficStats, canary: TrafficStats,
          labels: np.ndarray | None = None, task: str = "binary") -> Decision:
    """Apply the gates to a canary's window next to the stable model's; ``labels`` are the replayed
    evaluation rows' labels by row id (see :class:`ReplayRows`), ``task`` picks the default quality gates."""
    gates = [Gate("error_rate", canary.error_rate, policy.max_error_rate, canary.error_rate <= policy.max_error_rate)]
    latency, warnings = latency_gate(policy, stable, canary)
    gates += latency
    quality_gates, quality_warnings, quality = _quality_gates(policy, stable, canary, labels, task)
    gates += quality_gates
    warnings += quality_warnings
    shift = population_stability_index(stable.predictions, canary.predictions)
    shift_rows = min(len(stable.predictions), len(canary.predictions))
    if policy.prediction_shift_min_rows and shift_rows >= policy.prediction_shift_min_rows:
        gates.append(Gate("prediction_shift_psi", shift, policy.max_prediction_shift,
                          shift <= policy.max_prediction_shift))
    elif shift > policy.max_prediction_shift:
        warnings.append(f"prediction shift: PSI of the canary's predictions against the stable's = {shift:.4g} "
                        f"(over {policy.max_prediction_shift:.4g}); a warning, not a gate")
    failed = [gate for gate in gates if not gate.passed]
    reasons = [gate.failure() for gate in failed] or [
        f"all {len(gates)} gates passed over {canary.requests} replayed requests"
    ]
    return Decision(ROLLBACK if failed else PROMOTE, reasons, gates, smoke, stable, canary, warnings, quality, shift,
                    latency_rule(policy))
