"""The predictor enforces each feature's training domain (flag, clip or reject), never answers a non-finite
prediction, checks V2 datatypes, keeps request values out of its errors and logs a 400 as one line."""

from __future__ import annotations

import asyncio
import json
import math

import pytest
import requests
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest

from dmlops.serving import metrics
from dmlops.serving.predictor import DmlopsModel
from serving_helpers import ORIGINS

MODEL = "flights-delay"
HUGE = {"distance": 1e308, "dep_hour": 1e40}


@pytest.fixture(scope="module")
def models(model_dir):
    loaded = {}
    for policy in ("flag", "clip", "reject"):
        model = DmlopsModel(f"guarded-{policy}", str(model_dir), domain_policy=policy)
        model.load()
        loaded[policy] = model
    return loaded


def predict(model: DmlopsModel, payload):
    return asyncio.run(model.predict(payload, {}))


def counted(model: str, feature: str, kind: str) -> float:
    return metrics.out_of_domain.labels(model, feature, kind)._value.get()


def test_training_records_each_features_domain(model_dir, data_dir):
    domain = json.loads((model_dir / "metadata.json").read_text())["feature_domain"]
    assert 100 <= domain["distance"]["min"] < domain["distance"]["max"] <= 2500 and domain["distance"]["nulls"]
    assert (domain["dep_hour"]["min"], domain["dep_hour"]["max"], domain["dep_hour"]["nulls"]) == (5, 22, False)
    assert sorted(domain["origin"]["categories"]) == ORIGINS and domain["origin"]["nulls"] is False
    assert domain["carrier"]["nulls"] is True


def test_huge_inputs_never_give_a_non_finite_prediction(models, eval_rows):
    row = dict(eval_rows[0], **HUGE)
    with pytest.raises(InvalidInput, match="no finite prediction") as raised:
        predict(models["flag"], {"instances": [row]})
    assert "1e+308" not in str(raised.value) and "1e+40" not in str(raised.value)
    assert counted("guarded-flag", "distance", "range") == 1 and counted("guarded-flag", "dep_hour", "range") == 1
    (clipped,) = predict(models["clip"], {"instances": [row]})["predictions"]
    domain = models["clip"].model.contract.domain
    inside = dict(row, distance=domain["distance"]["max"], dep_hour=domain["dep_hour"]["max"])
    assert math.isfinite(clipped) and clipped == predict(models["flag"], {"instances": [inside]})["predictions"][0]
    with pytest.raises(InvalidInput, match=r"row 0: feature 'distance' is outside its training range \[\d"):
        predict(models["reject"], {"instances": [row]})


def test_unknown_categories_and_null_rows_are_out_of_domain(models, eval_rows):
    row = eval_rows[0]
    mars, empty = dict(row, origin="Mars"), {name: None for name in row}
    assert len(predict(models["flag"], {"instances": [mars, empty]})["predictions"]) == 2
    assert counted("guarded-flag", "origin", "category") == 1 and counted("guarded-flag", "", "empty") == 1
    with pytest.raises(InvalidInput, match="'origin' has a category the model never saw") as raised:
        predict(models["reject"], {"instances": [mars]})
    assert "Mars" not in str(raised.value)
    with pytest.raises(InvalidInput, match="row 0: every feature is null"):
        predict(models["reject"], {"instances": [empty]})
    with pytest.raises(InvalidInput, match="'dep_hour' is null but was never null in training"):
        predict(models["reject"], {"instances": [dict(row, dep_hour=None)]})
    # inside the domain every policy scores the same
    scored = {policy: predict(model, {"instances": eval_rows[:5]})["predictions"] for policy, model in models.items()
              if policy != "reject"}
    assert scored["flag"] == scored["clip"]


def test_v2_datatypes_are_checked(models, eval_rows):
    def request(datatype: str) -> InferRequest:
        inputs = []
        for name, value in eval_rows[0].items():
            tensor_type = {"distance": datatype, "dep_hour": "INT64", "weekend": "BOOL"}.get(name, "BYTES")
            inputs.append(InferInput(name, [1], tensor_type, [value]))
        return InferRequest(model_name="guarded-flag", infer_inputs=inputs)

    assert predict(models["flag"], request("FP32")).outputs[0].data
    with pytest.raises(InvalidInput, match="datatype 'FOO' is not a V2 datatype"):
        predict(models["flag"], request("FOO"))
    with pytest.raises(InvalidInput, match="datatype BYTES does not fit a float feature"):
        predict(models["flag"], request("BYTES"))


def test_errors_never_echo_request_values(models, eval_rows):
    with pytest.raises(InvalidInput, match="'dep_hour' must be integer or null, got str") as raised:
        predict(models["flag"], {"instances": [dict(eval_rows[0], dep_hour="jane.doe@example.com")]})
    assert "jane.doe" not in str(raised.value)


def test_a_400_logs_one_line_and_metrics_stay_finite(server, eval_rows):
    log = open(server.log_path)
    log.seek(0, 2)
    response = requests.post(server.predict_url, json={"instances": [dict(eval_rows[0], **HUGE)]}, timeout=10)
    assert response.status_code == 400 and "no finite prediction" in response.json()["error"]
    response = requests.post(server.predict_url, json={"instances": [dict(eval_rows[0], dep_hour="secret-value")]})
    assert response.status_code == 400 and "secret-value" not in response.text
    assert requests.post(server.predict_url, json={"instances": eval_rows[:3]}).status_code == 200
    requests.get(f"{server.url}/v2/health/ready")  # one more request: the server has written its log lines
    written = log.read()
    assert "Traceback" not in written and "secret-value" not in written
    assert [line for line in written.splitlines() if f"400 POST /v1/models/{MODEL}:predict" in line].__len__() == 2
    text = requests.get(f"{server.url}/metrics").text
    sums = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("dmlops_serving_prediction_sum")]
    assert sums and all(math.isfinite(value) for value in sums)
    assert f'dmlops_serving_out_of_domain_total{{feature="distance",kind="range",model="{MODEL}"}}' in text
