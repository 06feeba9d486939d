"""The training loop shared by every strategy: epochs of rank-sharded batches, periodic checkpoints,
resume from the newest checkpoint, Katib metric lines.

Determinism: the data order is a function of (seed, epoch), weights start from ``seed``, and the random
generator (dropout) is reseeded from (seed, rank, step) at every checkpoint boundary, so a run resumed
from a checkpoint takes exactly the steps the uninterrupted run would have taken.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from dmlops.training.checkpoints import CheckpointStore
from dmlops.training.config import TrainConfig
from dmlops.training.data import EncodedData, Target, epoch_shard
from dmlops.training.metrics import katib_lines, task_metrics

# the scores reported after every epoch, by task (Katib reads them as the trial's intermediate values)
EPOCH_SCORES = {"binary": ("auc", "accuracy", "log_loss"), "multiclass": ("accuracy", "macro_f1", "log_loss"),
                "regression": ("rmse", "mae", "r2")}


class Trainer(Protocol):
    """What a framework gives the loop (see TorchTrainer and TFTrainer)."""

    framework: str
    rank: int
    world_size: int

    def reseed(self, value: int) -> None: ...
    def prepare_epoch(self, rows: np.ndarray) -> None: ...
    def train_step(self, step: int, batch_size: int) -> None: ...
    def take_mean_loss(self) -> float: ...
    def state(self) -> bytes: ...
    def load_state(self, payload: bytes) -> None: ...
    def predict(self, data: EncodedData) -> np.ndarray: ...
    def export(self, directory: Path) -> dict[str, str]: ...
    def close(self) -> None: ...


def log(message: str) -> None:
    print(message, flush=True)


def fit(
    config: TrainConfig, trainer: Trainer, train: EncodedData, evaluation: EncodedData | None, target: Target
) -> dict[str, Any]:
    """Train ``config.epochs`` epochs (resuming from the newest checkpoint) and return rank 0's final
    metrics: the ``target`` task's metrics on ``evaluation`` (or on the training split; regression in
    the label's units), train_loss and throughput."""

    def score(data: EncodedData) -> dict[str, Any]:
        predictions, labels = trainer.predict(data), data.labels
        if target.task == "regression":
            predictions = predictions * target.std + target.mean
            labels = labels * target.std + target.mean
        return task_metrics(target.task, labels, predictions, target.classes)

    rank, world_size = trainer.rank, trainer.world_size
    if config.batch_size < world_size:
        raise ValueError(f"batch_size {config.batch_size} is smaller than the {world_size} workers sharing it")
    rank_batch = config.batch_size // world_size
    rank_rows = math.ceil(len(train) / world_size)
    steps_per_epoch = math.ceil(rank_rows / rank_batch)
    total_steps = config.epochs * steps_per_epoch
    interval = config.checkpoint_every or steps_per_epoch
    store = CheckpointStore(config.checkpoint_uri, config.keep_checkpoints) if config.checkpoint_uri else None

    step = 0
    latest = store.latest() if store else None
    if latest:
        step, payload = latest
        if step > total_steps:
            raise ValueError(
                f"checkpoint {store.uri} is at step {step}, beyond this run's {total_steps} steps; "
                "it belongs to another run: pass an empty checkpoint URI"
            )
        trainer.load_state(payload)
        if rank == 0:
            log(f"resumed from checkpoint step {step} of {total_steps} ({store.uri})")

    epoch_metrics: dict[str, Any] = {}
    samples = 0
    started = time.perf_counter()
    for epoch in range(step // steps_per_epoch, config.epochs):
        trainer.prepare_epoch(epoch_shard(len(train), epoch, config.seed, rank, world_size))
        for step_in_epoch in range(step - epoch * steps_per_epoch, steps_per_epoch):
            if step % interval == 0:
                trainer.reseed(config.seed * 1_000_003 + rank * 10_007 + step)
            trainer.train_step(step_in_epoch, rank_batch)
            step += 1
            samples += min(rank_batch, rank_rows - step_in_epoch * rank_batch) * world_size
            if store and rank == 0 and (step % interval == 0 or step == total_steps):
                store.save(step, trainer.state())
        epoch_metrics = {"epoch": epoch + 1, "train_loss": trainer.take_mean_loss()}
        if rank == 0 and evaluation is not None:
            scores = score(evaluation)
            epoch_metrics.update({name: scores[name] for name in EPOCH_SCORES[target.task]})
        if rank == 0:
            log(" ".join(katib_lines(epoch_metrics)))
    seconds = time.perf_counter() - started

    if rank != 0:
        return {}
    data = evaluation if evaluation is not None else train
    metrics = score(data)
    metrics.update(
        evaluated_on="eval" if evaluation is not None else "train",
        train_loss=epoch_metrics.get("train_loss", float("nan")),
        steps=total_steps,
        workers=world_size,
        train_seconds=seconds,
        samples_per_second=samples / seconds if samples else 0.0,
    )
    return metrics
