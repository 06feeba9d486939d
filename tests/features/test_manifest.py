"""The FeatureStore manifest validates against the upstream Feast CRD and matches the cluster store spec."""

from pathlib import Path

import yaml

from crds import crd_errors
from dmlops.features import cluster_store_spec, repo_config

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "feature-store" / "featurestore.yaml"


def load() -> dict:
    return yaml.safe_load(MANIFEST.read_text())


def test_feature_store_manifest_is_valid():
    manifest = load()
    assert crd_errors(manifest) == []
    registry = manifest["spec"]["services"]["registry"]["local"]["persistence"]["file"]["path"]
    # CEL rule of the CRD (not checked by JSON Schema): registry files are absolute paths or s3:// / gs:// URIs.
    assert registry.startswith(("/", "s3://", "gs://"))


def test_validation_catches_a_misspelled_field():
    manifest = load()
    manifest["spec"]["services"]["onlineStore"]["persistence"]["store"]["secretRf"] = {"name": "feast-redis"}
    assert any("secretRf" in error for error in crd_errors(manifest))


def test_cluster_store_spec_of_the_manifest_builds(monkeypatch):
    spec = load()["spec"]
    monkeypatch.setenv("REDIS_PASSWORD", "x")
    config = repo_config(cluster_store_spec(
        spec["feastProject"], registry=spec["services"]["registry"]["local"]["persistence"]["file"]["path"],
        redis_connection="redis-master.feast.svc:6379,password=${REDIS_PASSWORD}",
        offline_store=spec["services"]["offlineStore"]["persistence"]["file"]["type"],
    ))
    assert config.project == "flights" and config.online_store.type == "redis"
