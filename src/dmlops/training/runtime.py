"""The training runtime API that user training code calls: a few functions, no base class.

Every worker of a run executes the same entrypoint; the launcher (the local backend, a PyTorchJob,
TrainJob, TFJob or MPIJob pod, or a bare ``torchrun``/``horovodrun``) tells each process its place
through the environment, and the worker (``python -m dmlops.training.worker``) puts the run's settings
beside it as ``DMLOPS_*`` variables. So the same code runs under each of them::

    from dmlops.training import runtime

    def train(epochs: int = 2, lr: float = 0.01):
        ctx = runtime.setup()                      # process group / Horovod / MultiWorkerMirroredStrategy
        state = runtime.latest_checkpoint()        # (step, bytes) of the newest checkpoint, or None
        for batch in runtime.shard_batches(ctx.train_uri, batch_size=64):   # this rank's batches
            ...
        for batch in runtime.batches(ctx.eval_uri, batch_size=512):         # every row (e.g. rank 0)
            ...
        runtime.save_checkpoint(step, payload)     # rank 0 writes, under ctx.checkpoint_uri
        runtime.report({"accuracy": 0.9}, final=True)
        runtime.export(model_dir, framework="torch", inputs={...}, model_files={"torch_export": "model.pt2"})

- ranks: torch-ddp reads RANK, WORLD_SIZE, LOCAL_RANK (torchrun, PyTorchJob, TrainJob); horovod-* reads
  HOROVOD_RANK/HOROVOD_SIZE/HOROVOD_LOCAL_RANK (``horovodrun``) or OMPI_COMM_WORLD_* (``mpirun``);
  tf-multiworker reads TF_CONFIG as TFJob sets it (a chief is rank 0 and worker i is rank i + 1).
- metrics: every :func:`report` prints Katib ``name=value`` lines (live progress in the step's log and
  what Katib's StdOut collector parses); the final report also writes the metrics file (Katib's File
  collector) and goes into the export's metadata, which the ``train`` step logs as KFP Metrics.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.training.checkpoints import CheckpointStore
from dmlops.training.config import RUN_FIELDS, RunConfig
from dmlops.training.export import write_metadata
from dmlops.training.metrics import katib_lines, write_metrics_file

ENV_PREFIX = "DMLOPS_"


def run_environment(run: RunConfig) -> dict[str, str]:
    """The ``DMLOPS_*`` variables through which the worker gives ``run``'s settings to the user's code."""
    environment = {}
    for name in RUN_FIELDS:
        value = getattr(run, name)
        environment[ENV_PREFIX + name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
    return environment


@dataclass(frozen=True)
class Context:
    """Where this process stands in its run."""

    strategy: str
    rank: int
    world_size: int
    local_rank: int
    device: str
    train_uri: str
    eval_uri: str
    export_uri: str
    checkpoint_uri: str
    checkpoint_every: int
    keep_checkpoints: int
    metrics_file: str
    seed: int

    @property
    def is_primary(self) -> bool:
        """Rank 0: the worker that checkpoints, reports and exports."""
        return self.rank == 0


def _setting(name: str, default: str = "") -> str:
    return os.environ.get(ENV_PREFIX + name.upper(), default)


def tf_config_rank(tf_config: dict[str, Any]) -> int:
    """This process's rank among all TF_CONFIG tasks: a TFJob's chief is rank 0 and its workers follow
    (worker 0 is rank 1); without a chief, as locally, the worker index is the rank."""
    task = tf_config.get("task") or {}
    if task.get("type") in ("chief", "master"):
        return 0
    has_chief = any(role in (tf_config.get("cluster") or {}) for role in ("chief", "master"))
    return int(task.get("index") or 0) + (1 if has_chief else 0)


def _ranks(strategy: str) -> tuple[int, int, int]:
    environ = os.environ
    if strategy.startswith("horovod"):
        for prefix in ("HOROVOD_", "OMPI_COMM_WORLD_"):
            if prefix + "RANK" in environ:
                size = environ.get(prefix + "SIZE", "1")
                return int(environ[prefix + "RANK"]), int(size), int(environ.get(prefix + "LOCAL_RANK", "0"))
        return 0, 1, 0
    if strategy == "tf-multiworker":
        if "TF_CONFIG" not in environ:
            return 0, 1, 0
        tf_config = json.loads(environ["TF_CONFIG"])
        size = sum(len(tasks) for role, tasks in tf_config.get("cluster", {}).items() if role != "ps")
        return tf_config_rank(tf_config), max(size, 1), 0
    return int(environ.get("RANK", "0")), int(environ.get("WORLD_SIZE", "1")), int(environ.get("LOCAL_RANK", "0"))


def context() -> Context:
    """This process's rank, world size, local rank and device, and the run's settings (from the
    environment; without the worker's ``DMLOPS_*`` variables, one torch-ddp process on the CPU)."""
    strategy = _setting("strategy", "torch-ddp")
    rank, world_size, local_rank = _ranks(strategy)
    device = _setting("device", "cpu")
    return Context(
        strategy=strategy, rank=rank, world_size=world_size, local_rank=local_rank,
        device=f"cuda:{local_rank}" if device == "cuda" else "cpu",
        train_uri=_setting("train_uri"), eval_uri=_setting("eval_uri"), export_uri=_setting("export_uri"),
        checkpoint_uri=_setting("checkpoint_uri"), checkpoint_every=int(_setting("checkpoint_every", "0")),
        keep_checkpoints=int(_setting("keep_checkpoints", "3")), metrics_file=_setting("metrics_file"),
        seed=int(_setting("seed", "0")),
    )


_distribution: Any = None  # the tf.distribute strategy setup() made, kept for the process


def setup() -> Context:
    """Join the run's workers as the strategy does: torch-ddp initialises the default process group
    (nccl on CUDA, gloo on the CPU) when there is more than one worker, horovod-* calls ``hvd.init()``,
    tf-multiworker creates the ``MultiWorkerMirroredStrategy`` (:func:`distribution`). Safe to call twice."""
    global _distribution
    ctx = context()
    if ctx.strategy == "torch-ddp":
        import torch
        import torch.distributed as dist

        if ctx.device.startswith("cuda"):
            torch.cuda.set_device(ctx.local_rank)
        if ctx.world_size > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if ctx.device.startswith("cuda") else "gloo")
    elif ctx.strategy == "horovod-torch":
        import horovod.torch as hvd

        hvd.init()
    elif ctx.strategy == "horovod-tf":
        import horovod.tensorflow as hvd

        hvd.init()
    elif _distribution is None:
        import tensorflow as tf

        options = tf.distribute.experimental.CommunicationOptions(
            implementation=tf.distribute.experimental.CommunicationImplementation.RING)
        _distribution = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    return ctx


def distribution() -> Any:
    """The ``tf.distribute`` strategy of a tf-multiworker run (after :func:`setup`), else None."""
    return _distribution


def shutdown() -> None:
    """Leave the process group (torch-ddp) or Horovod once every worker is done; nothing otherwise."""
    strategy = context().strategy
    if strategy == "torch-ddp":
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()  # rank 0 hosts the rendezvous store: no rank leaves while another still uses it
            dist.destroy_process_group()
    elif strategy.startswith("horovod"):
        module = "horovod.torch" if strategy == "horovod-torch" else "horovod.tensorflow"
        __import__(module, fromlist=["shutdown"]).shutdown()


def _dataset(uri: str):
    import pyarrow.dataset as ds

    filesystem, path = storage.filesystem(uri)
    if not filesystem.exists(path):
        raise DataError(f"training data {uri} does not exist; pass the URI of a Parquet file or directory")
    try:
        dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
        return dataset, sum(fragment.count_rows() for fragment in dataset.get_fragments())
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(f"{uri}: cannot read as Parquet ({error}); pass a Parquet file or directory") from None


def _arrays(batch: pa.RecordBatch) -> dict[str, np.ndarray]:
    return {name: batch.column(name).to_numpy(zero_copy_only=False) for name in batch.schema.names}


def batches(uri: str, batch_size: int, columns: list[str] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Every row of a Parquet file or directory (a path or URI), ``batch_size`` rows at a time (the last
    batch may be shorter), whatever this process's rank: e.g. rank 0 evaluating on the whole split."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    dataset, _ = _dataset(uri)
    for batch in _fixed_batches(dataset, batch_size, columns):
        yield _arrays(batch)


def shard_batches(
    uri: str, batch_size: int, columns: list[str] | None = None, *, epoch: int = 0,
) -> Iterator[dict[str, np.ndarray]]:
    """This rank's batches of a Parquet file or directory (a path or URI: gs://, s3://, minio://), read
    one record batch at a time, never the whole file. Global batch ``i`` of ``batch_size`` rows goes to
    rank ``i % world_size``; every rank gets the same number of batches (a short rank wraps around to
    the first ones, as DistributedSampler pads), so collectives stay in step. Each batch maps column
    name to a NumPy array. ``epoch`` rotates which rank gets which batch from one epoch to the next."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    ctx = context()
    dataset, rows = _dataset(uri)
    if rows == 0:
        raise DataError(f"{uri}: no rows to train on")
    count = -(-rows // batch_size)
    per_rank = -(-count // ctx.world_size)
    wanted = [(ctx.rank + epoch + step * ctx.world_size) % count for step in range(per_rank)]
    # ``wanted`` rises, and at most once wraps around to indices below its first: those are kept aside
    # while reading and given last
    first = wanted[0]
    wrapped = {index for index in wanted if index < first}
    rising = {index for index in wanted if index >= first}
    kept: dict[int, dict[str, np.ndarray]] = {}
    for index, batch in enumerate(_fixed_batches(dataset, batch_size, columns)):
        if index in rising:
            yield _arrays(batch)
        elif index in wrapped:
            kept[index] = _arrays(batch)
    for index in wanted[len(rising):]:
        yield kept[index]


def _fixed_batches(dataset, batch_size: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """The dataset's rows in record batches of exactly ``batch_size`` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in dataset.to_batches(columns=columns, batch_size=batch_size):
        pending.append(batch)
        held += batch.num_rows
        while held >= batch_size:
            table = pa.Table.from_batches(pending).combine_chunks()
            yield table.slice(0, batch_size).to_batches()[0]
            rest = table.slice(batch_size)
            pending, held = (rest.to_batches(), rest.num_rows)
    if held:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _store() -> CheckpointStore | None:
    ctx = context()
    return CheckpointStore(ctx.checkpoint_uri, ctx.keep_checkpoints) if ctx.checkpoint_uri else None


def save_checkpoint(step: int, payload: bytes) -> str:
    """On rank 0, save ``payload`` (e.g. ``torch.save`` into a BytesIO) as the checkpoint of ``step``
    under the run's checkpoint URI (shared storage on a cluster); other ranks and runs without a
    checkpoint URI save nothing. Returns the checkpoint's URI, or "" when nothing was saved."""
    store = _store()
    if store is None or not context().is_primary:
        return ""
    return store.save(step, payload)


def latest_checkpoint() -> tuple[int, bytes] | None:
    """The newest checkpoint of the run as (step, payload), or None: what a restarted worker resumes from."""
    store = _store()
    return store.latest() if store else None


_final_metrics: dict[str, Any] = {}


def report(metrics: dict[str, Any], *, final: bool = False) -> None:
    """On rank 0, print ``metrics`` as Katib ``name=value`` pairs (live progress: one line; final: a
    line each), which Katib's StdOut collector parses. ``final``: also write them to the metrics file and keep them for :func:`export`'s
    metadata (the step's KFP Metrics). Other ranks report nothing."""
    ctx = context()
    if not ctx.is_primary:
        return
    lines = katib_lines(metrics)
    print("\n".join(lines) if final else " ".join(lines), flush=True)
    if final:
        _final_metrics.clear()
        _final_metrics.update(metrics)
        if ctx.metrics_file:
            write_metrics_file(ctx.metrics_file, metrics)


def final_metrics() -> dict[str, Any]:
    """The metrics of the last final :func:`report` of this process."""
    return dict(_final_metrics)


def export(
    directory: str | Path,
    *,
    framework: str,
    inputs: dict[str, Any],
    model_files: dict[str, str],
    **metadata: Any,
) -> str:
    """On rank 0, publish the model files in ``directory`` to the run's export URI with a
    ``metadata.json``: ``framework``, ``inputs`` (the input signature: names, dtypes, shapes),
    ``model_files`` (format to file name), the final metrics, any extra ``metadata`` and the sha256 of
    every file. Returns the export URI; other ranks export nothing and get ""."""
    ctx = context()
    if not ctx.is_primary:
        return ""
    if not ctx.export_uri:
        raise ValueError("no export URI: run under the dmlops worker or set DMLOPS_EXPORT_URI")
    missing = sorted(name for name in model_files.values() if not (Path(directory) / name).exists())
    if missing:
        raise FileNotFoundError(f"model files {missing} are not in {directory}")
    with tempfile.TemporaryDirectory(prefix="dmlops-export-") as scratch:
        target = Path(scratch) / "model"
        shutil.copytree(directory, target)
        write_metadata(target, {
            "framework": framework, "strategy": ctx.strategy, "workers": ctx.world_size, "inputs": inputs,
            "model_files": model_files, "metrics": dict(_final_metrics),
            **metadata,
        })
        storage.put(target, ctx.export_uri)
    print(f"exported {framework} model to {ctx.export_uri}", flush=True)
    return ctx.export_uri
