"""Quarantine files and validation reports never keep the raw values of columns the schema marks pii."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from dmlops.data.ingest import ingest
from dmlops.data.redaction import QuarantineRedaction
from dmlops.data.validation import validate
from dmlops.privacy.pseudonymize import KEY_VARIABLE, pseudonym

KEY = "quarantine key"
SCHEMA = {"columns": {
    "id": {"type": "int64"},
    "email": {"type": "string", "pii": "pseudonymize"},
    "phone": {"type": "string", "pii": {"action": "mask", "keep": 2}},
    "age": {"type": "int64", "pii": {"action": "generalize", "step": 10}},
    "city": {"type": "string", "pii": "drop"},
    "note": {"type": "string"},
}}
GOOD = b"".join(b"%d,p%d@example.com,+1 212 555 01%02d,%d,Town%d,fine\n" % (i, i, i, 20 + i, i) for i in range(50))
BAD_ID = b"x7,ann@example.com,+1 212 555 0199,37,Springfield,bad id\n"
BAD_AGE = b"51,bob@example.org,+1 212 555 0198,sixty-two,Shelbyville,bad age\n"
TOO_MANY = b"52,cy@example.net,+1 212 555 0197,44,Ogdenville,an extra,field\n"
OPEN_QUOTE = b'53,"dee@example.com,+1 212 555 0196,45,North Haverbrook,open quote\n'
NOT_UTF8 = b"54,eve@example.com,+1 212 555 0195,46,Capital City,caf\xe9\n"
SECRETS = ["ann@example.com", "bob@example.org", "cy@example.net", "dee@example.com", "eve@example.com",
           "212 555 01", "Springfield", "Shelbyville", "Ogdenville", "Haverbrook", "Capital City", "sixty-two"]


@pytest.fixture
def quarantine(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    source = tmp_path / "people.csv"
    source.write_bytes(b"id,email,phone,age,city,note\n" + GOOD + BAD_ID + BAD_AGE + TOO_MANY + OPEN_QUOTE + NOT_UTF8)
    result = ingest(str(source), str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"),
                    schema=SCHEMA, max_bad_fraction=0.5, progress=False)
    assert (result.rows_in, result.rows_out, result.rows_quarantined) == (55, 50, 5)
    return pq.read_table(tmp_path / "quarantine.parquet")


def test_quarantine_keeps_no_raw_pii_value(quarantine):
    text = json.dumps(quarantine.to_pylist())
    for secret in SECRETS:
        assert secret not in text
    rows = {row["_line"]: row for row in quarantine.to_pylist()}
    assert set(rows) == {52, 53, 54, 55, 56}
    bad_id, bad_age, undecodable = rows[52], rows[53], rows[56]
    assert bad_id["email"] == pseudonym("ann@example.com", KEY.encode()) and bad_id["id"] == "x7"
    assert bad_id["phone"] == "*" * 13 + "99" and bad_id["age"] == "30" and bad_id["city"] is None
    assert bad_id["note"] == "bad id"  # columns not marked keep their raw values
    assert bad_age["age"] == "<pii>" and bad_age["_reason"].startswith("age: not a valid int64")
    assert undecodable["email"] == pseudonym("eve@example.com", KEY.encode())
    assert undecodable["_reason"] == "note: invalid UTF-8"


def test_unparsed_lines_keep_only_their_line_length_and_digest(quarantine):
    rows = {row["_line"]: row for row in quarantine.to_pylist()}
    for number, line in ((54, TOO_MANY), (55, OPEN_QUOTE)):
        line = line.rstrip(b"\n")
        assert rows[number]["_raw"] == (f"<pii> raw line withheld: {len(line.decode())} characters, sha256 "
                                        f"{hashlib.sha256(line).hexdigest()}")
        assert rows[number]["email"] is None


def test_raw_lines_that_split_into_the_columns_are_redacted_field_by_field(monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    redaction = QuarantineRedaction(SCHEMA)
    columns = list(SCHEMA["columns"])
    raw = ['7,ann@example.com,+1 212 555 0199,37,"Springfield, IL",fine', "8,bob@example.org", None]
    assert redaction.raw_lines(raw, columns, ",") == [
        f'7,{pseudonym("ann@example.com", KEY.encode())},*************99,30,,fine',
        "<pii> raw line withheld: 17 characters, sha256 " + hashlib.sha256(b"8,bob@example.org").hexdigest(),
        None,
    ]
    assert redaction.raw_lines(raw[:1], None, None)[0].startswith("<pii> raw line withheld")  # JSON lines


def test_without_a_key_pseudonymized_values_are_withheld_and_the_result_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_VARIABLE, raising=False)
    monkeypatch.delenv(f"{KEY_VARIABLE}_FILE", raising=False)
    source = tmp_path / "people.csv"
    source.write_bytes(b"id,email,phone,age,city,note\n" + GOOD + BAD_ID)
    result = ingest(str(source), str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"),
                    schema=SCHEMA, max_bad_fraction=0.5, progress=False)
    assert pq.read_table(tmp_path / "quarantine.parquet").column("email").to_pylist() == ["<pii>"]
    assert any(KEY_VARIABLE in warning and "'email'" in warning for warning in result.warnings)


def test_validation_report_shows_no_quantile_or_histogram_of_a_pii_column(tmp_path, monkeypatch):
    monkeypatch.setenv(KEY_VARIABLE, KEY)
    source = tmp_path / "people.csv"
    source.write_bytes(b"id,email,phone,age,city,note\n" + GOOD)
    ingest(str(source), str(tmp_path / "out.parquet"), str(tmp_path / "quarantine.parquet"), progress=False)
    schema = {"columns": {**SCHEMA["columns"], "id": {"type": "int64", "max": 10}}}
    report = validate(str(tmp_path / "out.parquet"), schema)
    age = report.statistics["age"]
    assert (age.min, age.max, age.quantiles, age.histogram, age.top_values) == (None, None, {}, [], [])
    assert report.statistics["id"].quantiles  # columns not marked keep theirs
    examples = [example for finding in report.findings for example in finding.examples]
    assert examples and all(example["email"] == "<pii>" and example["age"] == "<pii>" for example in examples)
