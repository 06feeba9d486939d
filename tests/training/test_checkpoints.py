"""Checkpoints on a local path and on S3 (a moto server)."""

import pytest

from dmlops.training.checkpoints import CheckpointStore


@pytest.fixture(params=["local", "s3"])
def checkpoint_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "checkpoints")
    bucket = request.getfixturevalue("s3_bucket")
    return f"{bucket}/checkpoints/{request.node.name}"


def test_newest_checkpoint_wins_and_only_keep_are_kept(checkpoint_uri):
    store = CheckpointStore(checkpoint_uri, keep=2)
    assert store.latest() is None
    for step in (10, 20, 30):
        store.save(step, f"state at {step}".encode())
    assert store.steps() == [20, 30]
    assert store.latest() == (30, b"state at 30")


def test_a_partial_write_is_not_a_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=3)
    store.save(5, b"complete")
    (tmp_path / ".ckpt-000000000010.bin.partial").write_bytes(b"torn")
    assert store.latest() == (5, b"complete")
