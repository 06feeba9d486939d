"""`dmlops run retrain`: drifted production traffic with delayed labels makes the pipeline train on a fresh
window, register the new version, roll it out and make it the champion."""

import json
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from monitoring.monitoring_data import START, features, probability, traffic, write_labels, write_log

pytestmark = pytest.mark.slow  # trains a model and starts a model server

pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")


def write_reference(path, rows: int = 3000):
    """A month of training rows before the production traffic, labels following the model's probabilities."""
    x, carrier = features(rows, seed=0)
    p = probability(x, carrier)
    label = (np.random.default_rng(1).random(rows) < p).astype(np.int64)
    times = [START - timedelta(days=30) + timedelta(minutes=15 * index) for index in range(rows)]
    pq.write_table(pa.table({"time_hour": pa.array(times, pa.timestamp("us", "UTC")), "x": x, "carrier": carrier,
                             "prediction": p, "label": label}), path)
    return path


def test_drift_retrains_registers_deploys_and_promotes(tmp_path, monkeypatch):
    from dmlops.registry.mlflow_registry import get_version, served_at
    from dmlops.serving.log_layout import read_log

    records, labels = traffic(600, seed=5, shift=1.5)  # production moved: x is 1.5 higher
    write_log(tmp_path / "log", records)
    write_labels(tmp_path / "labels.parquet", labels)
    write_reference(tmp_path / "reference.parquet")
    window_end = (START + timedelta(minutes=600, hours=8)).isoformat()
    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "runs"
    params = {"reference_uri": str(tmp_path / "reference.parquet"), "predictions_uri": str(tmp_path / "log"),
              "labels_uri": str(tmp_path / "labels.parquet"), "window_end": window_end,
              "monitor_window_hours": 24.0, "window_days": 30.0, "exclude_features": ["prediction"],
              "model_name": "delays", "endpoint": "retrain-delays", "epochs": 2}
    command = [sys.executable, "-m", "dmlops.cli", "run", "retrain", "--output-dir", str(out)]
    for name, value in params.items():
        command += ["--param", f"{name}={json.dumps(value) if not isinstance(value, str) else value}"]
    registry = f"sqlite:///{out / 'registry' / 'mlflow.db'}"

    def run() -> dict:
        before = set(out.glob("retrain-*"))
        completed = subprocess.run(command, capture_output=True, text=True, timeout=1500)
        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-5000:]
        (run_dir,) = set(out.glob("retrain-*")) - before
        return {path.parent.name: json.loads(path.read_text()) for path in run_dir.rglob("executor_output.json")}

    try:
        first = run()
        assert first["monitor"]["parameterValues"]["drifted"] is True
        window = first["training-window"]["parameterValues"]
        assert window["production_rows"] == 600 and window["holdout_rows"] == 120 and window["reference_rows"] > 2000
        assert first["registered-model"]["parameterValues"]["found"] is False  # no champion yet
        assert "evaluate-2" not in first  # so no champion to evaluate
        registered = first["register-model"]["parameterValues"]["model_uri"]
        assert first["deploy"]["parameterValues"]["decision"] == "first-deploy"
        champion = get_version("models:/delays@champion", registry)
        assert champion.uri == registered and {"challenger", "champion"} <= set(champion.aliases)
        assert champion.tags["dataset/train/sha256"] and champion.tags["dataset/eval/sha256"]
        between = time.time()

        second = run()  # still drifted: a new challenger, judged against the serving champion
        assert second["registered-model"]["parameterValues"] == {"version": champion.version, "found": True}
        assert "evaluate-2" in second  # the champion, on the same holdout as the challenger
        assert second["deploy"]["parameterValues"]["decision"] == "promote"
        quality = second["deploy"]["artifacts"]["metrics"]["artifacts"][0]["metadata"]
        assert quality["stable_labelled_rows"] == quality["canary_labelled_rows"] == 120
        new = get_version("models:/delays@champion", registry)
        assert int(new.version) == int(champion.version) + 1
        assert served_at("retrain-delays", between, registry).model_version == champion.version
        assert served_at("retrain-delays", time.time(), registry).model_version == new.version
        subprocess.run([sys.executable, "-m", "dmlops.cli", "serve", "--stop"], check=True)  # its servers write their logs
        logged = read_log(str(tmp_path / "log"))
        assert logged.num_rows > 600  # the deployed versions logged the deploys' requests where the monitor reads
    finally:
        subprocess.run([sys.executable, "-m", "dmlops.cli", "serve", "--stop"], check=False)
