"""A user's training script run through dmlops's ``train`` launcher (2 local workers) against the same
script under a bare ``torchrun --nproc-per-node 2``, in one run.

    python bench/user_entrypoint.py                 # the digits CNN on 20x the digits, 2 epochs
    python bench/user_entrypoint.py --copies 40 --epochs 3 --rounds 3

Both runs execute examples/digits_torch.py; the figure is the script's own ``samples_per_second`` (its
training loop, not start-up or export), best of ``--rounds``. Goal: dmlops >= 0.97x bare torchrun.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dmlops.training.config import RunConfig  # noqa: E402
from dmlops.training.launch import read_export_metadata, run_training  # noqa: E402
from dmlops.training.runtime import run_environment  # noqa: E402
from examples.digits_torch import write_digits  # noqa: E402

SCRIPT = str(ROOT / "examples" / "digits_torch.py")


def enlarged_digits(folder: Path, copies: int) -> tuple[str, str]:
    write_digits(str(folder / "train1.parquet"), str(folder / "eval.parquet"))
    table = pq.read_table(folder / "train1.parquet")
    pq.write_table(pa.concat_tables([table] * copies), folder / "train.parquet", row_group_size=8192)
    return str(folder / "train.parquet"), str(folder / "eval.parquet")


def through_train(run: RunConfig) -> float:
    return run_training(run, num_workers=2, backend="local", max_restarts=0)["metrics"]["samples_per_second"]


def bare_torchrun(run: RunConfig, arguments: list[str]) -> float:
    """The same script under torchrun; the run's settings given as the worker would give them."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    env = {**os.environ, **run_environment(run), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // 2))}
    subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", SCRIPT, *arguments], env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return read_export_metadata(run.export_uri)["metrics"]["samples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=20, help="copies of the 1,347 training digits")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-user-") as scratch:
        folder = Path(scratch)
        train_uri, eval_uri = enlarged_digits(folder, options.copies)
        arguments = {"epochs": options.epochs, "batch_size": options.batch_size}
        dmlops, bare = [], []
        for round_ in range(options.rounds):
            run = RunConfig(export_uri=str(folder / f"dmlops-{round_}"), entrypoint=SCRIPT, entrypoint_args=arguments,
                            train_uri=train_uri, eval_uri=eval_uri)
            dmlops.append(through_train(run))
            bare_run = RunConfig(export_uri=str(folder / f"bare-{round_}"), train_uri=train_uri, eval_uri=eval_uri)
            bare.append(bare_torchrun(bare_run, ["--epochs", str(options.epochs),
                                                 "--batch-size", str(options.batch_size)]))
        rows = pq.ParquetFile(train_uri).metadata.num_rows
        print(f"digits CNN, {rows} rows x {options.epochs} epochs, global batch {options.batch_size}, 2 workers, "
              f"best of {options.rounds}")
        print(f"  through train (dmlops worker): {max(dmlops):10.0f} samples/s   {[round(v) for v in dmlops]}")
        print(f"  bare torchrun:                 {max(bare):10.0f} samples/s   {[round(v) for v in bare]}")
        ratio = max(dmlops) / max(bare)
        print(f"ratio dmlops / torchrun: {ratio:.3f}x  (goal >= 0.97x: {'met' if ratio >= 0.97 else 'not met'}); "
              "the same script and loop, so the ratio is the cost of the worker and its launcher")


if __name__ == "__main__":
    main()
