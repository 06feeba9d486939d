"""The dmlops predictor in a real kserve.ModelServer over HTTP on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from serving_helpers import offline_probabilities, v2_body

MODEL = "flights-delay"


def test_v1_predictions_equal_offline_predictions(server, model_dir, eval_rows):
    rows = eval_rows[:40]
    response = requests.post(server.predict_url, json={"instances": rows}, timeout=10)
    assert response.status_code == 200, response.text
    served = np.array(response.json()["predictions"])
    # float32 model arithmetic: the same rows in one batch give the same numbers up to rounding
    np.testing.assert_allclose(served, offline_probabilities(model_dir, rows), rtol=1e-6, atol=1e-7)


def test_v1_list_instances_in_feature_order(server, model_dir, eval_rows):
    metadata = json.loads((model_dir / "metadata.json").read_text())
    order = metadata["inputs"]["numeric"]["columns"] + metadata["inputs"]["categorical"]["columns"]
    rows = eval_rows[:3]
    response = requests.post(server.predict_url, json={"instances": [[row[name] for name in order] for row in rows]})
    keyed = requests.post(server.predict_url, json={"instances": rows})
    assert response.status_code == 200 and response.json() == keyed.json()


def test_v2_predictions_and_response_id(server, model_dir, eval_rows):
    rows = eval_rows[:25]
    url = f"{server.url}/v2/models/{MODEL}/infer"
    response = requests.post(url, json=v2_body(rows), timeout=10)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["id"]  # generated: the request had none
    (output,) = document["outputs"]
    assert output["name"] == "probability" and output["shape"] == [25]
    np.testing.assert_allclose(output["data"], offline_probabilities(model_dir, rows), rtol=1e-6, atol=1e-7)
    assert requests.post(url, json=v2_body(rows[:2], "req-42")).json()["id"] == "req-42"
    other = requests.post(url, json=v2_body(rows[:2])).json()["id"]
    assert other != document["id"]


def test_v2_column_shape_n_by_1(server, eval_rows):
    body = v2_body(eval_rows[:3])
    for tensor in body["inputs"]:
        tensor["shape"] = [3, 1]
        tensor["data"] = [[value] for value in tensor["data"]]
    response = requests.post(f"{server.url}/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200, response.text


def _malformed(eval_rows) -> list[tuple[str, str, bytes, str]]:
    row = eval_rows[0]
    v1 = lambda document: json.dumps(document).encode()  # noqa: E731
    v2_missing = v2_body(eval_rows[:2])
    v2_missing["inputs"] = v2_missing["inputs"][1:]
    v2_wrong_type = v2_body(eval_rows[:2])
    v2_wrong_type["inputs"][0]["data"] = ["a", "b"]
    v2_wrong_shape = v2_body(eval_rows[:2])
    v2_wrong_shape["inputs"][0]["shape"] = [2, 3]
    v2_short = v2_body(eval_rows[:2])
    v2_short["inputs"][0]["shape"] = [3]
    v2_empty = v2_body(eval_rows[:1])
    for tensor in v2_empty["inputs"]:
        tensor["shape"], tensor["data"] = [0], []
    v2_nested = v2_body(eval_rows[:1])
    v2_nested["inputs"][0]["data"] = [[[1.0]]]
    return [
        ("v1", "bad JSON", b'{"instances": [', "Unrecognized request format"),
        ("v1", "not an object", b"[1, 2, 3]", "instances"),
        ("v1", "no instances", v1({"rows": [row]}), "instances"),
        ("v1", "instances not a list", v1({"instances": {"a": 1}}), "instances"),
        ("v1", "missing feature", v1({"instances": [{k: v for k, v in row.items() if k != "origin"}]}), "'origin' is missing"),
        ("v1", "wrong type", v1({"instances": [dict(row, dep_hour="seven")]}), "'dep_hour' must be integer"),
        ("v1", "wrong length", v1({"instances": [[1.0, 2]]}), "has 2 values"),
        ("v1", "unknown field", v1({"instances": [dict(row, extra=1)]}), "unknown field(s)"),
        ("v1", "10 MB body", b'{"instances": [' + b'1,' * (5 * 1024 * 1024) + b"1]}", "larger than"),
        ("v2", "bad JSON", b'{"inputs": [', ""),
        ("v2", "missing feature", v1(v2_missing), "is missing"),
        ("v2", "wrong type", v1(v2_wrong_type), "must be float"),
        ("v2", "wrong shape", v1(v2_wrong_shape), "is not [rows] or [rows, 1]"),
        ("v2", "shape and data disagree", v1(v2_short), "says 3 rows but the data has 2"),
        ("v2", "no rows", v1(v2_empty), "no rows"),
        ("v2", "nested too deep", v1(v2_nested), "must be float"),
        ("v2", "data not a list", v1({"inputs": [{"name": "distance", "shape": [1], "datatype": "FP64", "data": 1.0}]}), ""),
    ]


def test_malformed_requests_get_4xx_and_the_server_keeps_serving(server, eval_rows):
    urls = {"v1": server.predict_url, "v2": f"{server.url}/v2/models/{MODEL}/infer"}
    for protocol, case, body, message in _malformed(eval_rows):
        response = requests.post(urls[protocol], data=body, headers={"content-type": "application/json"}, timeout=30)
        assert 400 <= response.status_code < 500, f"{protocol} {case}: {response.status_code} {response.text[:200]}"
        assert message in response.text, f"{protocol} {case}: {response.text[:300]}"
        healthy = requests.post(server.predict_url, json={"instances": eval_rows[:1]}, timeout=10)
        assert healthy.status_code == 200, f"server stopped serving after {protocol} {case}"


def test_metrics_endpoint_counts_outcomes_and_predictions(server, eval_rows):
    def sample(text: str, name: str, **labels) -> float:
        wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
        for line in text.splitlines():
            if line.startswith(f"{name}{{") and all(part in line for part in wanted.split(",")):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = requests.get(f"{server.url}/metrics").text
    requests.post(server.predict_url, json={"instances": eval_rows[:4]})
    requests.post(server.predict_url, json={"instances": [{"distance": 1.0}]})
    after = requests.get(f"{server.url}/metrics").text
    ok = dict(model=MODEL, protocol="v1", outcome="ok")
    rejected = dict(model=MODEL, protocol="v1", outcome="rejected")
    assert sample(after, "dmlops_serving_requests_total", **ok) == sample(before, "dmlops_serving_requests_total", **ok) + 1
    assert sample(after, "dmlops_serving_requests_total", **rejected) == sample(before, "dmlops_serving_requests_total", **rejected) + 1
    assert sample(after, "dmlops_serving_prediction_count", model=MODEL) == sample(before, "dmlops_serving_prediction_count", model=MODEL) + 4
    assert "request_predict_seconds" in after  # KServe's own histograms are still there


def test_model_metadata_lists_the_features(server):
    document = requests.get(f"{server.url}/v2/models/{MODEL}").json()
    assert [item["name"] for item in document["inputs"]] == ["distance", "dep_hour", "weekend", "origin", "carrier"]
    assert document["outputs"][0]["name"] == "probability"


def test_the_onnx_file_gives_the_same_predictions(model_dir, eval_rows):
    pytest.importorskip("onnxruntime")
    from dmlops.serving.model import ServedModel

    rows = eval_rows[:30]
    model = ServedModel(str(model_dir), "onnx")
    np.testing.assert_allclose(model.predict_rows(rows), offline_probabilities(model_dir, rows), rtol=1e-5, atol=1e-6)


def test_a_directory_without_an_export_fails_with_a_clear_error(tmp_path):
    from dmlops.data.errors import DataError
    from dmlops.serving.model import ServedModel

    with pytest.raises(DataError, match="has no metadata.json"):
        ServedModel(str(tmp_path))
