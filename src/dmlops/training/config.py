"""The training worker's configuration and its command line (one flag per field)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

STRATEGIES = ("torch-ddp", "horovod-torch", "horovod-tf", "tf-multiworker")
TORCH_STRATEGIES = ("torch-ddp", "horovod-torch")
TF_STRATEGIES = ("tf-multiworker", "horovod-tf")


@dataclass
class TrainConfig:
    """Everything one training run needs. ``batch_size`` is global: each of N workers takes 1/N of it."""

    train_uri: str
    label: str
    export_uri: str
    strategy: str = "torch-ddp"
    eval_uri: str = ""
    numeric_features: list[str] = field(default_factory=list)
    categorical_features: list[str] = field(default_factory=list)
    exclude_features: list[str] = field(default_factory=list)
    epochs: int = 3
    batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    hidden_units: list[int] = field(default_factory=lambda: [64, 32])
    embedding_dim: int = 8
    dropout: float = 0.0
    max_categories: int = 1000
    seed: int = 0
    checkpoint_uri: str = ""
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    metrics_file: str = ""
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs ({self.epochs}) and batch_size ({self.batch_size}) must be at least 1")
        if self.checkpoint_every < 0:
            raise ValueError(f"checkpoint_every must be >= 0 (0 = every epoch), got {self.checkpoint_every}")
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def to_args(self) -> list[str]:
        """The worker command-line arguments that reproduce this config. An empty value (``""``, ``[]``)
        that is also the field's default is left out: a shell drops an empty word that is not quoted."""
        args = []
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
            text = ",".join(str(part) for part in value) if isinstance(value, list) else str(value)
            if text or value != default:
                args += [f"--{item.name.replace('_', '-')}", text]
        return args


def _list(kind):
    def parse(text: str) -> list:
        return [kind(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Parse worker arguments (``--train-uri ... --label ...``) into a TrainConfig."""
    parser = argparse.ArgumentParser(
        prog="python -m dmlops.training.worker",
        description="Train a tabular binary classifier (MLP with categorical embeddings) on Parquet data.",
    )
    defaults = TrainConfig(train_uri="", label="", export_uri="")
    for item in dataclasses.fields(TrainConfig):
        flag = f"--{item.name.replace('_', '-')}"
        default = getattr(defaults, item.name)
        required = item.name in ("train_uri", "label", "export_uri")
        if isinstance(default, list):
            kind = int if item.name == "hidden_units" else str
            parser.add_argument(flag, type=_list(kind), default=default, help=f"comma-separated (default {default})")
        elif item.name == "strategy":
            parser.add_argument(flag, choices=STRATEGIES, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=None if required else default, required=required)
    try:
        return TrainConfig(**vars(parser.parse_args(argv)))
    except ValueError as error:
        parser.error(str(error))
