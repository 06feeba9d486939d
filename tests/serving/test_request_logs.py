"""The predictor's log lines: JSON with ECS fields of one type each, and for every prediction request the
request id the response carries (``x-request-id``) as ``trace.id``: one line for a 200, one line without a
traceback for a 400, the error's type, message and stack trace for a 500. The log sink logs a refused event
under its CloudEvents id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from dmlops.platform import logs
from dmlops.platform.local import free_ports
from dmlops.serving.local import start_server, stop_server
from kubeharness.listening import wait_listening
from log_copy import json_lines, mistyped_fields
from serving_models import FailsOnFirstCategory, broken_copy

MODEL = "logged-model"


@pytest.fixture(scope="module")
def failing_server(model_dir, tmp_path_factory):
    """A server whose model fails (a 500) for rows of the first category of its first categorical feature."""
    broken = broken_copy(model_dir, tmp_path_factory.mktemp("broken") / "model", FailsOnFirstCategory)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(logs.FORMAT_ENV, "json")
        process = start_server(str(broken), MODEL, log_dir=tmp_path_factory.mktemp("logs"))
    yield process
    stop_server(process)


def lines_of(server, trace_id: str) -> list[dict]:
    deadline = time.monotonic() + 10
    while True:
        with open(server.log_path) as log:
            found = [line for line in json_lines(log.read()) if line.get("trace.id") == trace_id]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def test_each_request_logs_its_request_id_as_trace_id(failing_server, eval_rows):
    statuses = {}
    for index, row in enumerate(eval_rows[:40]):
        response = requests.post(failing_server.predict_url, json={"instances": [row]},
                                 headers={"x-request-id": f"req-{index}"}, timeout=30)
        statuses.setdefault(response.status_code, f"req-{index}")
        if {200, 500} <= set(statuses):
            break
    assert {200, 500} <= set(statuses), statuses
    response = requests.post(failing_server.predict_url, json={"instances": [dict(eval_rows[0], dep_hour="x")]},
                             headers={"x-request-id": "req-bad"}, timeout=30)
    assert response.status_code == 400

    (answered,) = lines_of(failing_server, statuses[200])
    assert answered["message"] == "200 v1 predict: 1 rows" and answered["log.level"] == "info"
    assert answered["http.response.status_code"] == 200 and answered["dmlops.rows"] == 1
    assert answered["event.duration"] > 0 and answered["labels.model_version"]
    assert answered["service.name"] == answered["labels.model_name"] == MODEL
    assert answered["log.logger"] == "dmlops.serving.predictor"

    (refused,) = lines_of(failing_server, "req-bad")
    assert refused["log.level"] == "warning" and refused["http.response.status_code"] == 400
    assert refused["message"].startswith(f"400 POST /v1/models/{MODEL}:predict: ")
    assert "'dep_hour'" in refused["message"]
    assert "error.stack_trace" not in refused

    # KServe's handler logs the error, and uvicorn the exception Starlette raises again after answering 500
    failed = [line for line in lines_of(failing_server, statuses[500]) if "error.type" in line]
    assert {line["log.logger"] for line in failed} == {"kserve", "uvicorn.error"}
    for line in failed:
        assert line["log.level"] == "error" and "cannot score this category" in line["error.message"]
        assert line["error.stack_trace"].startswith("Traceback (most recent call last):")

    with open(failing_server.log_path) as log:
        every = json_lines(log.read())
    assert every and all(line["service.name"] == MODEL for line in every)
    assert {tuple(mistyped_fields(line)) for line in every} == {()}


def test_the_log_sink_logs_a_refused_event_under_its_event_id(tmp_path):
    (port,) = free_ports(1)
    log = tmp_path / "sink.log"
    with log.open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "dmlops.serving.log_sink", "--uri", str(tmp_path / "logs"),
                                    "--host", "127.0.0.1", "--port", str(port)], stdout=output,
                                   stderr=subprocess.STDOUT, env={**os.environ, logs.FORMAT_ENV: "json"})
    try:
        assert wait_listening(process, "127.0.0.1", port, timeout_s=30), log.read_text()
        headers = {"ce-specversion": "1.0", "ce-id": "event-7", "ce-type": "org.kubeflow.serving.inference.request",
                   "ce-source": "http://localhost:9081/", "ce-inferenceservicename": "delay",
                   "content-type": "application/json"}
        response = requests.post(f"http://127.0.0.1:{port}/", data=b"not json", headers=headers, timeout=10)
        assert response.status_code == 400
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    lines = json_lines(log.read_text())
    assert {tuple(mistyped_fields(line)) for line in lines} == {()}
    assert {line["service.name"] for line in lines} == {"dmlops-log-sink"}
    (refused,) = [line for line in lines if line.get("trace.id") == "event-7"]
    assert refused["message"].startswith("400 request event refused: the body is not JSON")
    assert (refused["log.level"], refused["http.response.status_code"], refused["labels.model_name"],
            refused["log.logger"]) == ("warning", 400, "delay", "dmlops.serving.log_sink")
