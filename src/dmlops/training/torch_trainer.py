"""PyTorch training under DistributedDataParallel (``torch-ddp``) or Horovod (``horovod-torch``).

Both join the other workers through :func:`dmlops.training.runtime.setup`: torch-ddp with the rendezvous
that PyTorchJob, TrainJob and torchrun give each process (one process without WORLD_SIZE), horovod-torch
with ``hvd.init()`` under ``horovodrun``/MPIJob.
"""

from __future__ import annotations

import copy
import gc
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dmlops.training import runtime
from dmlops.training.config import TrainConfig
from dmlops.training.data import EncodedData, Preprocessing
from dmlops.training.torch_model import TabularMLP, Unstandardized

PREDICT_BATCH = 65536


class TorchTrainer:
    """One worker's model, optimizer and training shard, and its link to the other workers."""

    framework = "torch"

    def __init__(self, config: TrainConfig, preprocessing: Preprocessing, train: EncodedData):
        self.config = config
        self.horovod = config.strategy == "horovod-torch"
        if config.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device")
        ctx = runtime.setup()
        self.rank, self.world_size, local_rank = ctx.rank, ctx.world_size, ctx.local_rank
        self.device = torch.device(ctx.device)
        self.target = preprocessing.target
        self.loss = {"binary": F.binary_cross_entropy_with_logits, "multiclass": F.cross_entropy,
                     "regression": F.mse_loss}[self.target.task]

        torch.manual_seed(config.seed)
        self.model = TabularMLP(
            num_numeric=len(preprocessing.numeric),
            cardinalities=preprocessing.cardinalities,
            embedding_widths=preprocessing.embedding_sizes(config.embedding_dim),
            hidden_units=config.hidden_units,
            dropout=config.dropout,
            outputs=self.target.outputs,
        ).to(self.device)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay,
            fused=self.device.type == "cuda",
        )
        self.train_model: torch.nn.Module = self.model
        if self.horovod:
            import horovod.torch as hvd

            hvd.broadcast_parameters(self.model.state_dict(), root_rank=0)
            self.optimizer = hvd.DistributedOptimizer(self.optimizer, named_parameters=self.model.named_parameters())
        elif self.world_size > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[local_rank] if self.device.type == "cuda" else None
            )

        self.numeric = torch.from_numpy(train.numeric).to(self.device)
        self.categorical = torch.from_numpy(train.categorical).to(self.device)
        self.labels = torch.from_numpy(train.labels).to(self.device)
        self.loss_sum = torch.zeros((), device=self.device)
        self.loss_steps = 0

    def reseed(self, value: int) -> None:
        torch.manual_seed(value)

    def prepare_epoch(self, rows: np.ndarray) -> None:
        index = torch.from_numpy(rows).to(self.device)
        self.epoch_numeric = self.numeric[index]
        self.epoch_categorical = self.categorical[index]
        self.epoch_labels = self.labels[index]

    def train_step(self, step: int, batch_size: int) -> None:
        batch = slice(step * batch_size, (step + 1) * batch_size)
        logits = self.train_model(self.epoch_numeric[batch], self.epoch_categorical[batch])
        loss = self.loss(logits, self.epoch_labels[batch])
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.loss_sum += loss.detach()
        self.loss_steps += 1

    def take_mean_loss(self) -> float:
        mean = self.loss_sum.item() / max(self.loss_steps, 1)
        self.loss_sum.zero_()
        self.loss_steps = 0
        return mean

    def state(self) -> bytes:
        buffer = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, buffer)
        return buffer.getvalue()

    def load_state(self, payload: bytes) -> None:
        state = torch.load(io.BytesIO(payload), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    @torch.no_grad()
    def predict(self, data: EncodedData) -> np.ndarray:
        """The task's predictions: positive-class probabilities [n], class probabilities [n, classes] or
        standardised regression values [n] (the scale the labels were encoded in)."""
        self.model.eval()
        activation = {"binary": torch.sigmoid, "multiclass": lambda logits: torch.softmax(logits, dim=1),
                      "regression": lambda values: values}[self.target.task]
        chunks = []
        for start in range(0, len(data), PREDICT_BATCH):
            numeric = torch.from_numpy(data.numeric[start : start + PREDICT_BATCH]).to(self.device)
            categorical = torch.from_numpy(data.categorical[start : start + PREDICT_BATCH]).to(self.device)
            chunks.append(activation(self.model(numeric, categorical)).cpu().numpy())
        self.model.train()
        return np.concatenate(chunks)

    def export(self, directory: Path) -> dict[str, str]:
        """Write the ``torch.export`` program ``model.pt2`` and ONNX ``model.onnx`` (inputs ``numeric``,
        ``categorical``, any number of rows; output ``logit``: the binary logit [n], the class logits
        [n, classes] or the regression value [n] in the label's units); returns the format-to-file map for
        the metadata."""
        model = copy.deepcopy(self.model).cpu().eval()
        if self.target.task == "regression":
            model = Unstandardized(model, self.target.mean, self.target.std).eval()
        example = (
            torch.zeros(2, self.numeric.shape[1], dtype=torch.float32),
            torch.zeros(2, self.categorical.shape[1], dtype=torch.int64),
        )
        rows = torch.export.Dim("rows")
        program = torch.export.export(model, example, dynamic_shapes=({0: rows}, {0: rows}))
        torch.export.save(program, str(directory / "model.pt2"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                model, example, str(directory / "model.onnx"), dynamo=False,
                input_names=["numeric", "categorical"], output_names=["logit"],
                dynamic_axes={"numeric": {0: "batch"}, "categorical": {0: "batch"}, "logit": {0: "batch"}},
            )
        return {"torch_export": "model.pt2", "onnx": "model.onnx"}

    def close(self) -> None:
        if self.horovod:
            import horovod.torch as hvd

            hvd.shutdown()
        elif torch.distributed.is_initialized():
            # wait for rank 0's export: a rank tearing down while rank 0, which hosts the rendezvous
            # store, exits can block forever
            torch.distributed.barrier()
            # Drop DDP while this reference keeps the group alive: DDP's reducer destroys what it
            # holds with the GIL taken, and a gloo group destroyed that way waits forever for its
            # worker thread, which needs the GIL to finish the barrier. The group's own binding
            # releases the GIL, so the group must go last, through ``world`` (gc.collect: DDP is freed
            # now even if a reference cycle holds it).
            world = torch.distributed.group.WORLD
            self.train_model = self.model
            gc.collect()
            torch.distributed.destroy_process_group()
            del world
