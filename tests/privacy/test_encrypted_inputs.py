"""Every data component reads an encrypted (Parquet modular encryption) input through the sandbox's one
decryption path, writes its datasets encrypted like the input, keeps DuckDB's external access off, and names
the file when the key is wrong or missing."""

import base64
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kfp import dsl, local

from component_yaml import load_yaml_component
from dmlops.data.errors import DataError
from dmlops.data.sandbox import parquet_scan, sandboxed_connection
from dmlops.data.transform import derive_columns
from dmlops.data.validation import infer_schema, validate
from dmlops.features.aggregates import running_means
from dmlops.privacy.encryption import KEYS_VARIABLE, is_encrypted, read_table, write_encrypted

EMAILS = [f"passenger{index}@example.com" for index in range(6)]


def flights(rows: int = 240) -> pa.Table:
    rng = np.random.default_rng(11)
    start = datetime(2013, 1, 1, tzinfo=timezone.utc)
    hour = rng.integers(5, 23, rows)
    return pa.table({
        "passenger_email": [EMAILS[index % len(EMAILS)] for index in range(rows)],
        "time_hour": pa.array([start + timedelta(hours=6 * index) for index in range(rows)], pa.timestamp("us", "UTC")),
        "origin": rng.choice(["EWR", "JFK", "LGA"], rows),
        "dep_hour": hour, "distance": rng.uniform(100, 2500, rows),
        "arr_delay": rng.normal(10, 30, rows),
    })


@pytest.fixture
def keys(tmp_path, monkeypatch) -> Path:
    """The master key file (a Secret mounted as a file), set for the steps."""
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()}))
    monkeypatch.setenv(KEYS_VARIABLE, str(path))
    return path


@pytest.fixture
def encrypted(tmp_path, keys) -> Path:
    """A sensitive dataset as pseudonymize writes it: footer and the e-mail column encrypted."""
    path = tmp_path / "flights.parquet"
    write_encrypted(flights(), str(path), key_id="datasets", columns=["passenger_email"])
    return path


def assert_encrypted_like_input(path: str) -> pa.Table:
    """The dataset at ``path`` is encrypted, holds no e-mail in plaintext, and decrypts."""
    assert is_encrypted(path), path
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(path)
    assert b"@example.com" not in Path(path).read_bytes()
    return read_table(path)


def outputs(root: Path, step: str) -> dict:
    (path,) = [path for path in root.rglob("executor_output.json") if path.parent.name == step]
    return json.loads(path.read_text())["artifacts"]


def local_path(artifact: dict) -> str:
    return artifact["artifacts"][0]["uri"].removeprefix("file://")


def test_the_data_components_read_encrypted_inputs_and_write_encrypted_outputs(encrypted, tmp_path):
    derive, split, infer, check, compare, window = (
        load_yaml_component("data", name) for name in
        ("derive_columns", "split_by_time", "infer_schema", "validate", "compare", "training_window"))
    means = load_yaml_component("features", "running_means")

    @dsl.pipeline(name="encrypted-data")
    def pipeline(dataset_uri: str):
        dataset = dsl.importer(artifact_uri=dataset_uri, artifact_class=dsl.Dataset).output
        derived = derive(dataset=dataset, columns={"label": "arr_delay > 15"}, quarantine_when="dep_hour < 6",
                         quarantine_reason="early")
        parts = split(dataset=derived.outputs["output"], time_column="time_hour", eval_from="2013-02-15")
        schema = infer(dataset=parts.outputs["train"])
        check(dataset=parts.outputs["eval"], schema=schema.outputs["schema"], fail_on="never")
        compare(reference=parts.outputs["train"], current=parts.outputs["eval"])
        window(reference=parts.outputs["train"], label="label", time_column="time_hour", window_days=30.0)
        means(dataset=derived.outputs["output"], entity_column="origin", time_column="time_hour",
              means={"delay_rate": "label"}, count_column="flights")

    root = tmp_path / "root"
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
    pipeline(dataset_uri=str(encrypted))

    source = flights()
    derived = assert_encrypted_like_input(local_path(outputs(root, "derive-columns")["output"]))
    early = assert_encrypted_like_input(local_path(outputs(root, "derive-columns")["quarantine"]))
    assert derived.num_rows + early.num_rows == source.num_rows and early.num_rows > 0
    assert derived["label"].to_pylist() == [delay > 15 for delay, hour in zip(
        source["arr_delay"].to_pylist(), source["dep_hour"].to_pylist()) if hour >= 6]
    split_outputs = outputs(root, "split-by-time")
    train, evaluation = (assert_encrypted_like_input(local_path(split_outputs[name])) for name in ("train", "eval"))
    assert train.num_rows + evaluation.num_rows == derived.num_rows
    schema = json.loads(Path(local_path(outputs(root, "infer-schema")["schema"])).read_text())
    assert schema["row_count"]["min"] <= train.num_rows <= schema["row_count"]["max"]
    assert set(schema["columns"]) == set(train.column_names)
    report = json.loads(Path(local_path(outputs(root, "validate")["report"])).read_text())
    assert report["rows"] == evaluation.num_rows
    drift = json.loads(Path(local_path(outputs(root, "compare")["report"])).read_text())
    assert {column["column"] for column in drift["columns"]} >= {"dep_hour", "origin"}
    window_outputs = outputs(root, "training-window")
    windowed = [assert_encrypted_like_input(local_path(window_outputs[name])) for name in ("train", "holdout")]
    assert 0 < sum(table.num_rows for table in windowed) <= train.num_rows
    aggregated = read_table(local_path(outputs(root, "running-means")["output"]))
    assert is_encrypted(local_path(outputs(root, "running-means")["output"]))
    assert set(aggregated["origin"].to_pylist()) == {"EWR", "JFK", "LGA"}


def test_a_plaintext_input_stays_plaintext(tmp_path):
    pq.write_table(flights(), tmp_path / "plain.parquet")
    derive_columns(str(tmp_path / "plain.parquet"), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                   columns={"label": "arr_delay > 15"})
    assert not is_encrypted(str(tmp_path / "out.parquet")) and pq.read_table(tmp_path / "out.parquet").num_rows == 240


def test_a_missing_or_wrong_key_names_the_file(encrypted, tmp_path, monkeypatch, keys):
    out, quarantine = str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet")
    monkeypatch.delenv(KEYS_VARIABLE)
    with pytest.raises(DataError, match=f"{encrypted} is encrypted: .*set {KEYS_VARIABLE}"):
        derive_columns(str(encrypted), out, quarantine, columns={"label": "arr_delay > 15"})
    with pytest.raises(DataError, match=f"{encrypted} is encrypted"):
        infer_schema(str(encrypted))
    keys.write_text(json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()}))  # another key of that name
    monkeypatch.setenv(KEYS_VARIABLE, str(keys))
    with pytest.raises(DataError, match=f"{encrypted}: cannot decrypt .*does not open this file"):
        validate(str(encrypted), {"columns": {"dep_hour": {"type": "int64"}}})
    with pytest.raises(DataError, match=f"{encrypted}: cannot decrypt"):
        running_means(str(encrypted), out, entity_column="origin", time_column="time_hour", means={"d": "dep_hour"},
                      count_column="n")
    assert not Path(out).exists()


def test_the_sandbox_stays_closed_around_a_decrypted_input(encrypted, tmp_path):
    connection = sandboxed_connection(encrypted)
    assert connection.execute(f"SELECT count(*) FROM {parquet_scan(encrypted)}").fetchone() == (240,)
    # the decrypted rows are the connection's own table; the file itself is not among the allowed paths
    with pytest.raises(DataError, match="Permission Error: Cannot access file"):
        derive_columns(str(encrypted), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                       columns={"raw": f"(SELECT count(*) FROM read_parquet('{encrypted}'))"})
    with pytest.raises(DataError, match="Permission Error"):
        derive_columns(str(encrypted), str(tmp_path / "out.parquet"), str(tmp_path / "q.parquet"),
                       columns={"passwd": "(SELECT content FROM read_text('/etc/passwd'))"})


def test_erasure_rewrites_an_encrypted_dataset_encrypted(encrypted):
    from dmlops.privacy.erasure import erase_subject

    receipt = erase_subject(EMAILS[0], "passenger_email", [str(encrypted)])
    assert (receipt.rows_removed, receipt.remaining) == (40, 0)
    rows = assert_encrypted_like_input(str(encrypted))
    assert rows.num_rows == 200 and EMAILS[0] not in rows["passenger_email"].to_pylist()


def test_training_and_the_rollout_replay_read_an_encrypted_dataset(encrypted, tmp_path):
    from dmlops.serving.rollout import replay_requests
    from dmlops.training.config import TrainConfig
    from dmlops.training.worker import train

    labelled = tmp_path / "labelled.parquet"
    derive_columns(str(encrypted), str(labelled), str(tmp_path / "q.parquet"), columns={"label": "arr_delay > 15"})
    assert is_encrypted(str(labelled))
    train(TrainConfig(train_uri=str(labelled), label="label", export_uri=str(tmp_path / "model"), epochs=1,
                      batch_size=64, hidden_units=[4], numeric_features=["dep_hour", "distance"],
                      categorical_features=["origin"], seed=0))
    metadata = json.loads((tmp_path / "model" / "metadata.json").read_text())
    assert metadata["train_rows"] == 240 and set(metadata["feature_domain"]) >= {"dep_hour", "origin"}
    replay = replay_requests(str(labelled), ["dep_hour", "distance", "origin"], count=3, rows_per_request=4,
                             label="label")
    assert len(replay.batches) == 3 and len(replay.labels) == 12
