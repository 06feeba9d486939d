"""Prediction logging: every predicted row with its request id, written as Parquet partitioned by hour.

A served request hands its rows and outputs to :meth:`PredictionLog.record`, which only appends them to
a bounded in-memory buffer; a writer thread turns the buffer into Parquet files every ``flush_seconds``
(default 10: a file costs milliseconds whatever its size, and fewer files read faster; sooner once
``batch_rows`` rows wait) and writes them through :mod:`dmlops.platform.storage` (a local
folder, ``gs://``, ``s3://``). A full buffer, a slow store or a failed write never fails or stalls the
request: the rows are dropped and counted in ``dmlops_serving_log_rows_dropped_total`` (reason
``buffer_full`` or ``write_failed``), written rows in ``dmlops_serving_log_rows_written_total``.

The files and their columns are :mod:`dmlops.serving.log_layout`'s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmlops.platform import storage
from dmlops.serving import metrics
from dmlops.serving.log_layout import LOG_SCHEMA, partition, read_log  # noqa: F401  (read_log: the reader, here too)

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
CLOUDEVENT_ID_HEADER = "ce-id"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def request_id(headers: Mapping[str, str] | None, fallback: str | None = None) -> str:
    """The request's id: ``x-request-id``, else CloudEvents ``ce-id``, else ``fallback`` (a V2 request's
    ``id``), else a new UUID. Header names are matched case-insensitively."""
    lowered = {key.lower(): value for key, value in (headers or {}).items()}
    return lowered.get(REQUEST_ID_HEADER) or lowered.get(CLOUDEVENT_ID_HEADER) or fallback or uuid.uuid4().hex


def export_version(metadata: Mapping[str, Any]) -> str:
    """A model version for exports that name none: the first 12 hex digits of the sha256 over their files'
    digests (``metadata.json``'s ``files``), so two exports log the same version only when identical."""
    named = metadata.get("model_version")
    if named:
        return str(named)
    digests = json.dumps(metadata.get("files", {}), sort_keys=True).encode()
    return hashlib.sha256(digests).hexdigest()[:12]


@dataclass
class _Entry:
    request_id: str
    time: datetime
    rows: list[dict[str, Any]] | dict[str, np.ndarray]
    outputs: Any
    count: int


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _json(value: Any) -> bytes:
    """UTF-8 JSON (pyarrow takes it for a string column as it is)."""
    return orjson.dumps(value, default=str, option=_JSON_OPTIONS)


def _feature_rows(entry: _Entry) -> list[dict[str, Any]]:
    if isinstance(entry.rows, dict):  # named input tensors: one entry per row in each
        return [{name: array[index] for name, array in entry.rows.items()} for index in range(entry.count)]
    return entry.rows


def _json_rows(rows: list[dict[str, Any]]) -> pa.Array:
    """Each row as its own JSON object, cut from one serialization of them all (one orjson call per row
    costs three times as much). Dumped indented, the rows' own lines are joined and the text is cut where
    one row's closing brace meets the next's opening one: JSON strings escape line breaks, so the cut
    ``\\n  },\\n  {`` only occurs between rows. Rows the cut does not account for are dumped one by one."""
    text = orjson.dumps(rows, default=str, option=_JSON_OPTIONS | orjson.OPT_INDENT_2)
    if not (text.startswith(b"[\n  {") and text.endswith(b"\n  }\n]")):  # an empty row, or none
        return pa.array([_json(row) for row in rows], pa.string())
    inner = text[len(b"[\n  {"):-len(b"\n  }\n]")].replace(b"\n    ", b"").split(b"\n  },\n  {")
    if len(inner) != len(rows):  # an empty row among them
        return pa.array([_json(row) for row in rows], pa.string())
    return pc.binary_join_element_wise("{", pa.array(inner, pa.string()), "}", "")


def _numbers(outputs: Any) -> np.ndarray | None:
    """The outputs as one float64 per row when each row's output is one number, else None."""
    try:
        array = np.asarray(outputs)
    except ValueError:  # ragged rows
        return None
    if array.dtype.kind in "fiub" and (array.ndim == 1 or (array.ndim == 2 and array.shape[1] == 1)):
        return array.reshape(-1).astype(np.float64)
    return None


def _outputs(entries: list[_Entry]) -> tuple[pa.Array, pa.Array]:
    """The ``prediction`` and ``output`` columns; vectorized when every output is one number a row."""
    numbers = [_numbers(entry.outputs) for entry in entries]
    if all(values is not None for values in numbers):
        predictions = pa.array(np.concatenate(numbers) if numbers else np.empty(0), pa.float64())
        return predictions, pc.cast(predictions, pa.string())  # shortest round-trip text: valid JSON
    predictions: list[float | None] = []
    outputs: list[bytes] = []
    for entry, values in zip(entries, numbers):
        if values is not None:
            predictions += values.tolist()
            outputs += [orjson.dumps(value) for value in values.tolist()]
        else:
            rows = entry.outputs.tolist() if isinstance(entry.outputs, np.ndarray) else list(entry.outputs)
            predictions += [None] * len(rows)
            outputs += [_json(row) for row in rows]
    return pa.array(predictions, pa.float64()), pa.array(outputs, pa.string())


class PredictionLog:
    """Log predictions of ``model_name`` (version ``model_version``) to ``uri`` in the background.

    ``max_buffered_rows`` bounds the rows held in memory, including those being written; a request whose
    rows do not fit is dropped whole and counted. Call :meth:`start` before recording and :meth:`close`
    at shutdown (it writes what is left).
    """

    def __init__(self, uri: str, *, model_name: str, model_version: str = "", max_buffered_rows: int = 100_000,
                 batch_rows: int = 20_000, flush_seconds: float = 10.0):
        if max_buffered_rows < 1 or batch_rows < 1 or flush_seconds <= 0:
            raise ValueError("max_buffered_rows and batch_rows must be positive, flush_seconds above 0")
        self.uri = uri.rstrip("/")
        self.model_name = model_name
        self.model_version = model_version
        self.max_buffered_rows = max_buffered_rows
        self.batch_rows = batch_rows
        self.flush_seconds = flush_seconds
        self._filesystem, self._root = storage.filesystem(self.uri)
        self._lock = threading.Lock()
        self._entries: list[_Entry] = []
        self._buffered = 0  # rows in _entries plus rows being written
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._written = metrics.log_rows_written.labels(model_name)
        self._dropped_full = metrics.log_rows_dropped.labels(model_name, "buffer_full")
        self._dropped_failed = metrics.log_rows_dropped.labels(model_name, "write_failed")
        self.written_rows = 0
        self.dropped_rows = 0
        self.files: list[str] = []

    def start(self) -> PredictionLog:
        """Start the writer thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
            self._thread.start()
        return self

    def record(self, request_id: str, rows: list[dict[str, Any]] | dict[str, np.ndarray], outputs: Any) -> bool:
        """Queue one request's rows (dicts, or named input arrays) and its outputs (one per row). Never
        blocks on the store: returns False when the buffer is full and the rows were dropped."""
        count = len(outputs)
        entry = _Entry(request_id, datetime.now(timezone.utc), rows, outputs, count)
        with self._lock:
            if self._stopping or self._buffered + count > self.max_buffered_rows:
                self.dropped_rows += count
                self._dropped_full.inc(count)
                return False
            self._entries.append(entry)
            self._buffered += count
            if self._buffered >= self.batch_rows:
                self._wake.set()
        return True

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop accepting rows, write those buffered and stop the writer thread."""
        with self._lock:
            self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            with self._lock:
                entries, self._entries = self._entries, []
                stopping = self._stopping
            if entries:
                self._write(entries)
            if stopping:
                return

    def _write(self, entries: list[_Entry]) -> None:
        count = sum(entry.count for entry in entries)
        try:
            by_hour: dict[str, list[_Entry]] = {}
            for entry in entries:
                by_hour.setdefault(partition(entry.time), []).append(entry)
            for hour, group in by_hour.items():
                self._write_file(hour, group)
            self.written_rows += count
            self._written.inc(count)
        except Exception as error:  # a store that fails must not stop logging for the requests after it
            log.warning("prediction log: %d rows not written to %s: %s", count, self.uri, error)
            self.dropped_rows += count
            self._dropped_failed.inc(count)
        finally:
            with self._lock:
                self._buffered -= count

    def _write_file(self, hour: str, entries: list[_Entry]) -> None:
        counts = np.array([entry.count for entry in entries], dtype=np.int64)
        total = int(counts.sum())
        starts = np.repeat(np.cumsum(counts) - counts, counts)
        micros = [(entry.time - _EPOCH) // timedelta(microseconds=1) for entry in entries]
        predictions, outputs = _outputs(entries)
        table = pa.table({
            "request_id": pa.array(np.repeat(np.array([entry.request_id for entry in entries], dtype=object), counts),
                                   pa.string()),
            "row": pa.array(np.arange(total) - starts, pa.int32()),
            "model_name": pa.repeat(pa.scalar(self.model_name, pa.string()), total),
            "model_version": pa.repeat(pa.scalar(self.model_version, pa.string()), total),
            "time": pa.array(np.repeat(np.array(micros, dtype=np.int64), counts), LOG_SCHEMA.field("time").type),
            "features": _json_rows([features for entry in entries for features in _feature_rows(entry)]),
            "prediction": predictions,
            "output": outputs,
        }, schema=LOG_SCHEMA)
        directory = f"{self._root}/{hour}"
        self._filesystem.makedirs(directory, exist_ok=True)
        path = f"{directory}/part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.parquet"
        with self._filesystem.open(path, "wb") as handle:
            # dictionaries only where values repeat; features and outputs rarely do
            pq.write_table(table, handle, use_dictionary=["request_id", "model_name", "model_version"],
                           compression="zstd")
        self.files.append(path)
