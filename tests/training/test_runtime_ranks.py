"""Ranks from the launcher's environment: a TFJob's chief and workers, horovodrun, torchrun."""

import json

from dmlops.training import runtime


def _context(monkeypatch, strategy, **environment):
    for name in ("TF_CONFIG", "RANK", "WORLD_SIZE", "LOCAL_RANK", "HOROVOD_RANK", "HOROVOD_SIZE",
                 "HOROVOD_LOCAL_RANK", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DMLOPS_STRATEGY", strategy)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return runtime.context()


def _tf(monkeypatch, cluster, task_type, index):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    ctx = _context(monkeypatch, "tf-multiworker", TF_CONFIG=tf_config)
    return ctx.rank, ctx.world_size


def test_chief_and_workers_have_distinct_ranks(monkeypatch):
    cluster = {"chief": ["localhost:1"], "worker": ["localhost:2", "localhost:3"]}
    ranks = [_tf(monkeypatch, cluster, kind, index) for kind, index in (("chief", 0), ("worker", 0), ("worker", 1))]
    assert ranks == [(0, 3), (1, 3), (2, 3)]


def test_workers_only_rank_by_index(monkeypatch):
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    assert [_tf(monkeypatch, cluster, "worker", index) for index in (0, 1)] == [(0, 2), (1, 2)]


def test_horovodrun_and_torchrun_ranks(monkeypatch):
    ctx = _context(monkeypatch, "horovod-torch", HOROVOD_RANK="1", HOROVOD_SIZE="2", HOROVOD_LOCAL_RANK="1")
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.is_primary) == (1, 2, 1, False)
    ctx = _context(monkeypatch, "torch-ddp", RANK="3", WORLD_SIZE="4", LOCAL_RANK="0", DMLOPS_DEVICE="cuda")
    assert (ctx.rank, ctx.world_size, ctx.device) == (3, 4, "cuda:0")
    ctx = _context(monkeypatch, "torch-ddp")
    assert (ctx.rank, ctx.world_size, ctx.is_primary) == (0, 1, True)
