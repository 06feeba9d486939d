"""A fresh training set for retraining: a rolling window of the training data plus the production rows
whose labels arrived (the feedback step's labelled set), and a holdout of the latest labelled rows on
which a new model and the one serving are compared."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.privacy import encryption

PRODUCTION_TIME = "prediction_time"


@dataclass
class WindowCounts:
    """Rows of each source in the window and in the holdout."""

    reference_rows: int
    production_rows: int
    holdout_rows: int
    window_start: str
    window_end: str


def _read(uri: str) -> pa.Table:
    filesystem, path = storage.filesystem(uri)
    if not filesystem.exists(path):
        raise DataError(f"{uri} does not exist")
    return encryption.read_table(uri)


def _utc(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if not pa.types.is_timestamp(column.type):
        raise DataError(f"time column has type {column.type}; it must be a timestamp")
    if column.type.tz is None:
        column = pc.assume_timezone(column, "UTC")
    return column.cast(pa.timestamp("us", "UTC"))


def training_window(
    reference_uri: str,
    labelled_uri: str,
    train_path: str,
    holdout_path: str,
    *,
    label: str,
    time_column: str,
    window_days: float,
    holdout_fraction: float = 0.2,
    window_end: datetime | None = None,
) -> WindowCounts:
    """Write the training rows of the last ``window_days`` before ``window_end`` (default: the latest row
    of either source) to ``train_path``, with the labelled production rows of that window in the
    reference's columns (``time_column`` = their prediction time; columns the log lacks are null); the
    latest ``holdout_fraction`` of the labelled production rows (or, without any, of the window) go to
    ``holdout_path`` instead."""
    if not 0 < holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be between 0 and 1, got {holdout_fraction}")
    reference = _read(reference_uri)
    if time_column not in reference.column_names or label not in reference.column_names:
        raise DataError(f"{reference_uri} needs the columns {time_column!r} and {label!r}")
    reference = reference.set_column(reference.column_names.index(time_column), time_column,
                                     _utc(reference[time_column]))
    labelled = _read(labelled_uri) if labelled_uri else None
    if labelled is not None and labelled.num_rows:
        missing = [name for name in (PRODUCTION_TIME, label) if name not in labelled.column_names]
        if missing:
            raise DataError(f"{labelled_uri}: the labelled production set lacks {missing}")
        columns = {}
        for field in reference.schema:
            source = PRODUCTION_TIME if field.name == time_column else field.name
            values = labelled[source] if source in labelled.column_names else pa.nulls(labelled.num_rows, field.type)
            columns[field.name] = _utc(values) if field.name == time_column else values.cast(field.type)
        production = pa.table(columns, schema=reference.schema)
    else:
        production = reference.schema.empty_table()
    latest = max(value for value in (pc.max(reference[time_column]).as_py(), pc.max(production[time_column]).as_py())
                 if value is not None)
    end = window_end or latest + timedelta(microseconds=1)
    start = end - timedelta(days=window_days)

    def in_window(table: pa.Table) -> pa.Table:
        times = table[time_column]
        return table.filter(pc.and_(pc.greater_equal(times, pa.scalar(start, times.type)),
                                    pc.less(times, pa.scalar(end, times.type))))

    reference, production = in_window(reference), in_window(production)
    pool = production if production.num_rows else reference
    pool = pool.sort_by(time_column)
    cut = pool.num_rows - max(1, round(pool.num_rows * holdout_fraction))
    holdout = pool.slice(cut)
    if production.num_rows:
        train = pa.concat_tables([reference, production.slice(0, cut)])
    else:
        train = pool.slice(0, cut)
    if train.num_rows == 0:
        raise DataError(f"no training rows between {start.isoformat()} and {end.isoformat()}")
    mark = encryption.input_marking([reference_uri, *([labelled_uri] if labelled_uri else [])])
    encryption.write_like(train, train_path, mark)  # encrypted like a sensitive input
    encryption.write_like(holdout, holdout_path, mark)
    return WindowCounts(reference.num_rows, production.num_rows, holdout.num_rows, start.isoformat(), end.isoformat())
