"""Run models in a ``kserve.ModelServer``: the process behind ``python -m dmlops.serving``.

Three additions to the stock server: request bodies over ``max_body_bytes`` get a 413 before they are read
whole, the HTTP listener can be bound to one address (``127.0.0.1`` for local serving; KServe's
default ``0.0.0.0`` in a pod), and a 400 logs one line (KServe's handler logs the whole traceback of every
bad request: a flood of them would bury the server's log).

Every line the server logs (KServe's, uvicorn's, the predictor's) goes through :mod:`dmlops.platform.logs`:
a line per prediction request from the predictor, whose request id is the ``trace.id`` of the lines the
request causes (its 400 or 500 too). uvicorn's access log and KServe's latency lines (``kserve.trace``) are
off: the predictor's line carries the status, rows and duration, and health probes and metrics scrapes
would outnumber it. ``KSERVE_LOGLEVEL`` (default INFO) sets the level of KServe's and the predictor's
loggers: WARNING keeps a 400's and a 500's lines and drops the line of each answered request.
"""

from __future__ import annotations

import json
import logging

import kserve
from fastapi.responses import JSONResponse
from kserve.constants.constants import KSERVE_LOGLEVEL
from kserve.errors import InvalidInput
from kserve.logging import logger
from kserve.model_server import app

from dmlops.platform import logs
from dmlops.serving.prediction_log import request_id

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
_SERVER_LOGGERS = ("kserve", "kserve.trace", "uvicorn", "uvicorn.error", "uvicorn.access")


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware answering 413 to requests whose body is larger than ``max_bytes``."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(send)
        received = 0
        started = False

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send)

    async def _reject(self, send) -> None:
        body = json.dumps({"error": f"request body is larger than {self.max_bytes} bytes; send fewer rows per request"})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body.encode()})


async def _invalid_input(request, error: InvalidInput) -> JSONResponse:
    """A 400 with the error's message, logged as one line (method, path, message)."""
    if logs.current_trace_id() is None:  # refused before the predictor read the request
        logs.set_trace_id(request_id(request.headers))
    logger.log(logging.WARNING, "400 %s %s: %s", request.method, request.url.path, error, extra={
        "http.request.method": request.method, "url.path": request.url.path, "http.response.status_code": 400})
    return JSONResponse(status_code=400, content={"error": str(error)})


class ModelServer(kserve.ModelServer):
    """``kserve.ModelServer`` whose HTTP listener binds ``host`` and whose 400s log one line."""

    def __init__(self, *, host: str = "0.0.0.0", **kwargs):
        logs.adopt_library_loggers(*_SERVER_LOGGERS)  # before KServe configures its own handlers for them
        for name in ("kserve", "dmlops.serving"):  # KServe's level setting, for the predictor's lines too
            logging.getLogger(name).setLevel(KSERVE_LOGLEVEL)
        super().__init__(**kwargs)
        self.host = host
        for quiet in ("uvicorn.access", "kserve.trace"):  # a line or two per request, said by the predictor's
            logging.getLogger(quiet).setLevel(logging.WARNING)

    def setup_event_loop(self):
        # start() has built the REST server but not started it: the bind address is still settable.
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
            # kserve/protocol/rest/server.py RESTServer._add_exception_handlers registers its handlers when
            # the server runs; ours for InvalidInput is registered after them and replaces theirs
            add_handlers = self._rest_server._add_exception_handlers

            def add_exception_handlers(application):
                add_handlers(application)
                application.add_exception_handler(InvalidInput, _invalid_input)

            self._rest_server._add_exception_handlers = add_exception_handlers
        super().setup_event_loop()


def serve(
    models: list[kserve.Model],
    *,
    http_port: int,
    host: str = "0.0.0.0",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    enable_grpc: bool = False,
    **server_options,
) -> None:
    """Load ``models`` and serve them until SIGTERM/SIGINT."""
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    for model in models:
        model.load()
    ModelServer(host=host, http_port=http_port, enable_grpc=enable_grpc, **server_options).start(models)
