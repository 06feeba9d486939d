"""The closed loop on the real flights (bench/flights_replay.py), on every 20th flight of September-December
and every 4th of January-August: the champion trained on January-August serves the replayed traffic with
the prediction log on, every label is joined, the weekly monitor flags the shift and `dmlops run retrain`
promotes a new champion."""

import importlib.util
import sys
from datetime import datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # trains two models, serves them, runs the retrain pipeline

pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "flights_replay.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("flights_replay", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_replayed_autumn_is_detected_retrained_and_promoted(tmp_path, monkeypatch):
    from dmlops.registry.mlflow_registry import served_at

    bench = load_bench()
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DMLOPS_SERVING_DIR", str(tmp_path / "serving"))
    figures = bench.run(tmp_path, bench.ReplaySettings(every=20, train_every=4, epochs=1))

    # every replayed row was answered, logged once and joined to its label
    assert figures["logged_rows"] == figures["traffic_rows"] > 5000
    joined = figures["joined"]
    assert joined["predictions"] == joined["joined"] == figures["traffic_rows"]
    assert joined["expired"] == joined["unmatched_labels"] == joined["duplicate_predictions"] == 0
    # 17 full weeks from September 1; at each week's end the last hours' labels were still on their way
    windows = figures["windows"]
    assert len(windows) == 17 and sum(window["rows"] for window in windows) <= figures["traffic_rows"]
    assert all(window["pending_at_end"] < window["rows"] for window in windows) and \
        sum(window["pending_at_end"] for window in windows) > 0
    # what drifted: the season's weather; the estimate is calibrated where the model was fitted
    assert any(name.startswith("weather__temp ") for name in windows[0]["drifted_features"])
    overall = figures["cbpe_by_month"][0]
    assert overall["month"] == "all" and abs(overall["estimated_auc"] - overall["realized_auc"]) < 0.01
    # the first week is flagged; the retrain pipeline ran on what was known then and replaced the champion
    assert figures["detected_at"] == windows[0]["end"] and figures["detection_days"] == 7
    assert figures["retrain_monitor"]["drifted"] == 1.0
    assert figures["retrain_window"]["production_rows"] > 0
    assert figures["decision"] == "promote", figures["report_reasons"]
    assert int(figures["champion_version"]["after"]) == int(figures["champion_version"]["before"]) + 1
    registry = f"sqlite:///{tmp_path / 'registry' / 'mlflow.db'}"
    assert served_at(bench.ReplaySettings().endpoint, datetime.now().timestamp(), registry).model_version == \
        figures["champion_version"]["after"]
