"""Synthetic production traffic for the monitoring tests: a prediction log written in the predictor's
layout, labels that arrive later, and a training reference with the model's probabilities."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dmlops.serving.log_layout import LOG_SCHEMA, partition

START = datetime.fromisoformat("2026-03-01T00:00:00+00:00")


def probability(x: np.ndarray, carrier: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-(1.5 * x + np.where(carrier == "UA", 0.5, -0.5))))


def features(rows: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(shift, 1.0, rows), rng.choice(np.array(["AA", "UA"]), rows, p=[0.6, 0.4])


def write_reference(path: Path, rows: int = 4000, seed: int = 0) -> Path:
    """Training rows whose labels follow the model's (calibrated) probabilities."""
    x, carrier = features(rows, seed)
    p = probability(x, carrier)
    label = (np.random.default_rng(seed + 1).random(rows) < p).astype(np.int64)
    pq.write_table(pa.table({"x": x, "carrier": carrier, "prediction": p, "label": label}), path)
    return path


def write_log(root: Path, records: list[dict]) -> None:
    """Records {request_id, row, time, features, prediction} as the predictor writes them (hourly files)."""
    by_hour: dict[str, list[dict]] = {}
    for record in records:
        by_hour.setdefault(partition(record["time"]), []).append(record)
    for index, (hour, group) in enumerate(sorted(by_hour.items())):
        (root / hour).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "request_id": [r["request_id"] for r in group], "row": [r["row"] for r in group],
            "model_name": ["delay"] * len(group), "model_version": ["1"] * len(group),
            "time": [r["time"] for r in group], "features": [json.dumps(r["features"]) for r in group],
            "prediction": [r["prediction"] for r in group], "output": [json.dumps(r["prediction"]) for r in group],
        }, schema=LOG_SCHEMA), root / hour / f"part-{index}.parquet")


def traffic(rows: int, seed: int, shift: float = 0.0, start: datetime = START, label_noise: float = 0.0,
            prefix: str = "r") -> tuple[list[dict], list[dict]]:
    """Logged predictions (one a minute) and their true labels (each arriving 2 to 6 hours later).
    ``label_noise``: the share of labels replaced by coin flips (the model got worse)."""
    x, carrier = features(rows, seed, shift)
    p = probability(x, carrier)
    rng = np.random.default_rng(seed + 1)
    label = (rng.random(rows) < p).astype(np.int64)
    noisy = rng.random(rows) < label_noise
    label[noisy] = rng.integers(0, 2, int(noisy.sum()))
    records, labels = [], []
    for index in range(rows):
        moment = start + timedelta(minutes=index)
        records.append({"request_id": f"{prefix}{index}", "row": 0, "time": moment,
                        "features": {"x": float(x[index]), "carrier": str(carrier[index])},
                        "prediction": float(p[index])})
        labels.append({"request_id": f"{prefix}{index}", "label": int(label[index]),
                       "label_time": moment + timedelta(hours=2 + 4 * float(rng.random()))})
    return records, labels


def write_labels(path: Path, labels: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(labels), path)
    return path
