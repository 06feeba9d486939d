"""Store specs and the Feast RepoConfig built from them, local and cluster (built and validated by Feast;
no cluster here)."""

import json

import pytest

from dmlops.features import FeatureStoreError, cluster_store_spec, local_store_spec, repo_config
from dmlops.features.config import is_shared, store_for_backend


def test_local_spec_is_json_and_builds_a_local_config(tmp_path):
    spec = local_store_spec(tmp_path, project="flights")
    config = repo_config(json.loads(json.dumps(spec)))
    assert config.project == "flights"
    assert config.registry.registry_type == "file" and config.registry.path == str(tmp_path / "registry.db")
    assert config.offline_store.type == "duckdb"
    assert config.online_store.type == "sqlite" and config.online_store.path == str(tmp_path / "online.db")


def test_local_spec_with_redis_and_the_dask_offline_store(tmp_path):
    config = repo_config(local_store_spec(tmp_path, offline_store="file", redis_connection="localhost:6390"))
    assert config.offline_store.type == "file"
    assert config.online_store.type == "redis" and config.online_store.connection_string == "localhost:6390"


@pytest.mark.parametrize("registry, registry_type", [
    ("gs://features/flights/registry.db", "file"),
    ("s3://features/flights/registry.db", "file"),
    ("postgresql+psycopg://feast:${PG_PASSWORD}@postgres:5432/feast", "sql"),
])
def test_cluster_spec_builds_a_cluster_config(registry, registry_type, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", "s3cret")
    monkeypatch.setenv("REDIS_PASSWORD", "r3dis")
    spec = cluster_store_spec("flights", registry=registry, redis_connection="redis:6379,password=${REDIS_PASSWORD}")
    assert "s3cret" not in json.dumps(spec) and "r3dis" not in json.dumps(spec)
    config = repo_config(spec)
    assert config.registry.registry_type == registry_type
    assert config.registry.path == registry.replace("${PG_PASSWORD}", "s3cret")
    assert config.online_store.type == "redis"
    assert config.online_store.connection_string == "redis:6379,password=r3dis"
    assert config.offline_store.type == "duckdb"


def test_unset_variables_and_bad_specs_are_named(monkeypatch):
    monkeypatch.delenv("REDIS_PASSWORD", raising=False)
    spec = cluster_store_spec("flights", registry="gs://b/registry.db", redis_connection="redis:6379,password=${REDIS_PASSWORD}")
    with pytest.raises(FeatureStoreError, match="spec.online_store.connection_string.*REDIS_PASSWORD.*not set"):
        repo_config(spec)
    with pytest.raises(FeatureStoreError, match="registry='ftp://b/r.db'"):
        cluster_store_spec("flights", registry="ftp://b/r.db", redis_connection="redis:6379")
    with pytest.raises(FeatureStoreError, match="offline_store='spark'"):
        local_store_spec("x", offline_store="spark")
    with pytest.raises(FeatureStoreError, match="invalid store spec for project 'flights'"):
        repo_config({**local_store_spec("x", project="flights"), "online_store": {"type": "sqlite", "pth": "x"}})


def test_a_local_store_in_a_folder_that_does_not_exist_yet_is_created(tmp_path, monkeypatch):
    from dmlops.features import open_store

    monkeypatch.chdir(tmp_path)
    spec = local_store_spec("outputs/new/store", project="fresh")
    store = open_store(spec)
    store.apply([])
    assert (tmp_path / "outputs" / "new" / "store" / "registry.db").exists()


class TestStoreForBackend:
    """A run's store follows its backend: the local store locally; on Kubernetes a store every pod can open."""

    LOCAL = local_store_spec("local_outputs/feature_store", project="flights")
    REGISTRY, REDIS = "s3://mlpipeline/feast/flights/registry.db", "redis.feast:6379,password=${REDIS_PASSWORD}"

    def test_a_local_run_keeps_the_local_store(self):
        assert store_for_backend("local", self.LOCAL) == self.LOCAL
        assert store_for_backend("local", self.LOCAL, registry=self.REGISTRY, redis_connection=self.REDIS) == self.LOCAL
        assert not is_shared(self.LOCAL)

    def test_a_kubernetes_run_gets_the_cluster_store_of_the_same_project(self, monkeypatch):
        spec = store_for_backend("kubernetes", self.LOCAL, registry=self.REGISTRY, redis_connection=self.REDIS)
        assert spec == cluster_store_spec("flights", registry=self.REGISTRY, redis_connection=self.REDIS)
        assert is_shared(spec)
        monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
        config = repo_config(spec)
        assert config.registry.path == self.REGISTRY and config.online_store.type == "redis"

    def test_a_shared_store_is_used_as_given(self):
        shared = cluster_store_spec("flights", registry="postgresql+psycopg://feast@pg/feast", redis_connection="r:6379")
        assert store_for_backend("kubernetes", shared) == shared

    def test_kubernetes_without_a_shared_store_says_what_to_give(self):
        with pytest.raises(FeatureStoreError, match=r"own pod.*'local_outputs/feature_store/registry.db'.*give "
                                                    r"redis_connection"):
            store_for_backend("kubernetes", self.LOCAL, registry=self.REGISTRY)
