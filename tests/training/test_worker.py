"""The training worker for real: 2 local processes per strategy, export, resume after a killed worker."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dmlops.platform.storage import file_digests
from dmlops.training.checkpoints import CheckpointStore
from dmlops.training.config import TF_STRATEGIES, TrainConfig
from dmlops.training.evaluate import ExportedModel, evaluate_model
from dmlops.training.export import METADATA_FILE
from dmlops.training.launch import LAUNCH_KIND, run_local, worker_command
from dmlops.training.worker import train
from worker_restarts import kill_rank_one_after_first_checkpoint

# 1 and 2 workers see the same global batches (see epoch_shard), so they must agree to within
# float reduction order; this tolerance leaves room for that and nothing more.
EQUIVALENCE_TOLERANCE = 0.01


def config_for(tabular, tmp_path: Path, strategy: str = "torch-ddp", **overrides) -> TrainConfig:
    settings = dict(
        train_uri=tabular["train"], eval_uri=tabular["eval"], label="label", strategy=strategy,
        export_uri=str(tmp_path / "model"), checkpoint_uri=str(tmp_path / "checkpoints"),
        metrics_file=str(tmp_path / "metrics.txt"), epochs=2, batch_size=64, learning_rate=0.01,
        hidden_units=[16, 8], seed=3,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def final_metrics(config: TrainConfig) -> dict:
    return json.loads(Path(f"{config.metrics_file}.json").read_text())


def test_torch_ddp_two_workers_train_export_and_evaluate(tabular, tmp_path):
    config = config_for(tabular, tmp_path)
    result = run_local(config, num_workers=2, max_restarts=0)
    assert result.restarts == 0
    metrics = final_metrics(config)
    assert metrics["workers"] == 2 and metrics["auc"] > 0.75

    export = Path(config.export_uri)
    metadata = json.loads((export / "metadata.json").read_text())
    assert metadata["files"] == file_digests(export, exclude=METADATA_FILE)
    assert set(metadata["files"]) == {"model.pt2", "model.onnx"}
    assert metadata["inputs"]["numeric"]["columns"] == ["signal", "count"]
    assert metadata["inputs"]["categorical"]["columns"] == ["group"]
    assert metadata["preprocessing"]["categorical"] == [
        {"column": "group", "vocabulary": ["north", "south", "east", "west"]}]

    import onnx

    onnx.checker.check_model(str(export / "model.onnx"))
    # the exported torch.export program alone reproduces the worker's evaluation
    assert evaluate_model(config.export_uri, tabular["eval"])["auc"] == pytest.approx(metrics["auc"], abs=1e-6)
    assert "auc=" in Path(config.metrics_file).read_text()


STRATEGY_PARAMS = [
    pytest.param("torch-ddp"),
    pytest.param("horovod-torch", marks=pytest.mark.slow),
    pytest.param("tf-multiworker", marks=pytest.mark.slow),
    pytest.param("horovod-tf", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("strategy", STRATEGY_PARAMS)
def test_one_and_two_workers_reach_equivalent_metrics(strategy, tabular, tmp_path):
    pytest.importorskip("tensorflow" if strategy in TF_STRATEGIES else "torch")
    if strategy.startswith("horovod"):
        pytest.importorskip("horovod", reason="build it with scripts/build_horovod.sh")
    one = config_for(tabular, tmp_path / "one", strategy)
    two = config_for(tabular, tmp_path / "two", strategy)
    run_local(one, num_workers=1, max_restarts=0)
    run_local(two, num_workers=2, max_restarts=0)
    assert final_metrics(two)["workers"] == 2 and final_metrics(two)["auc"] > 0.75
    for name in ("auc", "log_loss", "accuracy"):
        assert final_metrics(one)[name] == pytest.approx(final_metrics(two)[name], abs=EQUIVALENCE_TOLERANCE)
    # the exported model (torch.export program or SavedModel) alone reproduces the worker's evaluation
    exported = evaluate_model(two.export_uri, tabular["eval"])
    assert exported["auc"] == pytest.approx(final_metrics(two)["auc"], abs=1e-6)


def test_a_tampered_export_is_refused(tabular, tmp_path):
    config = config_for(tabular, tmp_path, epochs=1)
    train(config)  # one process: no rendezvous in the environment
    model = Path(config.export_uri)
    ExportedModel(str(model))
    (model / "model.onnx").write_bytes(b"changed")
    with pytest.raises(Exception, match=r"file model.onnx is missing or its sha256 differs"):
        ExportedModel(str(model))


def test_checkpoints_and_export_go_to_object_storage(tabular, tmp_path, s3_bucket):
    config = config_for(tabular, tmp_path, epochs=1, export_uri=f"{s3_bucket}/models/run-1",
                        checkpoint_uri=f"{s3_bucket}/checkpoints/run-1", checkpoint_every=4)
    metrics = train(config)
    assert CheckpointStore(config.checkpoint_uri).steps() == [4, 8, 10]
    assert evaluate_model(config.export_uri, tabular["eval"])["auc"] == pytest.approx(metrics["auc"], abs=1e-6)


def test_bad_input_fails_with_a_message_naming_file_and_column(tabular, tmp_path):
    config = config_for(tabular, tmp_path, label="delayed")
    run = subprocess.run(worker_command(config), capture_output=True, text=True, timeout=120)
    assert run.returncode == 2
    assert f"error: {tabular['train']}: label column 'delayed' not found" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_a_killed_worker_restarts_from_the_newest_checkpoint_and_completes(tabular, tmp_path):
    interval = 20
    settings = dict(epochs=6, batch_size=8, checkpoint_every=interval)
    reference = config_for(tabular, tmp_path / "reference", **settings)
    run_local(reference, num_workers=2, max_restarts=0)

    config = config_for(tabular, tmp_path / "faulty", **settings)
    result, log, newest_at_kill = kill_rank_one_after_first_checkpoint(
        LAUNCH_KIND[config.strategy], worker_command(config), config.checkpoint_uri)

    total_steps = settings["epochs"] * 75  # ceil(ceil(600 / 2) / 4) steps per epoch
    assert result.restarts == 1, log
    assert "[local] worker-1 killed by signal 9; restarting all 2 workers" in log
    resumed = int(log.split("resumed from checkpoint step ")[1].split()[0])
    # at most one checkpoint interval is lost: the restart resumes from the newest checkpoint
    assert newest_at_kill <= resumed < total_steps and resumed % interval == 0
    # and, seeded and deterministic, ends exactly where an uninterrupted run ends
    for name in ("auc", "log_loss", "accuracy"):
        assert final_metrics(config)[name] == pytest.approx(final_metrics(reference)[name], abs=1e-6)
