"""The MLflow model registry against a real ``mlflow server``: versions with their evidence, aliases,
registry URIs checked against the registered digests, and which version served an endpoint when."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from dmlops.registry.mlflow_registry import (
    RegistryError,
    VersionNotFound,
    dataset_digest,
    deploy_history,
    get_version,
    record_deploy,
    register,
    resolve,
    served_at,
    tracking_uri,
)
from serving.serving_helpers import make_table

pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A small folder of model files (the registry reads bytes, not models)."""
    directory = tmp_path_factory.mktemp("model")
    (directory / "metadata.json").write_text('{"framework": "torch"}')
    (directory / "weights").mkdir()
    (directory / "weights" / "model.pt2").write_bytes(bytes(range(256)) * 40)
    return directory


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    directory = tmp_path_factory.mktemp("data")
    pq.write_table(make_table(50, seed=1), directory / "train.parquet")
    (directory / "eval").mkdir()
    pq.write_table(make_table(20, seed=2), directory / "eval" / "part-0.parquet")
    return {"train": str(directory / "train.parquet"), "eval": str(directory / "eval")}


def test_register_records_the_evidence_and_aliases_challenger(mlflow_server, model_dir, datasets):
    from mlflow.tracking import MlflowClient

    first = register("delays", str(model_dir), metrics={"auc": 0.71, "log_loss": 0.52}, datasets=datasets,
                     pipeline_run="run-1", registry=mlflow_server)
    second = register("delays", str(model_dir), metrics={"auc": 0.74}, registry=mlflow_server)
    assert int(second.version) == int(first.version) + 1
    assert first.file_digests == {"metadata.json": _sha256(model_dir / "metadata.json"),
                                  "weights/model.pt2": _sha256(model_dir / "weights" / "model.pt2")}
    assert first.tags["dataset/train/sha256"] == dataset_digest(datasets["train"]) == _sha256(datasets["train"])
    assert first.tags["dataset/eval/uri"] == datasets["eval"] and first.tags["pipeline_run"] == "run-1"
    client = MlflowClient(mlflow_server)
    run = client.get_run(first.run_id)
    assert run.data.metrics == {"auc": 0.71, "log_loss": 0.52}
    # the server cannot read the client's disk: the files were copied into the run's artifacts
    assert first.source.startswith(run.info.artifact_uri) and first.source != str(model_dir)
    assert get_version("models:/delays@challenger", mlflow_server).version == second.version
    with pytest.raises(VersionNotFound):
        get_version("models:/delays@champion", mlflow_server)
    with pytest.raises(RegistryError, match="expected models:/<name>@<alias> or models:/<name>/<version>"):
        get_version("models:/delays", mlflow_server)


def test_resolve_checks_the_files_against_their_registered_digests(mlflow_server, model_dir, tmp_path):
    version = register("resolved", str(model_dir), registry=mlflow_server)
    found, directory = resolve(f"models:/resolved/{version.version}", mlflow_server)
    assert found.version == version.version and (directory / "weights" / "model.pt2").is_file()
    (directory / "weights" / "model.pt2").write_bytes(b"changed")
    with pytest.raises(RegistryError, match=r"files \['weights/model.pt2'\] are missing or differ"):
        resolve("models:/resolved@challenger", mlflow_server)


def test_which_version_served_an_endpoint_when(mlflow_server, model_dir):
    one = register("served", str(model_dir), registry=mlflow_server)
    two = register("served", str(model_dir), registry=mlflow_server)
    three = register("served", str(model_dir), registry=mlflow_server)
    record_deploy(one, "delays-endpoint", "first-deploy", registry=mlflow_server, at=1000.0)
    record_deploy(two, "delays-endpoint", "promote", stable_version=one.version, registry=mlflow_server, at=2000.0)
    assert get_version("models:/served@champion", mlflow_server).version == two.version
    record_deploy(three, "delays-endpoint", "rollback", stable_version=two.version, registry=mlflow_server, at=3000.0)
    # a rolled-back version never becomes champion, and the endpoint kept serving the one before
    assert get_version("models:/served@champion", mlflow_server).version == two.version
    assert served_at("delays-endpoint", 999.0, mlflow_server) is None
    assert served_at("delays-endpoint", 1500.0, mlflow_server).model_version == one.version
    assert served_at("delays-endpoint", 2000.0, mlflow_server).model_version == two.version
    assert served_at("delays-endpoint", 5000.0, mlflow_server).model_version == two.version
    history = deploy_history("delays-endpoint", mlflow_server)
    assert [(event.action, event.model_version, event.stable_version) for event in history] == [
        ("rollback", three.version, two.version), ("promote", two.version, one.version),
        ("first-deploy", one.version, "")]
    assert served_at("other-endpoint", 5000.0, mlflow_server) is None


def test_local_default_is_a_sqlite_store_in_the_output_folder(tmp_path, monkeypatch, model_dir):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DMLOPS_OUTPUT_DIR", str(tmp_path / "run"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'run' / 'registry' / 'mlflow.db'}"
    version = register("local", str(model_dir))
    assert version.source == str(model_dir)  # an embedded store reads the model where it is
    assert resolve("models:/local@challenger")[1] == model_dir
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri() == "http://mlflow.example:5000" and tracking_uri("http://other") == "http://other"


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(open(path, "rb").read()).hexdigest()
