"""Training throughput: the dmlops worker against a bare PyTorch loop on the same model and data, and
1 against 2 worker processes at a large batch, all measured in one run.

    python bench/train.py                    # CPU: worker vs bare loop, then 1 vs 2 processes
    python bench/train.py --device cuda      # GPU: worker vs bare loop
    python bench/train.py --rows 50000 --batch-size 4096 --epochs 2
    python bench/train.py --task multiclass  # or regression: the label and loss of that task

The worker's figure is its own ``samples_per_second`` (the training loop, not start-up or export);
the bare loop times the same number of epochs over the same tensors. Goal: worker >= 0.8x bare.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from dmlops.training.config import TrainConfig
from dmlops.training.data import fit_preprocessing, fit_target, read_table, resolve_features
from dmlops.training.launch import run_local
from dmlops.training.torch_model import TabularMLP
from dmlops.training.worker import train


LOSSES = {"binary": F.binary_cross_entropy_with_logits, "multiclass": F.cross_entropy, "regression": F.mse_loss}


def write_data(path: Path, rows: int, seed: int = 0, task: str = "binary") -> None:
    """A tabular problem shaped like flights: 6 numeric columns, 3 categorical of 16, 100 and 4000 values;
    a 0/1 label, one of three named classes (multiclass) or a number (regression)."""
    rng = np.random.default_rng(seed)
    columns = {f"x{i}": rng.normal(size=rows) for i in range(6)}
    for name, size in (("c_small", 16), ("c_mid", 100), ("c_large", 4000)):
        columns[name] = rng.integers(0, size, rows).astype(str)
    logit = columns["x0"] + 0.5 * columns["x1"] + (columns["c_small"].astype(int) % 3 - 1)
    if task == "multiclass":
        columns["label"] = np.array(["low", "mid", "high"])[np.digitize(logit + rng.normal(size=rows), [-0.5, 0.5])]
    elif task == "regression":
        columns["label"] = 10 * logit + rng.normal(size=rows)
    else:
        columns["label"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    pq.write_table(pa.table(columns), path)


def bare_loop(config: TrainConfig, device: str) -> float:
    """Samples/s of a plain loop: same model, optimizer, batches; data already tensors on the device."""
    table = read_table(config.train_uri)
    spec = resolve_features(table.schema, config.label)
    target = fit_target(table, config.label, config.task, "bench")
    preprocessing = fit_preprocessing(table, spec, config.max_categories, target)
    numeric, categorical = (torch.from_numpy(a).to(device) for a in preprocessing.encode(table, "bench"))
    labels = torch.from_numpy(target.encode(table, config.label, "bench")).to(device)
    loss_of = LOSSES[target.task]
    torch.manual_seed(config.seed)
    model = TabularMLP(len(spec.numeric), preprocessing.cardinalities,
                       preprocessing.embedding_sizes(config.embedding_dim), config.hidden_units,
                       outputs=target.outputs).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, fused=device == "cuda")
    rows, batch = len(labels), config.batch_size
    steps = math.ceil(rows / batch)
    synchronize = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    synchronize()
    started = time.perf_counter()
    for epoch in range(config.epochs):
        order = torch.from_numpy(np.random.default_rng([config.seed, epoch]).permutation(rows)).to(device)
        epoch_numeric, epoch_categorical, epoch_labels = numeric[order], categorical[order], labels[order]
        for step in range(steps):
            part = slice(step * batch, (step + 1) * batch)
            loss = loss_of(model(epoch_numeric[part], epoch_categorical[part]), epoch_labels[part])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    synchronize()
    return rows * config.epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--large-batch-size", type=int, default=16384)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--task", choices=sorted(LOSSES), default="binary")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmlops-bench-") as scratch:
        root = Path(scratch)
        write_data(root / "train.parquet", args.rows, task=args.task)

        def config(name: str, batch_size: int, epochs: int) -> TrainConfig:
            return TrainConfig(train_uri=str(root / "train.parquet"), label="label", task=args.task,
                               export_uri=str(root / name / "model"), metrics_file=str(root / name / "metrics.txt"),
                               epochs=epochs, batch_size=batch_size, hidden_units=[64, 32], device=args.device)

        same = config("worker", args.batch_size, args.epochs)
        bare = bare_loop(same, args.device)
        worker = train(same)["samples_per_second"]
        print(f"{args.device}: {args.task}, {args.rows} rows, batch {args.batch_size}, {args.epochs} epochs")
        print(f"  bare torch loop      {bare:>12,.0f} samples/s")
        print(f"  dmlops worker        {worker:>12,.0f} samples/s   {worker / bare:.2f}x bare "
              f"(goal >= {0.8 if args.task == 'binary' else 0.9}x)")

        if args.device == "cpu":
            figures = {}
            for workers in (1, 2):
                run = config(f"processes-{workers}", args.large_batch_size, args.epochs * 2)
                run_local(run, num_workers=workers, max_restarts=0)
                figures[workers] = json.loads(Path(f"{run.metrics_file}.json").read_text())["samples_per_second"]
            print(f"torch-ddp (gloo), batch {args.large_batch_size}:")
            print(f"  1 process            {figures[1]:>12,.0f} samples/s")
            print(f"  2 processes          {figures[2]:>12,.0f} samples/s   {figures[2] / figures[1]:.2f}x 1 process")


if __name__ == "__main__":
    main()
