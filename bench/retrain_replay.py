"""Replay through a live local endpoint, then `dmlops run retrain`: the figures of the closed loop.

A model is trained on a month of synthetic traffic and served with the prediction log on. A production
period is replayed through the endpoint (each request with its x-request-id) in which the data moved
(x is 1.5 higher): in the first scenario only that (covariate shift: the model stays right where it has
seen data, and the confidence-based estimate of its AUC should hold), in the second the relation moved
too (concept shift: its threshold and the carrier effect flipped). Labels arrive 2 to 6 hours after
each prediction.
The retrain pipeline then joins the labels, monitors the window, retrains on a 3-day window that includes
the labelled production rows and rolls the new version out as a canary against the served model.

Prints: the joined fraction (goal >= 99.9 %), the monitor's estimated vs realized AUC on the window, its
verdicts, the AUC of the served model and of the new one on the same holdout (before/after), the
rollout decision, and the retrain run's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import requests

ROWS_REFERENCE, ROWS_PRODUCTION = 2880, 1200


def probability(x: np.ndarray, carrier: np.ndarray, flipped: bool) -> np.ndarray:
    """The true probability of the label: the training period's relation, or the flipped one."""
    effect = np.where(carrier == "UA", 1.0, -1.0) * (-1 if flipped else 1)
    return 1 / (1 + np.exp(-(1.5 * (x - (1.5 if flipped else 0.0)) + effect)))


def rows(count: int, seed: int, production: bool, concept_shift: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(1.5 if production else 0.0, 1.0, count)
    carrier = rng.choice(np.array(["AA", "UA"]), count)
    label = (rng.random(count) < probability(x, carrier, production and concept_shift)).astype(np.int64)
    return x, carrier, label


def scenario(concept_shift: bool) -> None:
    from dmlops.serving.local import EndpointState, start_server, stop_endpoints
    from dmlops.training.config import TrainConfig
    from dmlops.training.data import load_encoded
    from dmlops.training.evaluate import ExportedModel
    from dmlops.training.worker import train

    root = Path(tempfile.mkdtemp(prefix="dmlops-replay-"))
    os.environ["DMLOPS_SERVING_DIR"] = str(root / "serving")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    now = datetime.now(timezone.utc)
    x, carrier, label = rows(ROWS_REFERENCE, 0, production=False, concept_shift=concept_shift)
    times = [now - timedelta(days=30) + timedelta(minutes=15 * i) for i in range(ROWS_REFERENCE)]
    table = pa.table({"time_hour": pa.array(times, pa.timestamp("us", "UTC")), "x": x, "carrier": carrier,
                      "label": label})
    pq.write_table(table, root / "train.parquet")
    train(TrainConfig(train_uri=str(root / "train.parquet"), label="label", export_uri=str(root / "model"),
                      epochs=3, batch_size=128, hidden_units=[16], seed=0))
    model = ExportedModel(str(root / "model"))
    data = load_encoded(str(root / "train.parquet"), model.preprocessing)
    pq.write_table(table.append_column("prediction", pa.array(model.predict_proba(data.numeric, data.categorical))),
                   root / "reference.parquet")

    log = root / "log"
    server = start_server(str(root / "model"), "replay", log_dir=root / "logs",
                          extra_args=("--prediction_log", str(log), "--prediction_log_flush_seconds", "1"))
    EndpointState("replay", stable=server).save()
    x, carrier, label = rows(ROWS_PRODUCTION, 1, production=True, concept_shift=concept_shift)
    rng = np.random.default_rng(2)
    labels, session = [], requests.Session()
    started = time.perf_counter()
    for index in range(ROWS_PRODUCTION):
        request_id = f"req-{index}"
        answer = session.post(server.predict_url, headers={"x-request-id": request_id}, timeout=10,
                              json={"instances": [{"x": float(x[index]), "carrier": str(carrier[index])}]})
        answer.raise_for_status()
        labels.append({"request_id": request_id, "label": int(label[index]),
                       "label_time": datetime.now(timezone.utc) + timedelta(hours=2 + 4 * float(rng.random()))})
    replay_s = time.perf_counter() - started
    pq.write_table(pa.Table.from_pylist(labels), root / "labels.parquet")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logged = sum(pq.read_table(path).num_rows for path in log.rglob("*.parquet"))
        if logged >= ROWS_PRODUCTION:
            break
        time.sleep(1)
    window_end = (datetime.now(timezone.utc) + timedelta(hours=8)).isoformat()
    out = root / "runs"
    params = {"reference_uri": str(root / "reference.parquet"), "predictions_uri": str(log),
              "labels_uri": str(root / "labels.parquet"), "window_end": window_end, "monitor_window_hours": 24.0,
              "window_days": 3.0, "exclude_features": ["prediction"], "model_name": "replay", "endpoint": "replay",
              "epochs": 3}
    command = [sys.executable, "-m", "dmlops.cli", "run", "retrain", "--output-dir", str(out)]
    for name, value in params.items():
        command += ["--param", f"{name}={value if isinstance(value, str) else json.dumps(value)}"]
    started = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=1500)
        retrain_s = time.perf_counter() - started
        if completed.returncode:
            raise SystemExit(completed.stderr[-4000:])
        steps = {path.parent.name: json.loads(path.read_text()) for path in out.rglob("executor_output.json")}
    finally:
        stop_endpoints()

    def metrics(step: str) -> dict:
        return steps[step]["artifacts"]["metrics"]["artifacts"][0]["metadata"]

    fed, watched, rollout = metrics("feedback"), metrics("monitor"), metrics("deploy")
    print(f"== {'concept shift (x moved, relation flipped)' if concept_shift else 'covariate shift (x moved)'}")
    print(f"replayed {ROWS_PRODUCTION} requests through the live endpoint in {replay_s:.1f} s")
    print(f"joined fraction: {fed['joined_fraction']:.4%} ({fed['joined']:.0f} of {fed['predictions']:.0f}; goal >= 99.9 %)")
    print(f"monitor: drifted={bool(watched['drifted'])} degraded={bool(watched['degraded'])}; realized AUC "
          f"{watched.get('realized_auc', float('nan')):.4f}, estimated (CBPE) {watched.get('estimated_auc', float('nan')):.4f}"
          f" (|difference| {abs(watched.get('realized_auc', 0) - watched.get('estimated_auc', 0)):.4f}; goal "
          "<= 0.02, which a confidence-based estimate can meet only without concept shift)")
    print(f"AUC on the same {rollout['stable_labelled_rows']:.0f} held-out production rows: served model "
          f"{rollout['stable_auc']:.4f} -> retrained {rollout['canary_auc']:.4f}; log loss {rollout['stable_log_loss']:.4f}"
          f" -> {rollout['canary_log_loss']:.4f}")
    report = next(out.rglob("deploy/report")).read_text().split("\n\n")[2]  # the decision's reasons
    print(f"rollout: {steps['deploy']['parameterValues']['decision']} ({report.strip('- ')}); "
          f"retrain run {retrain_s:.0f} s")


def main() -> None:
    for concept_shift in (False, True):
        scenario(concept_shift)


if __name__ == "__main__":
    main()
