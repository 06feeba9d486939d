"""Helpers of the serving tests: a small tabular data set, a model exported by the training worker, and
offline predictions computed without the server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from dmlops.training.config import TrainConfig
from dmlops.training.data import Preprocessing
from dmlops.training.worker import train

ORIGINS = ["EWR", "JFK", "LGA"]
CARRIERS = ["AA", "B6", "DL", "UA", "WN"]


def make_table(rows: int, seed: int) -> pa.Table:
    """A small tabular set with float, int and bool numerics, string categoricals, nulls and a 0/1 label."""
    rng = np.random.default_rng(seed)
    distance = rng.uniform(100, 2500, rows)
    dep_hour = rng.integers(5, 23, rows)
    weekend = rng.random(rows) < 0.3
    origin = rng.choice(ORIGINS, rows)
    carrier = rng.choice(CARRIERS + ["ZZ"], rows)  # ZZ: rare, may be unseen in training
    label = ((dep_hour > 16) ^ (rng.random(rows) < 0.2)).astype(np.int64)
    distance_values = [None if index % 17 == 0 else float(value) for index, value in enumerate(distance)]
    carrier_values = [None if index % 23 == 0 else str(value) for index, value in enumerate(carrier)]
    return pa.table({
        "distance": pa.array(distance_values, pa.float64()),
        "dep_hour": pa.array(dep_hour, pa.int64()),
        "weekend": pa.array(weekend, pa.bool_()),
        "origin": pa.array(origin, pa.string()),
        "carrier": pa.array(carrier_values, pa.string()),
        "label": pa.array(label, pa.int64()),
    })


def export_model(data_dir: Path, export_dir: Path, seed: int) -> Path:
    train(TrainConfig(
        train_uri=str(data_dir / "train.parquet"), label="label", export_uri=str(export_dir),
        epochs=2, batch_size=64, hidden_units=[16], seed=seed,
    ))
    return export_dir


def offline_probabilities(model_dir: Path, rows: list[dict]) -> np.ndarray:
    """The exported model's predictions computed without the server: training preprocessing + the torch.export program."""
    metadata = json.loads((model_dir / "metadata.json").read_text())
    preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    types = {name: pa.float64() for name in preprocessing.numeric} | {name: pa.string() for name in preprocessing.categorical}
    types["dep_hour"] = pa.int64()
    types["weekend"] = pa.bool_()
    table = pa.Table.from_pylist(rows, schema=pa.schema([(name, types[name]) for name in [*preprocessing.numeric, *preprocessing.categorical]]))
    numeric, categorical = preprocessing.encode(table, "offline")
    module = torch.export.load(str(model_dir / metadata["model_files"]["torch_export"])).module()
    with torch.no_grad():
        return torch.sigmoid(module(torch.from_numpy(numeric), torch.from_numpy(categorical))).double().numpy()


def v2_body(rows: list[dict], request_id: str | None = None) -> dict:
    """A V2 inference request with one input tensor per field of ``rows``."""
    def datatype(name: str) -> str:
        return {"distance": "FP64", "dep_hour": "INT64", "weekend": "BOOL"}.get(name, "BYTES")

    body = {"inputs": [{"name": name, "shape": [len(rows)], "datatype": datatype(name), "data": [row[name] for row in rows]}
                       for name in rows[0]]}
    if request_id:
        body["id"] = request_id
    return body
