"""PII marks in the schema, pseudonymization, redacted validation reports, the PII scan and erasure."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.data.errors import DataError, SchemaError
from dmlops.data.schema import check_schema
from dmlops.data.validation import validate
from dmlops.privacy.erasure import erase_subject
from dmlops.privacy.pseudonymize import KEY_VARIABLE, pseudonym, pseudonymize
from dmlops.privacy.scan import scan

EMAILS = ["ann@example.com", "bob@example.org", "cy@example.net"]


@pytest.fixture
def people(tmp_path):
    path = tmp_path / "people.parquet"
    pq.write_table(pa.table({
        "email": [EMAILS[index % 3] for index in range(9)],
        "phone": ["+1 212 555 01%02d" % index for index in range(9)],
        "age": [23, 37, 41, 58, 62, 19, 33, 45, 71],
        "seen": pa.array([datetime(2013, 1 + index, 15, tzinfo=timezone.utc) for index in range(9)], pa.timestamp("us", "UTC")),
        "origin": ["JFK", "EWR", "LGA"] * 3,
    }), path)
    return path


SCHEMA = {"columns": {
    "email": {"type": "string", "pii": "pseudonymize", "allowed_values": ["nobody@example.com"]},
    "phone": {"type": "string", "pii": {"action": "mask", "keep": 2}},
    "age": {"type": "int64", "pii": {"action": "generalize", "step": 10}, "max": 60},
    "seen": {"type": "timestamp[us, tz=UTC]", "pii": "generalize"},
    "origin": {"type": "string"},
}}


def test_pii_marks_are_checked():
    check_schema(SCHEMA)
    with pytest.raises(SchemaError, match="pii must be one of"):
        check_schema({"columns": {"email": {"type": "string", "pii": "encrypt"}}})


def test_pseudonymize_is_keyed_deterministic_and_applies_every_action(people, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    with pytest.raises(DataError, match=f"set {KEY_VARIABLE}"):
        pseudonymize(str(people), str(tmp_path / "out.parquet"), SCHEMA)
    (tmp_path / "key").write_text("secret key\n")
    monkeypatch.setenv(f"{KEY_VARIABLE}_FILE", str(tmp_path / "key"))
    result = pseudonymize(str(people), str(tmp_path / "out.parquet"), SCHEMA)
    assert result.actions == {"email": "pseudonymize", "phone": "mask", "age": "generalize", "seen": "generalize"}
    out = pq.read_table(tmp_path / "out.parquet").to_pydict()
    assert out["email"][:3] == [pseudonym(email, b"secret key") for email in EMAILS] and out["email"][3] == out["email"][0]
    assert len(set(out["email"])) == 3 and all(len(value) == 64 for value in out["email"])
    assert out["phone"][1] == "*" * 13 + "01" and out["age"][:3] == [20, 30, 40]
    assert out["seen"][0] == datetime(2013, 1, 1, tzinfo=timezone.utc) and out["origin"] == ["JFK", "EWR", "LGA"] * 3
    monkeypatch.setenv(KEY_VARIABLE, "another key")  # another key, other pseudonyms: none can be recomputed without it
    pseudonymize(str(people), str(tmp_path / "other.parquet"), SCHEMA)
    assert not set(pq.read_table(tmp_path / "other.parquet")["email"].to_pylist()) & set(out["email"])
    drop = {"columns": {"email": {"pii": "drop"}}}
    pseudonymize(str(people), str(tmp_path / "dropped.parquet"), drop)
    assert "email" not in pq.read_table(tmp_path / "dropped.parquet").column_names


def test_validation_reports_never_show_pii_values(people):
    report = json.dumps(validate(str(people), SCHEMA).to_dict())
    assert "allowed_values" in report and "range" in report  # both checks failed on pii columns
    for email in EMAILS:
        assert email not in report
    assert "<pii>" in report and '"age": 62' not in report and "+1 212" not in report


def test_pii_scan_flags_columns_by_values_and_by_name(people, tmp_path):
    path = tmp_path / "contacts.parquet"
    pq.write_table(pa.table({"contact": EMAILS * 3, "customer_name": ["Ann", "Bob", "Cy"] * 3,
                             "card": ["4111 1111 1111 1111"] * 9, "origin": ["JFK", "EWR", "LGA"] * 3}), path)
    findings = {finding.column: finding for finding in scan(str(path)).findings}
    assert set(findings) == {"contact", "customer_name", "card"}
    assert "EMAIL_ADDRESS" in findings["contact"].entities and findings["contact"].name_hint is None
    assert findings["customer_name"].name_hint == "PERSON" and "CREDIT_CARD" in findings["card"].entities


def test_erase_subject_from_datasets_and_json_prediction_logs(people, tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, "k")
    pseudonymize(str(people), str(tmp_path / "pseudonymized.parquet"), {"columns": {"email": {"pii": "pseudonymize"}}})
    log = tmp_path / "log" / "dt=2024-01-01" / "hour=00"
    log.mkdir(parents=True)
    subject = pseudonym(EMAILS[0], b"k")
    pq.write_table(pa.table({"request_id": ["r1", "r2", "r3"],
                             "features": [json.dumps({"email": subject, "age": 3}), json.dumps({"email": "x"}), None]}),
                   log / "part-1.parquet")
    untouched = tmp_path / "other.parquet"
    pq.write_table(pa.table({"origin": ["JFK"]}), untouched)
    receipt = erase_subject(EMAILS[0], "email", [str(people), str(tmp_path / "pseudonymized.parquet"),
                                                  str(tmp_path / "log"), str(untouched)])
    removed = {store.store.rsplit("/", 1)[-1]: store.rows_removed for store in receipt.stores}
    assert removed == {"people.parquet": 3, "pseudonymized.parquet": 3, "part-1.parquet": 1, "other.parquet": 0}
    assert receipt.remaining == 0 and receipt.rows_removed == 7 and EMAILS[0] not in json.dumps(receipt.to_dict())
    changed = {store.store.rsplit("/", 1)[-1]: store.sha256_before != store.sha256_after for store in receipt.stores}
    assert changed == {"people.parquet": True, "pseudonymized.parquet": True, "part-1.parquet": True, "other.parquet": False}
    assert pq.read_table(people).num_rows == 6 and EMAILS[0] not in pq.read_table(people)["email"].to_pylist()
    assert pq.read_table(log / "part-1.parquet")["request_id"].to_pylist() == ["r2", "r3"]


def test_a_sensitive_dataset_is_written_encrypted_and_read_back(people, tmp_path, monkeypatch):
    import base64
    import os

    from dmlops.privacy.encryption import KEYS_VARIABLE, is_encrypted, read_table

    monkeypatch.setenv(KEY_VARIABLE, "k")
    schema = {"columns": {"email": {"pii": "pseudonymize"}}, "sensitive": {"key_id": "datasets", "columns": ["email", "phone"]}}
    with pytest.raises(DataError, match=KEYS_VARIABLE):
        pseudonymize(str(people), str(tmp_path / "out.parquet"), schema)
    keys = tmp_path / "keys.json"  # a Secret mounted as a file
    keys.write_text(json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()}))
    monkeypatch.setenv(KEYS_VARIABLE, str(keys))
    assert pseudonymize(str(people), str(tmp_path / "out.parquet"), schema).encrypted
    out = str(tmp_path / "out.parquet")
    assert is_encrypted(out) and b"+1 212" not in (tmp_path / "out.parquet").read_bytes()
    with pytest.raises(OSError, match="encrypted"):
        pq.read_table(out)  # without the key file nothing, not even the schema, can be read
    assert read_table(out)["phone"].to_pylist() == pq.read_table(people)["phone"].to_pylist()
    assert {"email", "phone"} <= {finding.column for finding in scan(out).findings}  # the scan reads encrypted data
    keys.write_text(json.dumps({"datasets": base64.b64encode(os.urandom(32)).decode()}))
    with pytest.raises(DataError, match="does not open this file"):
        read_table(out)


def test_erasure_lists_the_registered_models_trained_on_the_subjects_data(people, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")
    from dmlops.registry.mlflow_registry import register, set_alias

    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    registry = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = tmp_path / "model"
    model.mkdir()
    (model / "metadata.json").write_text("{}")
    runs = tmp_path / "runs"  # a run's outputs: a folder of datasets, one of them a folder of parts
    (runs / "eval").mkdir(parents=True)
    pq.write_table(pq.read_table(people).slice(3, 3), runs / "eval" / "part-0.parquet")  # holds EMAILS[0] once
    pq.write_table(pq.read_table(people).slice(1, 2), runs / "eval" / "part-1.parquet")  # does not
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"email": ["nobody@example.com"]}), other)
    on_people = register("delays", str(model), datasets={"train": str(people), "eval": str(other)}, registry=registry)
    set_alias(on_people, "champion", registry)
    on_eval_folder = register("delays", str(model), datasets={"train": str(other), "eval": str(runs / "eval")},
                              registry=registry)
    register("clean", str(model), datasets={"train": str(other)}, registry=registry)

    receipt = erase_subject(EMAILS[0], "email", [str(people), str(runs), str(other)], registry=registry)
    assert receipt.remaining == 0 and receipt.rows_removed == 4
    assert [(model["name"], model["version"], model["dataset"]) for model in receipt.models] == [
        ("delays", on_people.version, "train"), ("delays", on_eval_folder.version, "eval")]
    assert receipt.models[0]["aliases"] == ["champion"] and receipt.models[0]["run_id"] == on_people.run_id
    assert receipt.models[0]["store"] == str(people) and receipt.models[1]["store"] == str(runs / "eval")
    assert "must be retrained" in receipt.markdown() and receipt.to_dict()["models"] == receipt.models
    # a second erasure finds the subject nowhere, so no model
    assert erase_subject(EMAILS[0], "email", [str(people), str(runs)], registry=registry).models == []
