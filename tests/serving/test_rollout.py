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
    policy = RolloutPolicy(max_error_rate=0.01, max_p99_ms=100, max_p99_ratio=2.0, p99_slack_ms=1.0)
    rng = np.random.default_rng(1)
    stable = stats(4.0, rng.beta(2, 5, 500).tolist())
    smoke = stats(4.0, [0.5] * 5)
    healthy = judge(policy, smoke, stable, stats(5.0, rng.beta(2, 5, 500).tolist()))
    assert healthy.action == PROMOTE and [gate.passed for gate in healthy.gates] == [True, True, True]
    slow = judge(policy, smoke, stable, stats(12.0, rng.beta(2, 5, 500).tolist()))
    assert slow.action == ROLLBACK and slow.reasons == ["p99_ms = 12 exceeds 9"]
    failing = judge(policy, smoke, stable, stats(4.0, rng.beta(2, 5, 490).tolist(), errors=10))
    assert failing.action == ROLLBACK and failing.gates[0].value == pytest.approx(0.02)
    assert RolloutPolicy().max_error_rate == 0.0
    with pytest.raises(ValueError, match="canary_percent"):
        RolloutPolicy(canary_percent=100)


def test_replay_requests_keep_only_features_and_cycle(data_dir):
    batches = replay_requests(str(data_dir / "eval.parquet"), ["distance", "origin"], count=130, rows_per_request=2)
    assert len(batches) == 130 and all(len(batch) == 2 for batch in batches)
    assert set(batches[0][0]) == {"distance", "origin"}
    assert batches[60][0] == batches[0][0]  # 120 eval rows, then from the start again
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
