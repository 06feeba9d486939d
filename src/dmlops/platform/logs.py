"""One logging setup for every dmlops process: components, the launcher, the predictor, the log sink and
training workers.

Each record is one JSON line with Elastic Common Schema (ECS) field names, flat and dotted:
``@timestamp`` (ISO 8601, UTC), ``log.level``, ``log.logger``, ``message``, ``service.name`` (the
component, predictor or server), ``trace.id`` (the request id in the predictor, the pipeline run in a
component), ``labels.*`` (model name and version, pipeline run, task, pod: always strings, as ECS
defines labels) and, for a record with an exception, ``error.type``, ``error.message`` and
``error.stack_trace``.

Every field has one JSON type in every line, so that Elasticsearch never meets a field that was a number in
one document and a string in another (the mapping conflict of fluent/fluent-bit#4830): the fields a record
may carry are declared in :data:`FIELD_TYPES` and coerced to their type; any other ``extra`` becomes a
string under ``labels.<name>``.

Where it goes: standard output (where KFP's executor logs too, and where the launcher's progress lines have
always been read), as JSON, or as one human line per record when standard output is a terminal or
``DMLOPS_LOG_FORMAT=text`` (``DMLOPS_LOG_FORMAT=json`` forces JSON). With ``DMLOPS_LOG_COPY=<file>`` every
process also appends its JSON lines to that file (whole lines, ``O_APPEND``), whatever the format on
standard error.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

FORMAT_ENV = "DMLOPS_LOG_FORMAT"
COPY_ENV = "DMLOPS_LOG_COPY"

FIELD_TYPES: dict[str, type] = {
    "@timestamp": str,
    "log.level": str,
    "log.logger": str,
    "message": str,
    "service.name": str,
    "trace.id": str,
    "error.type": str,
    "error.message": str,
    "error.stack_trace": str,
    "labels.model_name": str,
    "labels.model_version": str,
    "labels.pipeline_run": str,
    "labels.task": str,
    "labels.pod": str,
    "labels.rank": str,
    "http.request.method": str,
    "url.path": str,
    "http.response.status_code": int,
    "event.duration": int,  # nanoseconds, as ECS defines it
    "dmlops.rows": int,
}
"""Every field a JSON line may carry besides ``labels.*``, and its one type."""

_RECORD_ATTRS = frozenset(RESERVED_ATTRS) | {"taskName", "asctime", "color_message"}  # uvicorn's ANSI copy
_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("dmlops_trace_id", default=None)
_bound: dict[str, Any] = {}


def _coerce(value: Any, kind: type) -> Any:
    if kind is str:
        return value if isinstance(value, str) else str(value)
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not an integer")
    return kind(value)


@functools.lru_cache(maxsize=1024)
def _label_name(key: str) -> str:
    name = key.removeprefix("labels.")
    return "labels." + "".join(char if char.isalnum() or char == "_" else "_" for char in name)


def typed_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """``fields`` with each declared field coerced to its type; any other field, or a value that cannot be
    coerced, a string under ``labels.<name>``. None values are left out."""
    typed: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None:
            continue
        kind = FIELD_TYPES.get(key)
        if kind is type(value):
            typed[key] = value
            continue
        if kind is None and type(value) is str and key.startswith("labels."):
            typed[_label_name(key)] = value
            continue
        if kind is not None:
            try:
                typed[key] = _coerce(value, kind)
                continue
            except (TypeError, ValueError, OverflowError):
                pass
        typed[_label_name(key)] = value if isinstance(value, str) else json.dumps(value, default=str)
    return typed


class EcsJsonFormatter(JsonFormatter):
    """A record as one JSON line of ECS fields, each of one type (:data:`FIELD_TYPES`)."""

    def __init__(self):
        super().__init__(json_ensure_ascii=False)

    def add_fields(self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]) -> None:
        extras = {key: value for key, value in record.__dict__.items()
                  if key not in _RECORD_ATTRS and not key.startswith("_")}
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields: dict[str, Any] = {
            "@timestamp": f"{second}.{int(record.msecs):03d}Z",
            "log.level": record.levelname.lower(),
            "message": record.message,  # set by JsonFormatter.format: the formatted message, "" for a dict
            **_bound,
            "log.logger": record.name,
            **message_dict,
            **extras,
        }
        if trace_id := _trace_id.get():
            fields["trace.id"] = trace_id
        fields.pop("exc_info", None)
        fields.pop("stack_info", None)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            fields.update({"error.type": type(error).__name__, "error.message": str(error),
                           "error.stack_trace": self.formatException(record.exc_info)})
        log_data.update(typed_fields(fields))


class HumanFormatter(logging.Formatter):
    """A record as one line for a person: time, level and message (and the traceback of an exception)."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")


class AppendLines(logging.Handler):
    """Appends each record's line to a file with one ``O_APPEND`` write, so processes that share the file
    never split each other's lines."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8"))
        except Exception:  # noqa: BLE001 - logging must never fail its caller
            self.handleError(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        super().close()


@contextlib.contextmanager
def human_lines_in_children() -> Iterator[None]:
    """Within the block, the processes this one starts log human lines (unless ``DMLOPS_LOG_FORMAT`` is set):
    a local run whose step logs a person reads."""
    if os.environ.get(FORMAT_ENV):
        yield
        return
    os.environ[FORMAT_ENV] = "text"
    try:
        yield
    finally:
        os.environ.pop(FORMAT_ENV, None)


def copy_handler(path: str) -> AppendLines:
    """A handler appending JSON lines to ``path`` (what ``DMLOPS_LOG_COPY`` adds to every process)."""
    handler = AppendLines(path)
    handler.setFormatter(EcsJsonFormatter())
    return handler


def wants_json(stream: TextIO) -> bool:
    """JSON unless ``DMLOPS_LOG_FORMAT=text``, or ``stream`` is a terminal and the format is not forced."""
    chosen = os.environ.get(FORMAT_ENV, "").lower()
    if chosen in ("json", "text"):
        return chosen == "json"
    return not (hasattr(stream, "isatty") and stream.isatty())


def _ours(handler: logging.Handler) -> bool:
    return getattr(handler, "dmlops", False)


def configure(service: str, *, labels: Mapping[str, Any] | None = None, trace_id: str | None = None,
              level: int = logging.INFO, stream: TextIO | None = None, replace: bool = True) -> None:
    """Send every record of this process through dmlops's formatters, as ``service``, with ``labels``
    (``{"model_name": ...}`` becomes ``labels.model_name``) and ``trace_id`` on every line.

    ``replace`` removes the root logger's other handlers (e.g. the one KFP's executor installs); without
    it they are kept. Calling it again replaces dmlops's handlers and fields.
    """
    stream = stream or sys.stdout
    root = logging.getLogger()
    for handler in list(root.handlers):
        if replace or _ours(handler):
            root.removeHandler(handler)
            if _ours(handler):
                handler.close()
    handlers: list[logging.Handler] = [logging.StreamHandler(stream)]
    handlers[0].setFormatter(EcsJsonFormatter() if wants_json(stream) else HumanFormatter())
    if os.environ.get(COPY_ENV):
        handlers.append(copy_handler(os.environ[COPY_ENV]))
    for handler in handlers:
        handler.dmlops = True
        root.addHandler(handler)
    root.setLevel(level)
    _bound.clear()
    bind(**{"service.name": service, "trace.id": trace_id},
         **{f"labels.{key}": value for key, value in (labels or {}).items()})


def adopt_library_loggers(*names: str) -> None:
    """Give the loggers ``names`` (a library's, which would otherwise get handlers of its own) dmlops's
    handlers, so that their records are formatted like every other line, once."""
    ours = [handler for handler in logging.getLogger().handlers if _ours(handler)]
    for name in names:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        for handler in ours:
            library.addHandler(handler)
        library.propagate = not ours


def configure_unless_configured(service: str) -> None:
    """:func:`configure` when no handler receives this process's records yet (as :func:`logging.basicConfig`
    does): a library entry point that logs progress, used from code that may have set up logging itself."""
    if not logging.getLogger().handlers:
        configure(service, replace=False)


def bind(**fields: Any) -> None:
    """Add ECS ``fields`` (dotted names, e.g. ``**{"labels.model_version": "3"}``) to every later line."""
    _bound.update(fields)


def set_trace_id(trace_id: str) -> None:
    """Put ``trace_id`` on every later line of the running asyncio task or thread (a request's handler)."""
    _trace_id.set(trace_id)


def current_trace_id() -> str | None:
    """The trace id of the running request or step, if one is set."""
    return _trace_id.get()


@contextlib.contextmanager
def trace(trace_id: str) -> Iterator[None]:
    """Put ``trace_id`` on every line logged inside the block (by this task or thread)."""
    token = _trace_id.set(trace_id)
    try:
        yield
    finally:
        _trace_id.reset(token)


def duration_ns(started_perf_counter: float) -> int:
    """Nanoseconds since ``time.perf_counter()`` was ``started_perf_counter`` (ECS ``event.duration``)."""
    return int((time.perf_counter() - started_perf_counter) * 1e9)


def _kfp_argument(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def configure_component(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> bool:
    """In a KFP task process (``kfp.dsl.executor_main --function_to_execute <component>``), log as the
    component: ``service.name`` is its name, and the run id and task name it takes as parameters
    (``run_id``, ``task_name``) become ``trace.id``, ``labels.pipeline_run`` and ``labels.task``; the
    pod's name (``KFP_POD_NAME``, set by KFP's driver) ``labels.pod``. An exception that ends the step is
    logged with its ``error.*`` fields. Returns whether this process is such a task."""
    argv = sys.argv if argv is None else argv
    environ = os.environ if environ is None else environ
    component = _kfp_argument(argv, "--function_to_execute")
    if component is None or environ.get("_KFP_RUNTIME") != "true":
        return False
    try:
        executor_input = json.loads(_kfp_argument(argv, "--executor_input") or "{}")
        parameters = executor_input.get("inputs", {}).get("parameterValues", {})
    except (ValueError, AttributeError):
        parameters = {}
    run_id = parameters.get("run_id") or None
    configure(component, trace_id=run_id,
              labels={"pipeline_run": run_id, "task": parameters.get("task_name") or None,
                      "pod": environ.get("KFP_POD_NAME")})
    sys.excepthook = _log_uncaught
    return True


def _log_uncaught(kind: type[BaseException], error: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("dmlops.components").critical("%s failed: %s: %s", _bound.get("service.name"),
                                                    kind.__name__, error, exc_info=(kind, error, tb))
