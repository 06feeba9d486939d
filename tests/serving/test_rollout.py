"""The canary policy without servers: prediction shift, gates, request formats of each runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from serving_helpers import offline_probabilities
from dmlops.serving.features import FeatureContract
from dmlops.serving.rollout import (
    PROMOTE,
    ROLLBACK,
    RolloutPolicy,
    TrafficStats,
    judge,
    population_stability_index,
    replay_requests,
    request_format,
)


def test_population_stability_index():
    rng = np.random.default_rng(0)
    reference = rng.beta(2, 5, 2000).tolist()
    assert population_stability_index(reference, rng.beta(2, 5, 2000).tolist()) < 0.02
    assert population_stability_index(reference, rng.beta(5, 2, 2000).tolist()) > 1.0
    assert population_stability_index(reference, [0.99] * 100) > 1.0
    assert population_stability_index(reference, []) == float("inf")


def stats(latency_ms: float, predictions: list[float], errors: int = 0) -> TrafficStats:
    return TrafficStats(requests=len(predictions) + errors, errors=errors,
                        latencies_ms=[latency_ms] * len(predictions), predictions=predictions)


def test_gates():
    policy = RolloutPolicy(max_error_rate=0.01, max_p99_ms=100, max_p99_ratio=2.0, p99_floor_ms=1.0)
    rng = np.random.default_rng(1)
    stable = stats(4.0, rng.beta(2, 5, 500).tolist())
    smoke = stats(4.0, [0.5] * 5)
    healthy = judge(policy, smoke, stable, stats(5.0, rng.beta(2, 5, 500).tolist()))
    assert healthy.action == PROMOTE and [gate.passed for gate in healthy.gates] == [True, True]
    assert healthy.warnings == ["quality not judged: the replayed rows have no label column"]
    slow = judge(policy, smoke, stable, stats(12.0, rng.beta(2, 5, 500).tolist()))
    assert slow.action == ROLLBACK and slow.reasons == ["p99_ms = 12 exceeds 8"]
    failing = judge(policy, smoke, stable, stats(4.0, rng.beta(2, 5, 490).tolist(), errors=10))
    assert failing.action == ROLLBACK and failing.gates[0].value == pytest.approx(0.02)
    assert RolloutPolicy().max_error_rate == 0.0
    with pytest.raises(ValueError, match="canary_percent"):
        RolloutPolicy(canary_percent=100)


def contended(rng: np.random.Generator, requests: int, median_ms: float, stall_rate: float) -> TrafficStats:
    """Latencies on a busy CPU: lognormal jitter around the model's median, and now and then the process
    descheduled for 10 to 200 ms."""
    latencies = median_ms * np.exp(rng.normal(0, 0.3, requests)) + \
        (rng.random(requests) < stall_rate) * rng.uniform(10, 200, requests)
    return TrafficStats(requests=requests, latencies_ms=latencies.tolist(), predictions=[0.5] * requests)


def test_latency_gate_under_cpu_contention():
    """An equally fast canary is not rolled back for the stalls a busy CPU spreads over both endpoints
    (the former rule, p99 <= 3 x the stable's + 5 ms, rolled back several of the same 30 windows); a canary
    3x slower is rolled back in every window."""
    policy, smoke = RolloutPolicy(), stats(3.0, [0.5] * 5)
    equal, former_rule, slower = [], 0, []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        stable, canary = contended(rng, 200, 3.0, 0.02), contended(rng, 200, 3.0, 0.02)
        equal.append(judge(policy, smoke, stable, canary).action)
        former_rule += canary.percentile_ms(99) > 3 * stable.percentile_ms(99) + 5
        stable, canary = contended(rng, 200, 15.0, 0.002), contended(rng, 200, 45.0, 0.002)
        slower.append(judge(policy, smoke, stable, canary))
    assert equal == [PROMOTE] * 30 and former_rule >= 3
    assert [decision.action for decision in slower] == [ROLLBACK] * 30
    assert all(decision.reasons[0].startswith("p99_ms = ") for decision in slower)
    report = slower[0].markdown("t", {})
    assert "one-sided Mann-Whitney U test, p < 0.01" in report and "stable's p99 + 20 ms" in report
    # 3x slower but within the absolute floor (3 -> 9 ms): not worth a rollback
    fast = judge(policy, smoke, stats(3.0, [0.5] * 200), contended(np.random.default_rng(0), 200, 9.0, 0.0))
    assert fast.action == PROMOTE
    # too few requests: the p99 is not judged, and the report says so
    few = judge(policy, smoke, stats(3.0, [0.5] * 50), stats(300.0, [0.5] * 50))
    assert few.action == PROMOTE and [gate.name for gate in few.gates] == ["error_rate"]
    assert few.warnings[0].startswith("p99 latency not judged: 50 successful requests")


def labelled(predictions: dict[int, float], latency_ms: float = 4.0) -> TrafficStats:
    return TrafficStats(requests=len(predictions), latencies_ms=[latency_ms] * len(predictions),
                        predictions=list(predictions.values()), row_predictions=predictions)


def test_a_better_canary_with_shifted_predictions_is_promoted_with_a_warning():
    """119 labelled rows: the stable model is right on 118 (accuracy 0.99) with soft probabilities, the
    canary on all (1.0) with confident ones, so its predictions shift (PSI > 3) although it is better."""
    labels = np.array([1.0] * 60 + [0.0] * 59)
    stable = labelled({row: (0.6 if label else 0.4) for row, label in enumerate(labels)} | {0: 0.35})
    canary = labelled({row: (0.97 if label else 0.03) for row, label in enumerate(labels)})
    decision = judge(RolloutPolicy(), stats(4.0, [0.5] * 5), stable, canary, labels)
    assert decision.action == PROMOTE, decision.reasons
    assert [gate.name for gate in decision.gates] == ["error_rate", "p99_ms", "auc", "log_loss"]
    assert decision.quality["canary"]["auc"] == 1.0 and decision.quality["stable"]["auc"] < 1.0
    assert decision.prediction_shift > 3.0
    assert decision.warnings[0].startswith("prediction shift: PSI") and "not a gate" in decision.warnings[0]
    assert "## Warnings" in decision.markdown("t", {}) and decision.metrics()["canary_auc"] == 1.0
    # the shift gates only when asked to, from a stated number of predictions
    assert judge(RolloutPolicy(prediction_shift_min_rows=100), stats(4.0, [0.5]), stable, canary,
                 labels).reasons == [f"prediction_shift_psi = {decision.prediction_shift:.4g} exceeds 0.25"]
    assert judge(RolloutPolicy(prediction_shift_min_rows=500), stats(4.0, [0.5]), stable, canary,
                 labels).action == PROMOTE


def test_a_worse_canary_is_rolled_back_on_quality_and_few_labels_are_not_judged():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.4).astype(np.float64)
    good = np.clip(labels * 0.6 + rng.random(300) * 0.4, 0, 1)
    stable = labelled(dict(enumerate(good)))
    worse = labelled(dict(enumerate(np.clip(good + rng.normal(0, 0.3, 300), 0.01, 0.99))))
    decision = judge(RolloutPolicy(), stats(4.0, [0.5]), stable, worse, labels)
    assert decision.action == ROLLBACK
    assert [reason.split(" = ")[0] for reason in decision.reasons] == ["auc", "log_loss"]
    assert "auc = " in decision.reasons[0] and " below " in decision.reasons[0]
    # a margin wide enough lets it through; a relative margin is a share of the stable's value
    wide = RolloutPolicy(quality_gates="auc:0.5,log_loss:500%")
    assert judge(wide, stats(4.0, [0.5]), stable, worse, labels).action == PROMOTE
    # labels for only some rows: below the minimum sample size, quality is a warning, not a verdict
    sparse = np.full(300, np.nan)
    sparse[:50] = labels[:50]
    few = judge(RolloutPolicy(min_labelled_rows=100), stats(4.0, [0.5]), stable, worse, sparse)
    assert few.action == PROMOTE and few.warnings[0].startswith("quality not judged: 50 labelled rows")


def test_quality_gate_specs():
    from dmlops.serving.quality import parse_quality_gates

    gates = parse_quality_gates("", "regression")
    assert [(gate.metric.name, gate.margin, gate.relative) for gate in gates] == [("rmse", 0.02, True)]
    assert gates[0].limit(10.0) == pytest.approx(10.2) and gates[0].passes(10.1, 10.0)
    assert parse_quality_gates("auc:0.01")[0].limit(0.8) == pytest.approx(0.79)
    with pytest.raises(ValueError, match="unknown metric 'f1'"):
        RolloutPolicy(quality_gates="f1:0.1")
    with pytest.raises(ValueError, match="give a margin"):
        parse_quality_gates("auc")
    with pytest.raises(ValueError, match="no default quality gates for task 'ranking'"):
        parse_quality_gates("", "ranking")


def test_replay_requests_keep_only_features_and_cycle(data_dir):
    replayed = replay_requests(str(data_dir / "eval.parquet"), ["distance", "origin"], count=130, rows_per_request=2,
                               label="label")
    batches = replayed.batches
    assert len(batches) == 130 and all(len(batch) == 2 for batch in batches)
    assert set(batches[0][0]) == {"distance", "origin"}
    assert batches[60][0] == batches[0][0]  # 120 eval rows, then from the start again
    assert replayed.row_ids[60] == [0, 1] and len(replayed.labels) == 120
    assert set(replayed.labels) == {0.0, 1.0}
    assert replay_requests(str(data_dir / "eval.parquet"), ["distance"], 1, 1, label="absent").labels is None
    with pytest.raises(Exception, match="lacks the model's feature columns \\['nope'\\]"):
        replay_requests(str(data_dir / "eval.parquet"), ["nope"], 1, 1)


@pytest.mark.parametrize("runtime", ["triton", "tfserving"])
def test_tensor_request_formats_carry_what_the_model_needs(runtime, model_dir, eval_rows):
    """Encode rows as the runtime's request, run the exported torch.export program on the tensors in it as
    the runtime would, and read the answer back: the offline probabilities."""
    metadata = json.loads((model_dir / "metadata.json").read_text())
    request = request_format(runtime, FeatureContract.from_metadata(metadata))
    rows = eval_rows[:7]
    body = request.encode(rows)
    module = torch.export.load(str(model_dir / "model.pt2")).module()
    if runtime == "triton":
        tensors = {item["name"]: np.array(item["data"]).reshape(item["shape"]) for item in body["inputs"]}
        assert [item["datatype"] for item in body["inputs"]] == ["FP32", "INT64"]
        numeric, categorical = tensors["numeric"], tensors["categorical"]
    else:
        numeric = np.array([instance["numeric"] for instance in body["instances"]])
        categorical = np.array([instance["categorical"] for instance in body["instances"]])
    logits = module(torch.tensor(numeric, dtype=torch.float32), torch.tensor(categorical, dtype=torch.int64)).tolist()
    answer = ({"outputs": [{"name": "logit", "shape": [7], "datatype": "FP32", "data": logits}]} if runtime == "triton"
              else {"predictions": [[value] for value in logits]})
    np.testing.assert_allclose(request.decode(answer), offline_probabilities(model_dir, rows), rtol=1e-6, atol=1e-7)
    assert request.url("http://svc", "flights") == (
        "http://svc/v2/models/flights/infer" if runtime == "triton" else "http://svc/v1/models/flights:predict")


def test_dmlops_format_and_unknown_runtimes():
    request = request_format("dmlops")
    assert request.encode([{"a": 1}]) == {"instances": [{"a": 1}]}
    assert request.decode({"predictions": [0.25, 0.5]}) == [0.25, 0.5]
    with pytest.raises(ValueError, match="pass the model's feature contract"):
        request_format("triton")
    with pytest.raises(ValueError, match="choose dmlops, triton or tfserving"):
        request_format("seldon", object())


def test_the_smoke_test_waits_for_a_route_still_being_programmed():
    """A route that has just become Ready answers an empty 404 (an Envoy gateway with no route for the host
    yet) for a while: deploy waits for the model's readiness URL before its smoke test."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dmlops.serving.rollout import DMLOPS_V1, replay, wait_until_answering

    programmed_at = time.monotonic() + 2.0

    class Route(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self, body: dict) -> None:
            if time.monotonic() < programmed_at:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self):
            self._answer({"name": "m", "ready": True})

        def do_POST(self):
            rows = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["instances"]
            self._answer({"predictions": [0.5] * len(rows)})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Route)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert wait_until_answering(url, "m", DMLOPS_V1, timeout_s=30)
        smoke = replay({"canary": DMLOPS_V1.url(url, "m")}, [[{"x": 1.0}]] * 5, concurrency=2,
                       timeout_s=10)["canary"]
        assert smoke.errors == 0 and smoke.requests == 5
        programmed_at = time.monotonic() + 60  # a route that never settles: the wait gives up, bounded
        started = time.monotonic()
        assert not wait_until_answering(url, "m", DMLOPS_V1, timeout_s=1.5)
        assert time.monotonic() - started < 30
    finally:
        server.shutdown()
