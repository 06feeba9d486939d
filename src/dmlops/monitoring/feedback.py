"""Delayed labels joined to the logged predictions by request id: the labelled production set.

Labels arrive after the prediction (a flight lands hours later): a Parquet file or folder with the columns
``request_id`` (string), the label (``label`` or the name given), ``label_time`` (timestamp, UTC when
naive) and optionally ``row`` (the row of a multi-row request, 0 when absent). Predictions are read from
the prediction log (:mod:`dmlops.serving.prediction_log`).

Every logged prediction (one per request id and row) is counted exactly once, as

- **joined**: a label arrived for it;
- **pending**: no label yet, and it is younger than ``max_label_delay_hours`` at ``as_of``;
- **expired**: no label and older than that: its label is taken to be lost.

Every label row is counted exactly once too: it is **later** than ``as_of`` (its ``label_time`` is after
the moment judged at: it had not arrived then, and is left for a later run), or the label joined, a
**duplicate** (an earlier label of a prediction that got a later one: the last ``label_time`` wins), or
**unmatched** (no logged prediction in the window has its request id and row). A prediction logged twice (a retried write) is
counted once, in ``duplicate_predictions``.

The labelled production set (one row per joined prediction) has the columns, in order:
``request_id``, ``row``, ``model_name``, ``model_version``, ``prediction_time`` (UTC timestamp), one
column per logged feature (the names the model was served, as in the training set), ``prediction``
(float64 probability), the label (``label_name``, the values as they arrived), ``label_time`` (UTC) and
``label_lag_seconds`` (label_time - prediction_time).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.serving.log_layout import read_log

KEY = ["request_id", "row"]
META_COLUMNS = ["request_id", "row", "model_name", "model_version", "prediction_time"]
TAIL_COLUMNS = ["prediction", "label_time", "label_lag_seconds"]


@dataclass
class FeedbackCounts:
    """What happened to every logged prediction and every label row (see the module docstring)."""

    predictions: int
    joined: int
    pending: int
    expired: int
    duplicate_predictions: int
    labels: int
    duplicate_labels: int
    unmatched_labels: int
    later_labels: int = 0

    @property
    def joined_fraction(self) -> float:
        """Joined predictions among those whose label is due (joined + expired); 1.0 when none is due."""
        due = self.joined + self.expired
        return self.joined / due if due else 1.0

    def metrics(self) -> dict[str, float]:
        return {**{name: float(value) for name, value in asdict(self).items()},
                "joined_fraction": self.joined_fraction}


def _utc(values: pd.Series) -> pd.Series:
    values = pd.to_datetime(values)
    return values.dt.tz_localize("UTC") if values.dt.tz is None else values.dt.tz_convert("UTC")


def read_labels(path: str, label_name: str) -> pd.DataFrame:
    """The label rows at ``path`` (a Parquet file or folder, local or URI) with a ``row`` column."""
    filesystem, location = storage.filesystem(path)
    table = pq.read_table(location, filesystem=filesystem)
    missing = [name for name in ("request_id", label_name, "label_time") if name not in table.column_names]
    if missing:
        raise DataError(f"{path}: the labels need the columns request_id, {label_name}, label_time; missing {missing}")
    labels = table.to_pandas()
    labels["request_id"] = labels["request_id"].astype(str)
    labels["row"] = labels["row"].astype("int64") if "row" in labels else 0
    labels["label_time"] = _utc(labels["label_time"])
    return labels[["request_id", "row", label_name, "label_time"]]


def _features(features_json: pd.Series) -> pd.DataFrame:
    return pd.DataFrame.from_records([json.loads(text) for text in features_json], index=features_json.index)


def join_labels(
    log_uri: str,
    labels_path: str,
    output_path: str | Path,
    *,
    max_label_delay_hours: float = 24.0,
    as_of: datetime | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    label_name: str = "label",
) -> FeedbackCounts:
    """Join the labels at ``labels_path`` to the predictions logged under ``log_uri`` in ``[since, until)``,
    write the labelled production set to ``output_path`` (Parquet) and return the counts.

    ``as_of`` (default: now) is the moment pending and expired are judged at.
    """
    if max_label_delay_hours <= 0:
        raise ValueError("max_label_delay_hours must be above 0")
    as_of = as_of or datetime.now(timezone.utc)
    logged = read_log(log_uri, since=since, until=until).to_pandas()
    logged["row"] = logged["row"].astype("int64")
    predictions = logged.drop_duplicates(KEY, keep="first")
    labels = read_labels(labels_path, label_name)
    arrived = labels["label_time"] <= pd.Timestamp(as_of).tz_convert("UTC")
    later = int((~arrived).sum())
    labels = labels.loc[arrived]
    latest = labels.sort_values("label_time", kind="stable").drop_duplicates(KEY, keep="last")
    joined = predictions.merge(latest, on=KEY, how="inner", validate="one_to_one")
    unlabelled = predictions.loc[~predictions.set_index(KEY).index.isin(latest.set_index(KEY).index)]
    age = pd.Timestamp(as_of).tz_convert("UTC") - _utc(unlabelled["time"])
    expired = int((age > pd.Timedelta(hours=max_label_delay_hours)).sum())
    counts = FeedbackCounts(
        predictions=len(predictions), joined=len(joined), pending=len(unlabelled) - expired, expired=expired,
        duplicate_predictions=len(logged) - len(predictions), labels=len(labels) + later,
        duplicate_labels=len(labels) - len(latest), unmatched_labels=len(latest) - len(joined), later_labels=later,
    )
    features = _features(joined["features"])
    clashes = sorted(set(features.columns) & {*META_COLUMNS, *TAIL_COLUMNS, label_name})
    if clashes:
        raise DataError(f"logged features {clashes} have the names of columns the labelled set adds; rename them")
    prediction_time = _utc(joined["time"])
    labelled = pd.concat([
        joined[["request_id", "row", "model_name", "model_version"]].assign(prediction_time=prediction_time),
        features,
        joined[["prediction", label_name, "label_time"]].assign(
            label_lag_seconds=(joined["label_time"] - prediction_time).dt.total_seconds()),
    ], axis=1)
    filesystem, location = storage.filesystem(str(output_path))
    parent = location.rsplit("/", 1)[0]
    if parent:
        filesystem.makedirs(parent, exist_ok=True)
    with filesystem.open(location, "wb") as handle:
        pq.write_table(pa.Table.from_pandas(labelled, preserve_index=False), handle)
    return counts
