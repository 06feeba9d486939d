"""The prediction log's layout, written by :mod:`dmlops.serving.prediction_log` (the predictor) and
:mod:`dmlops.serving.log_sink` (KServe's logger), read by :mod:`dmlops.monitoring`.

Layout: ``<uri>/dt=YYYY-MM-DD/hour=HH/part-<time>-<id>.parquet`` (UTC, hive partitioning). One row per
predicted row, columns :data:`LOG_SCHEMA`:

- ``request_id`` (string): the request's ``x-request-id`` header, or its CloudEvents ``ce-id``, or its
  V2 ``id``, or one generated (:func:`dmlops.serving.prediction_log.request_id`); the predictor returns
  it in ``x-request-id``.
- ``row`` (int32): the row's position in its request (a request of n rows logs rows 0..n-1).
- ``model_name``, ``model_version`` (string), ``time`` (timestamp, UTC): who answered, when.
- ``features`` (string): the row's features as a JSON object, as the model received them.
- ``prediction`` (float64): the predicted probability (or the output when it is one number), else null.
- ``output`` (string): the whole output of the row as JSON (a probability, a vector, ...).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dmlops.platform import storage

LOG_SCHEMA = pa.schema([
    ("request_id", pa.string()), ("row", pa.int32()), ("model_name", pa.string()), ("model_version", pa.string()),
    ("time", pa.timestamp("us", tz="UTC")), ("features", pa.string()), ("prediction", pa.float64()),
    ("output", pa.string()),
])


def partition(moment: datetime) -> str:
    """The hour partition of a UTC time: ``dt=YYYY-MM-DD/hour=HH``."""
    return f"dt={moment:%Y-%m-%d}/hour={moment:%H}"


def read_log(uri: str, *, since: datetime | None = None, until: datetime | None = None) -> pa.Table:
    """The logged rows under ``uri`` (:data:`LOG_SCHEMA`), only the hour partitions that overlap
    ``[since, until)`` when given (rows are then filtered by ``time`` exactly)."""
    filesystem, root = storage.filesystem(uri.rstrip("/"))
    paths = sorted(filesystem.glob(f"{root}/dt=*/hour=*/*.parquet"))
    lower = partition(since) if since else ""
    upper = partition(until) if until else ""
    tables = []
    for path in paths:
        hour = "/".join(path.split("/")[-3:-1])
        if (lower and hour < lower) or (upper and hour > upper):
            continue
        with filesystem.open(path, "rb") as handle:
            tables.append(pq.read_table(handle, schema=LOG_SCHEMA))
    table = pa.concat_tables(tables) if tables else LOG_SCHEMA.empty_table()
    moment = LOG_SCHEMA.field("time").type
    if since:
        table = table.filter(pc.greater_equal(table["time"], pa.scalar(since, moment)))
    if until:
        table = table.filter(pc.less(table["time"], pa.scalar(until, moment)))
    return table
