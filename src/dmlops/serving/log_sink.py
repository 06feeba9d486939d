"""The prediction log sink: KServe's inference logger CloudEvents in, the prediction log's Parquet out.

On a cluster an InferenceService with ``spec.predictor.logger`` (mode ``all``, :func:`dmlops.serving.
packaging.inference_service` ``logger_url``) has KServe's agent send every request and every response to a
URL as CloudEvents in binary mode (kserve pkg/logger/worker.go, sendHttpCloudEvent): the body is the
payload, ``ce-id`` the request id (the request's ``x-request-id`` or one the agent generated, shared by
both events), ``ce-type`` ``org.kubeflow.serving.inference.request`` or ``...response``, and the
extensions ``ce-inferenceservicename``, ``ce-namespace``, ``ce-component``, ``ce-endpoint``. The agent's
workers send the two events independently, so either may come first.

This sink pairs the two events of a request by ``ce-id`` and records the pair in a
:class:`~dmlops.serving.prediction_log.PredictionLog` per InferenceService, under
``<uri>/<inferenceservicename>/`` in the same layout and columns as the predictor's own log. Payloads:
V1 ``{"instances": [...]}`` / ``{"predictions": [...]}``, V2 ``{"inputs": [...]}`` / ``{"outputs": [...]}``
(one value per row in each input; the first output's rows). Halves still unpaired when ``max_pending``
are waiting are evicted oldest first; events that cannot be read are answered 400. Both are counted.

Run it with ``python -m dmlops.serving.log_sink --uri gs://bucket/predictions --port 8080``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections import OrderedDict
from typing import Any

import numpy as np
from prometheus_client import Counter, make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from dmlops.platform import logs
from dmlops.serving.prediction_log import PredictionLog

_LOG = logging.getLogger("dmlops.serving.log_sink")  # also when run as __main__
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"

events_total = Counter("dmlops_log_sink_events", "CloudEvents received, by type (request, response) and outcome "
                       "(paired, waiting, rejected = unreadable, evicted = its other half never came).",
                       ["type", "outcome"])


class SinkError(ValueError):
    """An event the sink cannot read; the message says why."""


def request_rows(payload: Any) -> list[dict[str, Any]] | list[Any]:
    """The rows of a V1 or V2 request body."""
    if isinstance(payload, dict) and isinstance(payload.get("instances"), list):
        return payload["instances"]
    if isinstance(payload, dict) and isinstance(payload.get("inputs"), list) and payload["inputs"]:
        columns = {item["name"]: np.asarray(item["data"]).reshape(item["shape"][0], -1) for item in payload["inputs"]}
        counts = {len(column) for column in columns.values()}
        if len(counts) != 1:
            raise SinkError(f"V2 inputs with different row counts {sorted(counts)}")
        return [{name: (column[row][0] if column.shape[1] == 1 else column[row]).tolist()
                 for name, column in columns.items()} for row in range(counts.pop())]
    raise SinkError('a request body must be V1 {"instances": [...]} or V2 {"inputs": [...]}')


def response_outputs(payload: Any) -> list[Any]:
    """The per-row outputs of a V1 or V2 response body."""
    if isinstance(payload, dict) and isinstance(payload.get("predictions"), list):
        return payload["predictions"]
    if isinstance(payload, dict) and isinstance(payload.get("outputs"), list) and payload["outputs"]:
        first = payload["outputs"][0]
        return np.asarray(first["data"]).reshape(first["shape"]).tolist()
    raise SinkError('a response body must be V1 {"predictions": [...]} or V2 {"outputs": [...]}')


class LogSink:
    """Pairs request and response events by ``ce-id`` and logs each pair under ``<uri>/<service>``."""

    def __init__(self, uri: str, *, model_version: str = "", max_pending: int = 10_000, **log_options: Any):
        self.uri = uri.rstrip("/")
        self.model_version = model_version
        self.max_pending = max_pending
        self.log_options = log_options
        self.logs: dict[str, PredictionLog] = {}
        self.pending: OrderedDict[tuple[str, str], tuple[str, Any]] = OrderedDict()  # (service, id) -> half

    def log_for(self, service: str) -> PredictionLog:
        if service not in self.logs:
            self.logs[service] = PredictionLog(f"{self.uri}/{service}", model_name=service,
                                               model_version=self.model_version, **self.log_options).start()
        return self.logs[service]

    def receive(self, headers: dict[str, str], body: bytes) -> str:
        """Take one event; returns its outcome (paired or waiting). Raises SinkError for unreadable ones."""
        kind = {REQUEST_TYPE: "request", RESPONSE_TYPE: "response"}.get(headers.get("ce-type", ""))
        event_id, service = headers.get("ce-id", ""), headers.get("ce-inferenceservicename", "")
        if kind is None or not event_id or not service:
            raise SinkError("not a KServe inference logger event (ce-type, ce-id, ce-inferenceservicename)")
        try:
            payload = json.loads(body)
        except ValueError as error:
            raise SinkError(f"the body is not JSON: {error}") from None
        half = request_rows(payload) if kind == "request" else response_outputs(payload)
        other = self.pending.pop((service, event_id), None)
        if other is None or other[0] == kind:
            self.pending[service, event_id] = (kind, half)
            while len(self.pending) > self.max_pending:
                _, (evicted_kind, _) = self.pending.popitem(last=False)
                events_total.labels(evicted_kind, "evicted").inc()
            return "waiting"
        rows, outputs = (half, other[1]) if kind == "request" else (other[1], half)
        if len(rows) != len(outputs):
            raise SinkError(f"request {event_id}: {len(rows)} rows but {len(outputs)} outputs")
        self.log_for(service).record(event_id, rows, outputs)
        return "paired"

    def close(self) -> None:
        for log in self.logs.values():
            log.close()

    def app(self) -> Starlette:
        """The ASGI app: POST / takes events, GET /metrics serves the sink's and the logs' counters."""

        async def event(request: Request) -> JSONResponse:
            headers = {key.lower(): value for key, value in request.headers.items()}
            kind = "request" if headers.get("ce-type") == REQUEST_TYPE else "response"
            try:
                outcome = self.receive(headers, await request.body())
            except SinkError as error:
                events_total.labels(kind, "rejected").inc()
                with logs.trace(headers.get("ce-id", "")):
                    _LOG.warning("400 %s event refused: %s", kind, error, extra={
                        "http.response.status_code": 400, "labels.model_name": headers.get("ce-inferenceservicename")})
                return JSONResponse({"error": str(error)}, status_code=400)
            events_total.labels(kind, outcome).inc()
            return JSONResponse({"outcome": outcome})

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette):
            yield
            self.close()  # the server stops: write what the logs still hold

        return Starlette(routes=[Route("/", event, methods=["POST"]), Mount("/metrics", make_asgi_app())],
                         lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dmlops.serving.log_sink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", required=True, help="folder or URI (gs://, s3://) of the prediction logs")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--model_version", default="", help="the version logged with each prediction")
    parser.add_argument("--max_pending", type=int, default=10_000, help="unpaired halves kept at most")
    args = parser.parse_args(argv)
    import uvicorn

    logs.configure("dmlops-log-sink")
    logs.adopt_library_loggers("uvicorn", "uvicorn.error", "uvicorn.access")
    sink = LogSink(args.uri, model_version=args.model_version, max_pending=args.max_pending)
    uvicorn.run(sink.app(), host=args.host, port=args.port, log_level="warning", log_config=None)


if __name__ == "__main__":
    main()
