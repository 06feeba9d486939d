"""A small CNN on scikit-learn's handwritten digits, trained by your own code on dmlops.

``train`` is ordinary PyTorch that asks :mod:`dmlops.training.runtime` for its place in the run, this
rank's batches, checkpoints, metrics and the export. The same function runs

- under ``train`` with ``entrypoint=function_entrypoint(train)`` (its source travels with the step),
  ``entrypoint="examples/digits_torch.py"`` (a script in the image) or ``"examples.digits_torch:train"``;
- with ``strategy="torch-ddp"`` (DistributedDataParallel) or ``"horovod-torch"`` (Horovod);
- as a script under a bare ``torchrun`` (``python examples/digits_torch.py --epochs 2``).

:func:`digits_pipeline` is the whole thing as a KFP pipeline: the digits as Parquet, then ``train``.
"""

from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from dmlops.images import TORCH_IMAGE


def train(epochs: int = 2, batch_size: int = 64, learning_rate: float = 0.01) -> dict:
    """Train the CNN on the run's training data (columns p0..p63 and ``digit``; ``batch_size`` is
    global), evaluate it on the run's evaluation data and export it with ``torch.export`` (``model.pt2``)."""
    import io
    import tempfile
    import time
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from dmlops.training import runtime

    ctx = runtime.setup()
    torch.manual_seed(ctx.seed)
    model = nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    if ctx.strategy == "horovod-torch":
        import horovod.torch as hvd

        hvd.broadcast_parameters(model.state_dict(), root_rank=0)
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
        trained = model
    elif ctx.world_size > 1:
        trained = nn.parallel.DistributedDataParallel(model)
    else:
        trained = model

    start_epoch = 0
    checkpoint = runtime.latest_checkpoint()
    if checkpoint:
        step, payload = checkpoint
        state = torch.load(io.BytesIO(payload), weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = step
        runtime.report({"resumed_epoch": step})

    pixel_columns = [f"p{index}" for index in range(64)]
    columns = [*pixel_columns, "digit"]
    samples, started = 0, time.perf_counter()
    for epoch in range(start_epoch, epochs):
        losses = []
        for batch in runtime.shard_batches(ctx.train_uri, batch_size // ctx.world_size, columns, epoch=epoch):
            pixels = torch.from_numpy(np.stack([batch[name] for name in pixel_columns], axis=1) / 16).float()
            digits = torch.from_numpy(batch["digit"].astype(np.int64))
            loss = nn.functional.cross_entropy(trained(pixels), digits)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            samples += len(digits) * ctx.world_size
        buffer = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
        runtime.save_checkpoint(epoch + 1, buffer.getvalue())
        runtime.report({"epoch": epoch + 1, "train_loss": float(np.mean(losses))})
    seconds = time.perf_counter() - started

    if ctx.is_primary:
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for batch in runtime.batches(ctx.eval_uri or ctx.train_uri, 512, columns):
                pixels = torch.from_numpy(np.stack([batch[name] for name in pixel_columns], axis=1) / 16)
                correct += int((model(pixels.float()).argmax(1).numpy() == batch["digit"]).sum())
                total += len(batch["digit"])
        metrics = {"accuracy": correct / total, "samples_per_second": samples / seconds if seconds else 0.0,
                   "train_seconds": seconds}
        runtime.report(metrics, final=True)
        with tempfile.TemporaryDirectory() as directory:
            batch_dim = torch.export.Dim("batch")
            program = torch.export.export(model, (torch.zeros(2, 64),), dynamic_shapes=({0: batch_dim},))
            torch.export.save(program, str(Path(directory) / "model.pt2"))
            runtime.export(directory, framework="torch", model_files={"torch_export": "model.pt2"},
                           inputs={"pixels": {"dtype": "float32", "shape": [-1, 64],
                                              "note": "8x8 grey levels 0..16 divided by 16"},
                                   "output": "10 logits, one per digit"},
                           task="multiclass", label="digit")
        return metrics
    return {}


def write_digits(train_path: str, eval_path: str, eval_fraction: float = 0.25) -> None:
    """scikit-learn's 1,797 digits (shipped with it, no download) as Parquet: columns p0..p63, digit."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    cut = int(len(order) * (1 - eval_fraction))
    for path, rows in ((train_path, order[:cut]), (eval_path, order[cut:])):
        columns = {f"p{index}": digits.data[rows, index].astype("float32") for index in range(64)}
        pq.write_table(pa.table({**columns, "digit": digits.target[rows].astype("int64")}), path)


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def digits_data(train_data: Output[Dataset], eval_data: Output[Dataset]):
    """The digits as Parquet training and evaluation sets."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    cut = int(len(order) * 0.75)
    for artifact, rows in ((train_data, order[:cut]), (eval_data, order[cut:])):
        columns = {f"p{index}": digits.data[rows, index].astype("float32") for index in range(64)}
        pq.write_table(pa.table({**columns, "digit": digits.target[rows].astype("int64")}), artifact.path)


@dsl.component(base_image=TORCH_IMAGE, install_kfp_package=False)
def digits_inputs(digits: Input[Dataset], inputs: Output[Dataset]):
    """The digits as the exported model takes them, for ``evaluate`` and ``deploy``: a ``pixels`` column
    (each row the 64 grey levels divided by 16) and the ``digit`` label."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(digits.path)
    pixels = np.stack([table[f"p{index}"].to_numpy() for index in range(64)], axis=1).astype("float32") / 16
    column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.ravel()), 64)
    pq.write_table(pa.table({"pixels": column, "digit": table["digit"]}), inputs.path)


@dsl.pipeline(name="digits-torch")
def digits_pipeline(strategy: str = "torch-ddp", num_workers: int = 2, epochs: int = 2):
    """The digits as Parquet, then ``train`` running :func:`train`'s source on ``num_workers`` workers."""
    from dmlops.components import train as train_component
    from dmlops.training.worker import function_entrypoint

    data = digits_data()
    train_component(train_data=data.outputs["train_data"], eval_data=data.outputs["eval_data"],
                    entrypoint=function_entrypoint(train), entrypoint_args={"epochs": epochs},
                    strategy=strategy, num_workers=num_workers, max_restarts=0)


if __name__ == "__main__":  # a script: python digits_torch.py --epochs 2 (under the worker or torchrun)
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    options = parser.parse_args()
    train(options.epochs, options.batch_size, options.learning_rate)
    from dmlops.training import runtime

    runtime.shutdown()
