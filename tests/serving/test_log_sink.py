"""The prediction log sink as a real process, fed the CloudEvents KServe's agent sends (binary mode, kserve
pkg/logger/worker.go), and the InferenceService logger that points at it, against the vendored CRD."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
import requests

from crds import crd_errors
from dmlops.platform.local import free_ports
from kubeharness.listening import wait_listening
from dmlops.serving.log_sink import REQUEST_TYPE, RESPONSE_TYPE
from dmlops.serving.packaging import LOG_SINK_URL_ENV, inference_service
from dmlops.serving.log_layout import LOG_SCHEMA, read_log
from serving_helpers import v2_body


def test_the_inference_service_gets_kserves_logger_when_a_sink_is_configured(monkeypatch):
    monkeypatch.delenv(LOG_SINK_URL_ENV, raising=False)
    assert "logger" not in inference_service("delay", "ns", "s3://m/1")["spec"]["predictor"]
    given = inference_service("delay", "ns", "s3://m/1", logger_url="http://sink.ns.svc/")
    assert given["spec"]["predictor"]["logger"] == {"mode": "all", "url": "http://sink.ns.svc/"}
    assert crd_errors(given) == []
    monkeypatch.setenv(LOG_SINK_URL_ENV, "http://sink.monitoring.svc/")
    configured = inference_service("delay", "ns", "s3://m/1")
    assert configured["spec"]["predictor"]["logger"]["url"] == "http://sink.monitoring.svc/"
    assert "logger" not in inference_service("delay", "ns", "s3://m/1", logger_url="")["spec"]["predictor"]
    wrong = json.loads(json.dumps(given))
    wrong["spec"]["predictor"]["logger"]["mode"] = "everything"
    assert crd_errors(wrong)  # the CRD's enum: all, request, response


@pytest.fixture
def sink(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "sink.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "dmlops.serving.log_sink", "--uri", str(tmp_path / "logs"),
                                    "--host", "127.0.0.1", "--port", str(port), "--model_version", "5"],
                                   stdout=output, stderr=subprocess.STDOUT)
    if not wait_listening(process, "127.0.0.1", port, timeout_s=30):
        pytest.fail(f"the log sink did not start:\n{log.read_text()}")
    yield {"url": f"http://127.0.0.1:{port}/", "process": process, "logs": tmp_path / "logs"}
    if process.poll() is None:
        process.kill()


def send(url: str, kind: str, event_id: str, body: dict | bytes, service: str = "delay") -> requests.Response:
    """One event as KServe's agent sends it: binary mode, the payload as the body, the attributes as headers."""
    headers = {"ce-specversion": "1.0", "ce-id": event_id, "ce-type": kind,
               "ce-source": "http://localhost:9081/", "ce-inferenceservicename": service,
               "ce-namespace": "ns", "ce-component": "predictor", "ce-endpoint": "default",
               "content-type": "application/json"}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers=headers, timeout=10)


def stop(sink) -> None:
    sink["process"].send_signal(signal.SIGTERM)  # uvicorn shuts down: the sink writes what it holds
    sink["process"].wait(timeout=30)


def test_the_sink_pairs_the_events_of_a_request_and_logs_what_the_predictor_answered(sink, server, eval_rows):
    """Requests to the real predictor, forwarded as the agent would: the sink's rows equal the answers."""
    v1_request = {"instances": eval_rows[:3]}
    v1_response = requests.post(server.predict_url, json=v1_request, timeout=10).json()
    v2_request = v2_body(eval_rows[3:5], "two")
    v2_response = requests.post(f"{server.url}/v2/models/{server.model_name}/infer", json=v2_request, timeout=10).json()
    assert send(sink["url"], REQUEST_TYPE, "one", v1_request).json() == {"outcome": "waiting"}
    assert send(sink["url"], RESPONSE_TYPE, "one", v1_response).json() == {"outcome": "paired"}
    assert send(sink["url"], RESPONSE_TYPE, "two", v2_response).json() == {"outcome": "waiting"}  # response first
    assert send(sink["url"], REQUEST_TYPE, "two", v2_request).json() == {"outcome": "paired"}
    assert send(sink["url"], REQUEST_TYPE, "lonely", v1_request).json() == {"outcome": "waiting"}
    assert send(sink["url"], REQUEST_TYPE, "bad", b"not json").status_code == 400
    assert send(sink["url"], RESPONSE_TYPE, "bad", {"answers": []}).status_code == 400
    metrics = requests.get(sink["url"] + "metrics/", timeout=10).text
    assert 'dmlops_log_sink_events_total{outcome="paired",type="response"} 1.0' in metrics
    assert 'dmlops_log_sink_events_total{outcome="rejected",type="response"} 1.0' in metrics
    stop(sink)

    table = read_log(str(sink["logs"] / "delay")).sort_by([("request_id", "ascending"), ("row", "ascending")])
    assert table.schema == LOG_SCHEMA
    rows = table.to_pylist()
    assert [(row["request_id"], row["row"]) for row in rows] == [("one", 0), ("one", 1), ("one", 2), ("two", 0), ("two", 1)]
    assert {(row["model_name"], row["model_version"]) for row in rows} == {("delay", "5")}
    assert [json.loads(row["features"]) for row in rows[:3]] == eval_rows[:3]
    assert [row["prediction"] for row in rows[:3]] == v1_response["predictions"]
    assert [row["prediction"] for row in rows[3:]] == v2_response["outputs"][0]["data"]
    v2_features = [json.loads(row["features"]) for row in rows[3:]]
    assert [{name: row[name] for name in ("origin", "dep_hour")} for row in v2_features] == \
        [{name: row[name] for name in ("origin", "dep_hour")} for row in eval_rows[3:5]]
