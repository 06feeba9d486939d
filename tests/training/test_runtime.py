"""The training runtime API on its own: shards, checkpoints, reports, export, the worker's arguments and
exit codes."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dmlops.platform.storage import file_digests
from dmlops.training import runtime
from dmlops.training.config import RunConfig, TrainConfig, parse_args
from dmlops.training.export import METADATA_FILE
from dmlops.training.worker import EXIT_BAD_INPUT, EXIT_INFRASTRUCTURE, EXIT_USER_ERROR, is_infrastructure_error


@pytest.fixture
def as_rank(monkeypatch, tmp_path):
    """Make this process rank ``rank`` of ``world_size`` torch-ddp workers of a run under tmp_path."""
    def place(rank: int, world_size: int, **settings):
        run = RunConfig(**{"export_uri": str(tmp_path / "model"), "checkpoint_uri": str(tmp_path / "ckpt"),
                           "metrics_file": str(tmp_path / "metrics.txt"), **settings})
        for name, value in runtime.run_environment(run).items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world_size))
        return runtime.context()
    return place


@pytest.fixture
def numbers(tmp_path):
    """Rows 0..102 in a two-file Parquet directory, small row groups (batches cross file boundaries)."""
    folder = tmp_path / "numbers"
    folder.mkdir()
    pq.write_table(pa.table({"row": np.arange(0, 60), "half": np.arange(0, 60) / 2}), folder / "a.parquet",
                   row_group_size=7)
    pq.write_table(pa.table({"row": np.arange(60, 103), "half": np.arange(60, 103) / 2}), folder / "b.parquet",
                   row_group_size=7)
    return str(folder)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_ranks_share_every_batch_once_and_run_the_same_number_of_steps(as_rank, numbers, world_size):
    shards = []
    for rank in range(world_size):
        as_rank(rank, world_size)
        shards.append([batch["row"].tolist() for batch in runtime.shard_batches(numbers, 10, ["row"], epoch=1)])
    assert len({len(shard) for shard in shards}) == 1  # the same number of batches on every rank
    batches = [batch for shard in shards for batch in shard]
    expected = [list(range(start, min(start + 10, 103))) for start in range(0, 103, 10)]
    assert {tuple(batch) for batch in batches} == {tuple(batch) for batch in expected}  # each one whole
    assert len(batches) - len(expected) < world_size  # the padding wraps around, less than one batch a rank


def test_batches_reads_every_row_whatever_the_rank(as_rank, numbers):
    as_rank(1, 2)
    rows = [value for batch in runtime.batches(numbers, 16) for value in batch["row"].tolist()]
    assert rows == list(range(103))


def test_only_rank_0_checkpoints_reports_and_exports(as_rank, tmp_path, capsys):
    as_rank(1, 2)
    assert runtime.save_checkpoint(4, b"rank 1") == ""
    runtime.report({"loss": 0.5}, final=True)
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "weights.bin").write_bytes(b"\x00\x01")
    assert runtime.export(tmp_path / "files", framework="numpy", inputs={}, model_files={"w": "weights.bin"}) == ""
    assert runtime.latest_checkpoint() is None and not (tmp_path / "model").exists()
    assert capsys.readouterr().out == ""

    as_rank(0, 2)
    runtime.save_checkpoint(4, b"four")
    runtime.save_checkpoint(8, b"eight")
    assert runtime.latest_checkpoint() == (8, b"eight")
    runtime.report({"epoch": 1, "loss": 0.5})
    runtime.report({"loss": 0.25, "accuracy": 0.75}, final=True)
    assert capsys.readouterr().out.splitlines() == ["epoch=1 loss=0.5", "loss=0.25", "accuracy=0.75"]
    assert (tmp_path / "metrics.txt").read_text() == "loss=0.25\naccuracy=0.75\n"
    runtime.export(tmp_path / "files", framework="numpy", inputs={"x": {"dtype": "float32"}},
                   model_files={"w": "weights.bin"}, note="tiny")
    metadata = json.loads((tmp_path / "model" / METADATA_FILE).read_text())
    assert metadata["files"] == file_digests(tmp_path / "model", exclude=METADATA_FILE) == file_digests(tmp_path / "files")
    assert (metadata["framework"], metadata["inputs"], metadata["note"]) == ("numpy", {"x": {"dtype": "float32"}}, "tiny")
    assert metadata["metrics"] == {"loss": 0.25, "accuracy": 0.75} and metadata["workers"] == 2
    with pytest.raises(FileNotFoundError, match=r"\['model.pt2'\] are not in"):
        runtime.export(tmp_path / "files", framework="torch", inputs={}, model_files={"program": "model.pt2"})


def test_worker_arguments_round_trip_and_entrypoint_arguments_override():
    run = RunConfig(export_uri="s3://b/m", entrypoint="team.models:train", train_uri="s3://b/t",
                    entrypoint_args={"layers": [32, 16], "name": "cnn", "rate": 0.1, "flag": True})
    assert parse_args(run.to_args()) == run
    assert parse_args([*run.to_args(), "--rate", "0.2"]).entrypoint_args["rate"] == 0.2
    tabular = TrainConfig(train_uri="t", label="y", export_uri="m", hidden_units=[8, 4], epochs=2)
    received = parse_args(tabular.to_args())
    assert TrainConfig.from_run(received, received.entrypoint_args) == tabular
    with pytest.raises(ValueError, match="--flag value pairs"):
        parse_args(["--export-uri"])


def test_errors_of_a_lost_peer_are_infrastructure_errors():
    assert is_infrastructure_error(RuntimeError("[gloo] Connection closed by peer [127.0.0.1]:1234"))
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as error:
            raise RuntimeError("allreduce failed") from error
    except RuntimeError as error:
        assert is_infrastructure_error(error)
    assert not is_infrastructure_error(KeyError("digit"))


@pytest.mark.parametrize("source, code, says", [
    ("def train():\n    raise ValueError('bad learning rate')\n", EXIT_USER_ERROR, "ValueError: bad learning rate"),
    ("def train():\n    raise ConnectionResetError('peer gone')\n", EXIT_INFRASTRUCTURE, "ConnectionResetError: peer gone"),
    ("def train():\n    from dmlops.data.errors import DataError\n    raise DataError('no rows')\n", EXIT_BAD_INPUT,
     "error: no rows"),
])
def test_the_worker_exit_code_says_whether_a_restart_can_help(tmp_path, source, code, says):
    finished = subprocess.run([sys.executable, "-m", "dmlops.training.worker", "--export-uri", str(tmp_path),
                               "--entrypoint", source], capture_output=True, text=True, timeout=120)
    assert finished.returncode == code and says in finished.stderr
