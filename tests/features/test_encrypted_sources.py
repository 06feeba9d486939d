"""A point-in-time training set from an encrypted entity dataset and an encrypted feature source: the same
rows as from plaintext, written encrypted like the entities."""

import base64
import json
import os

import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError
from dmlops.features import apply, build_training_set
from dmlops.pipelines.flights_features import DEFINITIONS, FEATURES
from dmlops.privacy.encryption import KEYS_VARIABLE, is_encrypted, read_table, write_encrypted


def test_training_set_from_encrypted_entities_and_source(store, sources, flights_data, tmp_path, monkeypatch):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()}))
    monkeypatch.setenv(KEYS_VARIABLE, str(keys))
    entities, weather = tmp_path / "entities.parquet", tmp_path / "weather.parquet"
    write_encrypted(pq.read_table(flights_data["train"]), str(entities), key_id="datasets", columns=["tailnum"])
    write_encrypted(pq.read_table(sources["weather"]), str(weather), key_id="datasets")
    apply(store, DEFINITIONS, {**sources, "weather": str(weather)})

    report = build_training_set(store, str(entities), str(tmp_path / "train"), features=FEATURES,
                                timestamp_column="time_hour")
    assert report.join_method == "duckdb asof"  # dmlops's as-of join decrypts; Feast's offline store could not
    assert is_encrypted(str(tmp_path / "train")) and report.rows_out == pq.read_metadata(flights_data["train"]).num_rows
    apply(store, DEFINITIONS, sources)
    build_training_set(store, flights_data["train"], str(tmp_path / "plain"), features=FEATURES,
                       timestamp_column="time_hour")
    assert read_table(str(tmp_path / "train")).to_pydict() == pq.read_table(tmp_path / "plain").to_pydict()

    monkeypatch.delenv(KEYS_VARIABLE)
    with pytest.raises(DataError, match=f"{entities} is encrypted"):
        build_training_set(store, str(entities), str(tmp_path / "again"), features=FEATURES, timestamp_column="time_hour")
