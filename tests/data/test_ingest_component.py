"""The ingest component runs under kfp.local and writes its dataset, quarantine and report with metadata."""

import hashlib
import json

import pyarrow.parquet as pq
import pytest
from kfp import local

from dmlops.components.ingest import ingest


@pytest.fixture
def local_runner(tmp_path):
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"),
               raise_on_error=True)
    return tmp_path / "root"


def test_ingest_component_outputs_and_metadata(local_runner, tmp_path):
    source = tmp_path / "events.csv"
    source.write_bytes(b"id,score\n1,0.5\n2,oops\n3,1.5\n")
    schema = json.dumps({"columns": {"score": {"type": "double"}}})
    task = ingest(source=str(source), schema_json=schema, max_bad_fraction=0.5)

    dataset = task.outputs["dataset"]
    assert pq.read_table(dataset.path).column("id").to_pylist() == [1, 3]
    assert dataset.metadata["rows"] == 2 and dataset.metadata["rows_quarantined"] == 1
    assert dataset.metadata["source_uris"] == [str(source)]
    assert dataset.metadata["sources"][0]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert {"name": "score", "type": "double", "nullable": True} in dataset.metadata["schema"]
    quarantine = task.outputs["quarantine"]
    assert quarantine.metadata["reasons"] == {"score: not a valid double": 1}
    assert pq.read_table(quarantine.path).column("score").to_pylist() == ["oops"]
    with open(task.outputs["report"].path) as report:
        assert "Rows in **3** = rows out **2** + quarantined **1**" in report.read()


def test_ingest_component_fails_the_step_on_bad_rows(local_runner, tmp_path, capfd):
    source = tmp_path / "events.csv"
    source.write_bytes(b"id,name\n1,a\n2,b,c\n")
    with pytest.raises(RuntimeError):
        ingest(source=str(source), delimiter=",")
    logs = capfd.readouterr()
    assert "IngestError" in logs.out + logs.err and "raise max_bad_fraction" in logs.out + logs.err


def test_ingest_component_null_values_batch_size_and_an_empty_day(local_runner, tmp_path):
    source = tmp_path / "events.csv"
    source.write_bytes(b"id,name\n1,-\n2,NA\n")
    task = ingest(source=str(source), null_values=["-"], batch_size_bytes=2048)
    assert pq.read_table(task.outputs["dataset"].path).column("name").to_pylist() == [None, "NA"]
    source.write_bytes(b"id,name\n")
    task = ingest(source=str(source))
    assert task.outputs["dataset"].metadata["rows"] == 0
    assert task.outputs["dataset"].metadata["warnings"] == [f"source {source}: no data rows (header only); 0 rows "
                                                            "ingested"]
