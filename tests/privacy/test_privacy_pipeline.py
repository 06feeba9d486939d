"""A flights data set with a passenger e-mail: scanned and pseudonymized by the components loaded from their
YAML, trained on and registered, served with a prediction log, a Feast store keyed by the pseudonym, then one
passenger erased from every store (datasets, quarantine, offline source, prediction log, online store) with the
receipt checked, the registered model listed in it."""

import asyncio
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from kfp import dsl, local

from component_yaml import load_yaml_component
from dmlops.features import apply, local_store_spec, materialize
from dmlops.features.config import open_store
from dmlops.privacy.pseudonymize import pseudonym
from dmlops.registry.mlflow_registry import register
from dmlops.serving.prediction_log import PredictionLog, read_log
from dmlops.serving.predictor import DmlopsModel
from dmlops.training.config import TrainConfig
from dmlops.training.worker import train

KEY = "pipeline test key"
PASSENGERS = [f"passenger{index}@example.com" for index in range(12)]
SUBJECT = PASSENGERS[3]


def flights(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    hour = rng.integers(5, 23, rows)
    return pa.table({
        "passenger_email": [PASSENGERS[index % len(PASSENGERS)] for index in range(rows)],
        "dep_hour": hour, "distance": rng.uniform(100, 2500, rows), "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "label": ((hour > 16) ^ (rng.random(rows) < 0.1)).astype(np.int64),
    })


def outputs(root: Path, step: str) -> dict:
    (path,) = [path for path in root.rglob("executor_output.json") if path.parent.name == step]
    return json.loads(path.read_text())["artifacts"]


def local_path(artifact: dict) -> str:
    return artifact["artifacts"][0]["uri"].removeprefix("file://")


def matches(table: pa.Table) -> int:
    wanted = {SUBJECT, pseudonym(SUBJECT, KEY.encode())}
    found = sum(value in wanted for value in table["passenger_email"].to_pylist()) if "passenger_email" in table.column_names else 0
    if "features" in table.column_names:
        found += sum(json.loads(text).get("passenger_email") in wanted for text in table["features"].to_pylist() if text)
    return found


def test_pii_flights_pseudonymized_trained_served_and_one_passenger_erased(tmp_path, monkeypatch):
    monkeypatch.setenv("DMLOPS_PSEUDONYM_KEY", KEY)  # as a Secret gives it to the steps
    raw, quarantine, schema = tmp_path / "raw.parquet", tmp_path / "quarantine.parquet", tmp_path / "schema.json"
    table = flights(480)
    pq.write_table(table, raw)
    pq.write_table(table.slice(0, 24).append_column("_reason", pa.array(["cancelled"] * 24)), quarantine)
    schema.write_text(json.dumps({"columns": {"passenger_email": {"type": "string", "pii": "pseudonymize"}}}))
    scan, pseudonymize, erase = (load_yaml_component("privacy", name) for name in ("pii_scan", "pseudonymize", "erase_subject"))

    @dsl.pipeline(name="privacy-prepare")
    def prepare(dataset_uri: str, schema_uri: str):
        dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset)
        scan(dataset=dataset.output)
        pseudonymize(dataset=dataset.output,
                     schema=dsl.importer(artifact_uri=schema_uri, artifact_class=dsl.Artifact).output)

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    prepare(dataset_uri=str(raw), schema_uri=str(schema))
    assert outputs(root, "pii-scan")["report"]["artifacts"][0]["metadata"]["pii_columns"] == ["passenger_email"]
    prepared = local_path(outputs(root, "pseudonymize")["output"])
    assert SUBJECT not in pq.read_table(prepared)["passenger_email"].to_pylist() and matches(pq.read_table(prepared)) == 40

    # a per-passenger offline feature source keyed by the pseudonym, as Feast reads it
    features = tmp_path / "passenger_features.parquet"
    pq.write_table(pa.table({
        "passenger_email": [pseudonym(email, KEY.encode()) for email in PASSENGERS],
        "flights": [40] * len(PASSENGERS),
        "event_timestamp": pa.array([datetime(2013, 1, 1, tzinfo=timezone.utc)] * len(PASSENGERS), pa.timestamp("us", "UTC")),
    }), features)
    store = local_store_spec(tmp_path / "store", project="privacy_test")
    apply(store, "privacy_feast_repo:definitions", {"passengers": str(features)})
    materialize(store, start="2012-12-31", end="2013-01-02", incremental=False)

    def online_flights() -> list:
        rows = [{"passenger_email": pseudonym(email, KEY.encode())} for email in (SUBJECT, PASSENGERS[4])]
        return open_store(store).get_online_features(["passenger_stats:flights"], rows).to_dict()["flights"]

    assert online_flights() == [40, 40]

    model_dir = tmp_path / "model"
    train(TrainConfig(train_uri=prepared, label="label", export_uri=str(model_dir), epochs=1, batch_size=64,
                      hidden_units=[8], numeric_features=["dep_hour", "distance"],
                      categorical_features=["origin", "passenger_email"], seed=0))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # the registry steps use
    registered = register("pii-flights", str(model_dir), datasets={"train": prepared})
    log_dir = tmp_path / "prediction-log"
    model = DmlopsModel("pii-flights", str(model_dir), prediction_log=PredictionLog(str(log_dir), model_name="pii-flights"))
    model.load()
    served = pq.read_table(prepared).slice(0, 36).drop_columns(["label"]).to_pylist()
    predictions = asyncio.run(model.predict({"instances": served}, {}))["predictions"]
    assert len(predictions) == 36 and all(0 <= value <= 1 for value in predictions)
    model.stop()
    assert matches(read_log(str(log_dir))) == 3

    stores = [raw, quarantine, Path(prepared), features, log_dir]
    before = {str(store): sum(matches(pq.read_table(path)) for path in ([store] if store.is_file() else store.rglob("*.parquet")))
              for store in stores}
    assert before == {str(raw): 40, str(quarantine): 2, prepared: 40, str(features): 1, str(log_dir): 3}

    monkeypatch.setenv("DMLOPS_ERASURE_SUBJECT", SUBJECT)  # a Secret made for the request, never a parameter

    @dsl.pipeline(name="privacy-erase")
    def erase_everywhere(locations: list, feast_store: dict):
        erase(column="passenger_email", locations=locations, feast_store=feast_store)

    erase_everywhere(locations=[str(location) for location in stores], feast_store=store)
    receipt_artifact = outputs(root, "erase-subject")["receipt"]
    receipt = json.loads(Path(local_path(receipt_artifact)).read_text())
    assert receipt_artifact["artifacts"][0]["metadata"]["rows_removed"] == 87
    assert receipt["remaining"] == 0 and SUBJECT not in json.dumps(receipt)
    assert [(model["name"], model["version"], model["dataset"], model["store"]) for model in receipt["models"]] == [
        ("pii-flights", registered.version, "train", prepared)]  # listed to retrain, not deleted
    assert receipt_artifact["artifacts"][0]["metadata"]["models_to_retrain"] == [f"pii-flights/{registered.version}"]
    online = receipt["stores"][-1]
    assert online["store"] == "feast online sqlite: privacy_test/passenger_stats" and online["rows_removed"] == 1
    removed: dict[str, int] = {}
    for entry in receipt["stores"][:-1]:
        owner = next(str(location) for location in stores if entry["store"].startswith(str(location)))
        removed[owner] = removed.get(owner, 0) + entry["rows_removed"]
    for entry in receipt["stores"]:
        assert (entry["sha256_before"] != entry["sha256_after"]) == (entry["rows_removed"] > 0)
    assert removed == before
    for location in stores:
        for path in [location] if location.is_file() else location.rglob("*.parquet"):
            assert matches(pq.read_table(path)) == 0, path
    assert online_flights() == [None, 40]  # the other passengers keep their online features
