"""Fixtures for the serving tests: a small model exported by the training worker, its eval rows, and
local model servers started with the local serving backend."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.serving.local import ServerProcess, start_server, stop_server
from serving_helpers import export_model, make_table


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("serving-data")
    pq.write_table(make_table(400, seed=1), directory / "train.parquet")
    pq.write_table(make_table(120, seed=2), directory / "eval.parquet")
    return directory


@pytest.fixture(scope="session")
def model_dir(data_dir, tmp_path_factory) -> Path:
    """A torch model exported by the training worker (torch.export program + ONNX + metadata.json)."""
    return export_model(data_dir, tmp_path_factory.mktemp("models") / "stable", seed=0)


@pytest.fixture(scope="session")
def eval_rows(data_dir) -> list[dict]:
    table = pq.read_table(data_dir / "eval.parquet")
    return table.drop_columns(["label"]).to_pylist()


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory) -> ServerProcess:
    """One local dmlops model server over HTTP on 127.0.0.1."""
    process = start_server(str(model_dir), "flights-delay", log_dir=tmp_path_factory.mktemp("server-logs"))
    yield process
    stop_server(process)


@pytest.fixture(scope="session", params=["redis", "sqlite"])
def feast_store(request, tmp_path_factory) -> dict:
    """A Feast store with a Redis (read asynchronously by the predictor) or SQLite (read in a worker
    thread) online store: ``plane_route:distance`` for planes N1..N5 (N5's distance null)."""
    from datetime import datetime, timezone

    from dmlops.features import apply, local_store_spec, materialize

    root = tmp_path_factory.mktemp("feast")
    planes = root / "planes.parquet"
    pq.write_table(pa.table({
        "tailnum": ["N1", "N2", "N3", "N4", "N5"],
        "distance": [100.0, 250.5, 1000.0, 2500.0, None],
        "event_timestamp": pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)] * 5, pa.timestamp("us", "UTC")),
    }), planes)
    redis = request.getfixturevalue("redis_server") if request.param == "redis" else ""
    store = local_store_spec(root / "store", project="serving_test", redis_connection=redis)
    apply(store, "serving_feast_repo:definitions", {"planes": str(planes)})
    materialize(store, start="2023-12-31", end="2024-01-02", incremental=False)
    return store
