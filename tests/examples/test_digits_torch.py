"""The digits CNN (examples/digits_torch.py), the user's own code on the training runtime: 2 local
workers under torch DDP and Horovod, a killed worker resumed, a user error failing the run, the pipeline."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dmlops.platform.local import WorkerGroupFailed, run_workers
from dmlops.platform.storage import file_digests
from dmlops.training.checkpoints import CheckpointStore
from dmlops.training.config import RunConfig
from dmlops.training.export import METADATA_FILE
from dmlops.training.launch import read_export_metadata, run_local, worker_command
from dmlops.training.worker import EXIT_USER_ERROR, function_entrypoint
from worker_restarts import kill_rank_one_after_first_checkpoint

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(ROOT / "examples" / "digits_torch.py")


def digits_run(digits, tmp_path: Path, entrypoint: str = SCRIPT, **changes) -> RunConfig:
    settings = dict(export_uri=str(tmp_path / "model"), entrypoint=entrypoint, entrypoint_args={"epochs": 2},
                    train_uri=digits["train"], eval_uri=digits["eval"], checkpoint_uri=str(tmp_path / "checkpoints"))
    return RunConfig(**{**settings, **changes})


def exported_accuracy(export: Path, eval_path: str) -> float:
    """The accuracy of the exported program, loaded with torch.export alone, on the evaluation set."""
    import torch

    table = pq.read_table(eval_path)
    pixels = np.stack([table[f"p{index}"].to_numpy() for index in range(64)], axis=1) / 16
    program = torch.export.load(str(export / "model.pt2"))
    predicted = program.module()(torch.from_numpy(pixels).float()).argmax(1).numpy()
    return float(np.mean(predicted == table["digit"].to_numpy()))


def test_the_digits_script_trains_on_two_ddp_workers_exports_a_torch_program_and_is_served(digits, tmp_path,
                                                                                            served_accuracy):
    run = digits_run(digits, tmp_path)
    assert run_local(run, num_workers=2, max_restarts=0).restarts == 0
    export = Path(run.export_uri)
    metadata = read_export_metadata(run.export_uri)
    assert metadata["files"] == file_digests(export, exclude=METADATA_FILE) and set(metadata["files"]) == {"model.pt2"}
    assert metadata["framework"] == "torch" and metadata["workers"] == 2
    assert metadata["inputs"]["pixels"] == {"dtype": "float32", "shape": [-1, 64],
                                            "note": "8x8 grey levels 0..16 divided by 16"}
    assert metadata["metrics"]["accuracy"] > 0.85
    assert exported_accuracy(export, digits["eval"]) == pytest.approx(metadata["metrics"]["accuracy"])
    assert served_accuracy(run.export_uri) == pytest.approx(metadata["metrics"]["accuracy"])
    assert CheckpointStore(run.checkpoint_uri).steps() == [1, 2]


def test_the_function_source_and_the_module_function_train_the_same_model(digits, tmp_path):
    from examples.digits_torch import train

    source = digits_run(digits, tmp_path / "source", entrypoint=function_entrypoint(train))
    run_local(source, num_workers=1, max_restarts=0)
    module = digits_run(digits, tmp_path / "module", entrypoint="examples.digits_torch:train")
    run_workers("pytorch", 1, worker_command(module), env={"PYTHONPATH": str(ROOT)})
    assert read_export_metadata(source.export_uri)["files"] == read_export_metadata(module.export_uri)["files"]


def test_a_killed_worker_restarts_and_resumes_from_the_newest_checkpoint(digits, tmp_path):
    run = digits_run(digits, tmp_path, entrypoint_args={"epochs": 6})
    result, log, newest_at_kill = kill_rank_one_after_first_checkpoint(
        "pytorch", worker_command(run), run.checkpoint_uri, restart_policy="ExitCode")

    assert result.restarts == 1, log
    assert "[local] worker-1 killed by signal 9; restarting all 2 workers" in log
    resumed = int(log.split("[worker-0] resumed_epoch=")[1].split()[0])
    assert newest_at_kill <= resumed < 6
    assert CheckpointStore(run.checkpoint_uri).steps()[-1] == 6 and read_export_metadata(run.export_uri)["metrics"]["accuracy"] > 0.85


def broken_train(epochs: int = 1):
    from dmlops.training import runtime

    runtime.setup()
    columns = {"pixel": [0.0]}
    raise KeyError(f"no column 'digit' in {sorted(columns)}")


def test_a_user_error_fails_at_once_with_the_users_traceback(digits, tmp_path):
    run = digits_run(digits, tmp_path, entrypoint=function_entrypoint(broken_train))
    with pytest.raises(WorkerGroupFailed) as failure:
        run_local(run, num_workers=2, max_restarts=2)
    message = str(failure.value)
    assert f"exited with code {EXIT_USER_ERROR} (a permanent error: not restarted) after 0 restart(s)" in message
    assert "Traceback (most recent call last)" in message
    assert "raise KeyError(f\"no column 'digit' in {sorted(columns)}\")" in message
    assert "KeyError: \"no column 'digit' in ['pixel']\"" in message


@pytest.mark.skipif(not (ROOT / ".venv" / ".horovod").exists(), reason="horovod is not installed in .venv")
def test_the_digits_function_trains_under_horovod(digits, tmp_path):
    from examples.digits_torch import train

    run = digits_run(digits, tmp_path, entrypoint=function_entrypoint(train), strategy="horovod-torch")
    run_local(run, num_workers=2, max_restarts=0)
    metadata = read_export_metadata(run.export_uri)
    assert metadata["strategy"] == "horovod-torch" and metadata["workers"] == 2
    assert metadata["metrics"]["accuracy"] > 0.85


def test_the_digits_pipeline_runs_locally(tmp_path):
    pytest.importorskip("sklearn")
    from kfp import local

    from examples.digits_torch import digits_pipeline

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"), raise_on_error=True)
    digits_pipeline(num_workers=2, epochs=2)
    model = next(path for path in (tmp_path / "root").rglob("train/model") if path.is_dir())
    metadata = json.loads((model / METADATA_FILE).read_text())
    assert metadata["model_files"] == {"torch_export": "model.pt2"} and metadata["workers"] == 2
    metrics = json.loads(next((tmp_path / "root").rglob("train/executor_output.json")).read_text())
    logged = metrics["artifacts"]["metrics"]["artifacts"][0]["metadata"]
    assert logged["accuracy"] == pytest.approx(metadata["metrics"]["accuracy"]) and logged["accuracy"] > 0.85
