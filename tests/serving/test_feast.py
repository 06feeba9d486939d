"""Feast enrichment: requests carrying an entity key get features from the online store (Redis, SQLite)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from serving_helpers import offline_probabilities, v2_body
from dmlops.serving.local import start_server, stop_server

pytestmark = pytest.mark.slow  # starts Redis and a model server


@pytest.fixture(scope="module")
def enriched_server(model_dir, feast_store, tmp_path_factory):
    config = {"store": feast_store, "features": ["plane_route:distance"], "entity_keys": ["tailnum"]}
    process = start_server(str(model_dir), "flights-delay", log_dir=tmp_path_factory.mktemp("feast-logs"),
                           feast_config=json.dumps(config))
    yield process
    stop_server(process)


def test_rows_with_an_entity_key_get_online_features(enriched_server, model_dir, eval_rows):
    sent = [{key: value for key, value in row.items() if key != "distance"} for row in eval_rows[:4]]
    for row, tailnum in zip(sent, ["N1", "N2", "N3", "N5"]):
        row["tailnum"] = tailnum
    response = requests.post(enriched_server.predict_url, json={"instances": sent}, timeout=10)
    assert response.status_code == 200, response.text
    expected_rows = [{**row, "distance": distance} for row, distance in zip(eval_rows[:4], [100.0, 250.5, 1000.0, None])]
    np.testing.assert_allclose(response.json()["predictions"], offline_probabilities(model_dir, expected_rows),
                               rtol=1e-6, atol=1e-7)


def test_values_in_the_request_win_and_rows_without_keys_need_every_feature(enriched_server, model_dir, eval_rows):
    row = dict(eval_rows[0], tailnum="N4")  # distance sent: the store's 2500.0 is not used
    served = requests.post(enriched_server.predict_url, json={"instances": [row]}).json()["predictions"]
    np.testing.assert_allclose(served, offline_probabilities(model_dir, [eval_rows[0]]), rtol=1e-6, atol=1e-7)
    no_key = {key: value for key, value in eval_rows[0].items() if key != "distance"}
    response = requests.post(enriched_server.predict_url, json={"instances": [no_key]})
    assert response.status_code == 400 and "'distance' is missing" in response.text
    unknown_plane = dict(no_key, tailnum="N999")  # the store has no value: null, as for a missing feature
    assert requests.post(enriched_server.predict_url, json={"instances": [unknown_plane]}).status_code == 200


def test_v2_inputs_with_an_entity_key_get_online_features(enriched_server, model_dir, eval_rows):
    sent = [{key: value for key, value in row.items() if key != "distance"} for row in eval_rows[:3]]
    for row, tailnum in zip(sent, ["N3", "N1", "N2"]):
        row["tailnum"] = tailnum
    url = enriched_server.predict_url.replace("/v1/", "/v2/").replace(":predict", "/infer")
    response = requests.post(url, json=v2_body(sent), timeout=10)
    assert response.status_code == 200, response.text
    expected_rows = [{**row, "distance": distance} for row, distance in zip(eval_rows[:3], [1000.0, 100.0, 250.5])]
    (output,) = response.json()["outputs"]
    np.testing.assert_allclose(output["data"], offline_probabilities(model_dir, expected_rows), rtol=1e-6, atol=1e-7)
