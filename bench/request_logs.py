"""Request log lines benchmark: the dmlops predictor writing its JSON line per prediction request
(dmlops.platform.logs) against the same predictor with that line off.

Two model servers on 127.0.0.1 serve the same flights model; one runs with ``KSERVE_LOGLEVEL=WARNING``, so
its answered requests write no line (uvicorn's access log and KServe's latency lines are off in both, as the
predictor runs by default). Requests of 1 row at concurrency 1 and 8, rounds interleaved between the
peers (bench/prediction_log.py's measure: median req/s, and each server's own CPU time per request, which
on a machine whose cores other work shares is the steadier figure). Goal: lines on >= 0.95x lines off.
After the run, the server with lines must have written one per answered request.

    python bench/request_logs.py [--requests 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from prediction_log import measure
from serve import MODEL_NAME, flights_model

def start(lines: str, model_dir: Path, log_path: Path) -> tuple[subprocess.Popen, str]:
    from dmlops.platform.local import free_ports

    (port,) = free_ports(1)
    process = subprocess.Popen(
        [sys.executable, "-m", "dmlops.serving", "--model_dir", str(model_dir), "--model_name", MODEL_NAME,
         "--http_port", str(port), "--host", "127.0.0.1", "--enable_grpc", "false"],
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "DMLOPS_LOG_FORMAT": "json", "KSERVE_LOGLEVEL": "INFO" if lines == "on" else "WARNING"})
    url = f"http://127.0.0.1:{port}/v1/models/{MODEL_NAME}"
    for _ in range(600):
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return process, f"{url}:predict"
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not start; see {log_path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()


    root = Path(tempfile.mkdtemp(prefix="dmlops-bench-request-logs-"))
    _, rows = flights_model(root)
    bodies = [{"instances": [row]} for row in rows[:args.requests]]

    servers = {}
    try:
        for lines in ("on", "off"):
            servers[lines] = start(lines, root / "model", root / f"server-{lines}.log")
        print(f"{args.requests} requests of 1 row per measurement, median of {args.rounds} interleaved rounds")
        print(f"{'concurrency':>11} {'lines':<6} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'failed':>6} "
              f"{'CPU ms/req':>10}")
        sent = 0
        for concurrency in (1, 8):
            results = measure({name: (process.pid, url, bodies) for name, (process, url) in servers.items()},
                              concurrency, args.rounds)
            for name, result in results.items():
                print(f"{concurrency:>11} {name:<6} {result['rps']:>8.0f} {result['p50']:>7.2f} {result['p99']:>7.2f} "
                      f"{result['failed']:>6} {result['cpu_ms']:>10.3f}")
            print(f"{concurrency:>11} lines on / off: req/s {results['on']['rps'] / results['off']['rps']:.3f}x, "
                  f"CPU-bound throughput (off / on CPU per request) "
                  f"{results['off']['cpu_ms'] / results['on']['cpu_ms']:.3f}x (goal >= 0.95x)")
            sent += args.rounds * (len(bodies) + 50)  # each round: 50 warm-up + the bodies
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
    written = {name: sum(line.startswith('{"@timestamp"') and '"dmlops.serving.predictor"' in line
                         for line in (root / f"server-{name}.log").read_text().splitlines()) for name in servers}
    print(f"request lines: {written['on']} written for {sent} requests with lines on, {written['off']} with them off "
          f"(goal: one per request, none)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
