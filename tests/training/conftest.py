"""Fixtures for the training tests: a small synthetic tabular data set and an S3 server (moto)."""

from __future__ import annotations

import os
import socket

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

TRAIN_ROWS = 600
EVAL_ROWS = 300


def make_table(rows: int, seed: int) -> pa.Table:
    """A learnable binary problem: two numeric columns (one with nulls), one categorical column, a
    timestamp column that inference must skip, and a 0/1 label."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=rows)
    count = rng.integers(0, 100, rows)
    group = rng.choice(["north", "south", "east", "west"], rows, p=[0.4, 0.3, 0.2, 0.1])
    logit = 1.5 * signal + (count - 50) / 30 + np.where(group == "north", 1.0, -0.7)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    signal_with_nulls = pa.array(np.where(rng.random(rows) < 0.05, np.nan, signal), from_pandas=True)
    return pa.table({
        "signal": signal_with_nulls,
        "count": count,
        "group": group,
        "observed_at": pa.array(np.arange(rows) * 3600, pa.int64()).cast(pa.timestamp("s")),
        "label": label,
    })


@pytest.fixture(scope="session")
def table_maker():
    """The synthetic table generator, ``table_maker(rows, seed)``."""
    return make_table


@pytest.fixture(scope="session")
def tabular(tmp_path_factory) -> dict[str, str]:
    """Paths of a training and an evaluation Parquet file."""
    root = tmp_path_factory.mktemp("tabular")
    paths = {"train": str(root / "train.parquet"), "eval": str(root / "eval.parquet")}
    pq.write_table(make_table(TRAIN_ROWS, seed=0), paths["train"])
    pq.write_table(make_table(EVAL_ROWS, seed=1), paths["eval"])
    return paths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_bucket():
    """An S3 bucket on a local moto server; the endpoint is exported so worker processes reach it too."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    settings = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    boto3.client("s3", endpoint_url=settings["AWS_ENDPOINT_URL"]).create_bucket(Bucket="training")
    yield "s3://training"
    server.stop()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
