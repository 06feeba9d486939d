"""Prediction logging benchmark: the dmlops predictor with its prediction log on against the same predictor
with it off.

Two model servers on 127.0.0.1 serve the same flights model with the same options; one logs every request
to a local folder (``--prediction_log``, hourly Parquet written by a background thread). Requests of 1
row and of 100 rows, at concurrency 1 and 8, rounds interleaved between the peers (the bench/serve.py
client). Goal: logging on >= 0.95x logging off in req/s. Beside req/s, each server's own CPU time per
request (its process over all rounds, the log's writer thread and its last flush included): on a machine
whose cores other work shares, wall-clock req/s swings with that work, while the CPU a request costs does
not; off/on CPU per request is the throughput ratio the servers reach when CPU-bound. After the run the log
must hold every row that was answered, with none dropped.

    python bench/prediction_log.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import psutil
import requests

from serve import MODEL_NAME, flights_model, load

FLUSH_WAIT_S = 11.0  # the log's writer flushes every 10 s: what it writes for the rounds is written by then


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def measure(peers: dict[str, tuple[int, str, list[dict]]], concurrency: int, rounds: int) -> dict[str, dict]:
    """Interleaved rounds per peer (pid, url, bodies): the median round's req/s and latency, and the
    server's CPU time over all rounds (and the writes of what they logged) per request sent."""
    runs: dict[str, list[dict]] = {name: [] for name in peers}
    started = {name: cpu_seconds(pid) for name, (pid, _, _) in peers.items()}
    sent = dict.fromkeys(peers, 0)
    for _ in range(rounds):
        for name, (_, url, bodies) in peers.items():
            load(url, bodies[:50], concurrency)  # warm-up
            runs[name].append(load(url, bodies, concurrency))
            sent[name] += len(bodies[:50]) + len(bodies)
    time.sleep(FLUSH_WAIT_S)
    results = {}
    for name, (pid, _, _) in peers.items():
        median = sorted(runs[name], key=lambda run: run["rps"])[rounds // 2]
        results[name] = {**median, "cpu_ms": (cpu_seconds(pid) - started[name]) * 1000 / sent[name]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from dmlops.serving.local import start_server, stop_server
    from dmlops.serving.log_layout import read_log

    root = Path(tempfile.mkdtemp(prefix="dmlops-bench-log-"))
    _, rows = flights_model(root)
    shapes = {1: [{"instances": [row]} for row in rows[:args.requests]],
              100: [{"instances": rows[i:i + 100]} for i in range(0, 100 * (args.requests // 10), 100)]}

    servers = {}
    try:
        servers["off"] = start_server(str(root / "model"), MODEL_NAME, log_dir=root / "logs")
        servers["on"] = start_server(str(root / "model"), MODEL_NAME, log_dir=root / "logs",
                                     extra_args=("--prediction_log", str(root / "predictions")))
        print(f"{args.requests} requests of 1 row and {args.requests // 10} of 100 rows per measurement, "
              f"median of {args.rounds} interleaved rounds")
        print(f"{'rows/request':>12} {'concurrency':>11} {'logging':<8} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'failed':>6} {'CPU ms/req':>10}")
        answered = 0
        for size, bodies in shapes.items():
            for concurrency in (1, 8):
                results = measure({name: (server.pid, server.predict_url, bodies) for name, server in servers.items()},
                                  concurrency, args.rounds)
                for name, result in results.items():
                    print(f"{size:>12} {concurrency:>11} {name:<8} {result['rps']:>8.0f} {result['p50']:>7.2f} "
                          f"{result['p99']:>7.2f} {result['failed']:>6} {result['cpu_ms']:>10.3f}")
                ratio = results["on"]["rps"] / results["off"]["rps"]
                cpu_ratio = results["off"]["cpu_ms"] / results["on"]["cpu_ms"]
                print(f"{size:>12} {concurrency:>11} logging on / off: req/s {ratio:.3f}x, CPU-bound throughput "
                      f"(off / on CPU per request) {cpu_ratio:.3f}x (goal >= 0.95x)")
                answered += args.rounds * (len(bodies) + 50) * size  # each round: 50 warm-up + the bodies
        metrics = requests.get(f"{servers['on'].url}/metrics", timeout=10).text
        dropped = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                      if line.startswith("dmlops_serving_log_rows_dropped_total{"))
    finally:
        for server in servers.values():
            stop_server(server)
    logged = read_log(str(root / "predictions")).num_rows
    print(f"prediction log: {logged} rows logged of {answered} answered, {dropped:.0f} dropped "
          f"(goal: all logged, none dropped)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
