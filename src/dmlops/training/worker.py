"""The distributed training worker: ``python -m dmlops.training.worker --strategy ... --train-uri ...``.

Every worker process runs this same entry point; the launcher (the local backend, PyTorchJob, TFJob,
MPIJob or TrainJob) tells it its place through the environment. Rank 0 writes checkpoints, metrics and
the exported model.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa

from dmlops.data.errors import DataError
from dmlops.platform import storage
from dmlops.training.config import TF_STRATEGIES, TrainConfig, parse_args
from dmlops.training.data import (
    EncodedData,
    FeatureSpec,
    Preprocessing,
    binary_labels,
    fit_preprocessing,
    load_encoded,
    read_schema,
    read_table,
    resolve_features,
)
from dmlops.training.export import write_metadata
from dmlops.training.loop import Trainer, fit, log
from dmlops.training.metrics import katib_lines, write_metrics_file


def make_trainer(config: TrainConfig, preprocessing: Preprocessing, train: EncodedData) -> Trainer:
    """The framework trainer for ``config.strategy``."""
    if config.strategy in TF_STRATEGIES:
        from dmlops.training.tf_trainer import TFTrainer

        return TFTrainer(config, preprocessing, train)
    from dmlops.training.torch_trainer import TorchTrainer

    return TorchTrainer(config, preprocessing, train)


def export_model(
    config: TrainConfig,
    trainer: Trainer,
    schema: pa.Schema,
    spec: FeatureSpec,
    preprocessing: Preprocessing,
    metrics: dict[str, Any],
    train_rows: int,
) -> None:
    """Write the model files and metadata.json into a scratch folder, then publish it to export_uri."""
    with tempfile.TemporaryDirectory(prefix="dmlops-export-") as scratch:
        directory = Path(scratch) / "model"
        directory.mkdir()
        model_files = trainer.export(directory)
        write_metadata(directory, {
            "framework": trainer.framework,
            "strategy": config.strategy,
            "model_files": model_files,
            "label": spec.label,
            "inputs": {
                "numeric": {"columns": spec.numeric, "dtype": "float32"},
                "categorical": {"columns": spec.categorical, "dtype": "int64"},
                "output": "logit of the positive class; probability = sigmoid(logit)",
            },
            "feature_schema": {name: str(schema.field(name).type) for name in spec.columns},
            "preprocessing": preprocessing.to_dict(),
            "hyperparameters": {
                "epochs": config.epochs, "batch_size": config.batch_size,
                "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                "hidden_units": config.hidden_units, "embedding_dim": config.embedding_dim,
                "dropout": config.dropout, "seed": config.seed,
            },
            "metrics": metrics,
            "train_rows": train_rows,
        })
        storage.put(directory, config.export_uri)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run one worker's share of training; rank 0 returns the final metrics and exports the model."""
    schema = read_schema(config.train_uri)
    spec = resolve_features(
        schema, config.label, config.numeric_features, config.categorical_features, config.exclude_features,
        source=config.train_uri,
    )
    table = read_table(config.train_uri, spec.columns)
    if table.num_rows == 0:
        raise DataError(f"{config.train_uri}: no rows to train on")
    labels = binary_labels(table, spec.label, config.train_uri)
    preprocessing = fit_preprocessing(table, spec, config.max_categories)
    numeric, categorical = preprocessing.encode(table, config.train_uri)
    train_data = EncodedData(numeric, categorical, labels)
    evaluation = load_encoded(config.eval_uri, preprocessing) if config.eval_uri else None

    trainer = make_trainer(config, preprocessing, train_data)
    # no try/finally: a failing worker must exit (non-zero) rather than wait for the others in a
    # collective; its launcher then stops and restarts the group
    metrics = fit(config, trainer, train_data, evaluation)
    if trainer.rank == 0:
        export_model(config, trainer, schema, spec, preprocessing, metrics, len(train_data))
        for line in katib_lines(metrics):
            log(line)
        if config.metrics_file:
            write_metrics_file(config.metrics_file, metrics)
        log(f"exported {trainer.framework} model to {config.export_uri}")
    trainer.close()
    return metrics


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    try:
        train(config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
