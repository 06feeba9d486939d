"""TF_CONFIG ranks: a TFJob's chief and its workers get distinct ranks, as the local workers do."""

import json

import pytest

tf = pytest.importorskip("tensorflow")

from dmlops.training.tf_trainer import tf_config_rank  # noqa: E402


def _resolver(monkeypatch, cluster, task_type, index):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


def test_chief_and_workers_have_distinct_ranks(monkeypatch):
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2", "localhost:3"]}
    ranks = [tf_config_rank(_resolver(monkeypatch, cluster, kind, index))
             for kind, index in (("chief", 0), ("worker", 0), ("worker", 1))]
    assert ranks == [0, 1, 2]


def test_workers_only_rank_by_index(monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    assert [tf_config_rank(_resolver(monkeypatch, cluster, "worker", index)) for index in (0, 1)] == [0, 1]
