"""The CLI's own behaviour: a failed local run ends with a clear line, not the CLI's traceback."""

import subprocess
import sys


def test_a_failed_run_names_the_failing_step(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "dmlops.cli", "run", "flights", "--output-dir", str(tmp_path / "runs"),
         "--param", f"flights_uri={tmp_path / 'missing.csv'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )
    assert completed.returncode == 1
    last = completed.stderr.strip().splitlines()[-1]
    assert "Inner task failed" in last and "ingest" in last
    assert last.endswith("The failing step's error is in its log above.")
    assert "missing.csv" in completed.stdout + completed.stderr


def test_unknown_pipeline_is_named(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "dmlops.cli", "run", "nope"], capture_output=True, text=True,
                               cwd=tmp_path)
    assert completed.returncode != 0
    assert "unknown pipeline 'nope'; known: flights" in completed.stderr
