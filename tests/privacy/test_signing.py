"""Signed models: train signs the manifest; evaluate, deploy and the predictor refuse a model that is
unsigned, tampered with, signed with another key, or whose manifest names files outside its folder or
leaves files unlisted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.privacy.signing import SIGNING_KEY, VERIFY_KEY, ModelIntegrityError, generate_key_pair
from dmlops.serving.deploy import deploy
from dmlops.serving.predictor import DmlopsModel
from dmlops.serving.rollout import RolloutPolicy
from dmlops.training.config import TrainConfig
from dmlops.training.evaluate import evaluate_model
from dmlops.training.export import METADATA_FILE
from dmlops.training.worker import train

KEYS = generate_key_pair()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rng = np.random.default_rng(0)
    hour = rng.integers(5, 23, 300)
    path = tmp_path_factory.mktemp("signing-data") / "train.parquet"
    pq.write_table(pa.table({"hour": hour, "origin": rng.choice(["EWR", "JFK"], 300),
                             "label": (hour > 16).astype(np.int64)}), path)
    return path


@pytest.fixture(scope="module")
def signed_model(data, tmp_path_factory):
    """A model exported by the training worker with the signing key in its environment (as a Secret gives it)."""
    export = tmp_path_factory.mktemp("signed") / "model"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(SIGNING_KEY, KEYS[0])
        train(TrainConfig(train_uri=str(data), label="label", export_uri=str(export), epochs=1, batch_size=64,
                          hidden_units=[8], seed=0))
    return export


@pytest.fixture
def copy(signed_model, tmp_path):
    return shutil.copytree(signed_model, tmp_path / "model")


def refused_everywhere(model_dir, data, match: str) -> None:
    """evaluate, deploy (before it starts anything) and the predictor refuse the model with ``match``."""
    with pytest.raises(ModelIntegrityError, match=match):
        evaluate_model(str(model_dir), str(data))
    with pytest.raises(ModelIntegrityError, match=match):
        deploy(str(model_dir), str(data), "signed-test", RolloutPolicy(), backend="local")
    with pytest.raises(ModelIntegrityError, match=match):
        DmlopsModel("signed-test", str(model_dir)).load()


def test_train_signs_and_a_signed_model_is_served(signed_model, data, monkeypatch):
    assert (signed_model / f"{METADATA_FILE}.sig").is_file()
    monkeypatch.setenv(VERIFY_KEY, KEYS[1])
    trained = json.loads((signed_model / METADATA_FILE).read_text())["metrics"]
    assert evaluate_model(str(signed_model), str(data))["auc"] == pytest.approx(trained["auc"], abs=1e-6)
    model = DmlopsModel("signed-test", str(signed_model))
    assert model.load()


def test_tampered_metadata_is_refused(copy, data, monkeypatch):
    monkeypatch.setenv(VERIFY_KEY, KEYS[1])
    metadata = json.loads((copy / METADATA_FILE).read_text())
    metadata["preprocessing"]["numeric"][0]["mean"] += 1.0
    (copy / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    refused_everywhere(copy, data, "does not verify")


def test_a_replaced_model_file_with_a_fresh_digest_is_refused(copy, data, monkeypatch):
    monkeypatch.setenv(VERIFY_KEY, KEYS[1])
    metadata = json.loads((copy / METADATA_FILE).read_text())
    name = metadata["model_files"]["onnx"]
    (copy / name).write_bytes((copy / name).read_bytes() + b"\0")
    from dmlops.platform.storage import sha256_file

    metadata["files"][name] = sha256_file(copy / name)  # digests catch corruption, not an attacker
    (copy / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    refused_everywhere(copy, data, "does not verify")


def test_unsigned_and_foreign_signed_models_are_refused(copy, data, monkeypatch):
    monkeypatch.setenv(VERIFY_KEY, generate_key_pair()[1])
    refused_everywhere(copy, data, "does not verify with the key")
    monkeypatch.setenv(VERIFY_KEY, KEYS[1])
    (copy / f"{METADATA_FILE}.sig").unlink()
    refused_everywhere(copy, data, "the model is not signed")


def test_the_manifest_names_only_files_inside_the_folder(copy, data, tmp_path):
    (copy / f"{METADATA_FILE}.sig").unlink()  # no key configured: the manifest's shape is still checked
    metadata = json.loads((copy / METADATA_FILE).read_text())
    (tmp_path / "other").mkdir()
    shutil.move(copy / "model.pt2", tmp_path / "other" / "model.pt2")
    del metadata["files"]["model.pt2"]
    metadata["model_files"]["torch_export"] = "../other/model.pt2"
    (copy / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    refused_everywhere(copy, data, r"names \['../other/model.pt2'\], outside the model folder")


def test_every_file_in_the_folder_is_listed(copy, data):
    (copy / f"{METADATA_FILE}.sig").unlink()
    metadata = json.loads((copy / METADATA_FILE).read_text())
    shutil.copy(copy / "model.pt2", copy / "trojan.pt2")
    metadata["model_files"]["torch_export"] = "trojan.pt2"
    (copy / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    refused_everywhere(copy, data, "model file trojan.pt2 is not listed in metadata.json")
    metadata["model_files"]["torch_export"] = "model.pt2"
    (copy / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    refused_everywhere(copy, data, r"files \['trojan.pt2'\] are in the model folder but not in metadata.json")
