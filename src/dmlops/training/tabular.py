"""dmlops's own tabular trainer, the default entrypoint: an MLP with categorical embeddings for a
binary, multiclass or regression label (``task``, inferred from the label when empty), on torch
(torch-ddp, horovod-torch) or TensorFlow (tf-multiworker, horovod-tf).

An ordinary user of :mod:`dmlops.training.runtime`: the worker calls :func:`train` with its arguments
(``label``, features, hyperparameters: the fields of :class:`~dmlops.training.config.TrainConfig`);
rank, data and export URIs, checkpoints, metrics and the export come from the runtime.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from dmlops.data.errors import DataError
from dmlops.training import runtime
from dmlops.training.config import TF_STRATEGIES, RunConfig, TrainConfig
from dmlops.training.data import (
    EncodedData,
    Preprocessing,
    fit_preprocessing,
    fit_target,
    load_encoded,
    read_schema,
    read_table,
    resolve_features,
)
from dmlops.training.domain import fit_domain
from dmlops.training.loop import Trainer, fit


OUTPUTS = {
    "binary": "logit of the positive class; probability = sigmoid(logit)",
    "multiclass": "one logit per class, in the order of 'classes'; probabilities = softmax(logits)",
    "regression": "the predicted value, in the label's units",
}


def make_trainer(config: TrainConfig, preprocessing: Preprocessing, train_data: EncodedData) -> Trainer:
    """The framework trainer for ``config.strategy``."""
    if config.strategy in TF_STRATEGIES:
        from dmlops.training.tf_trainer import TFTrainer

        return TFTrainer(config, preprocessing, train_data)
    from dmlops.training.torch_trainer import TorchTrainer

    return TorchTrainer(config, preprocessing, train_data)


def run_config_of_context() -> RunConfig:
    """The run's settings as the runtime gives them to this process."""
    ctx = runtime.context()
    return RunConfig(
        export_uri=ctx.export_uri, strategy=ctx.strategy, train_uri=ctx.train_uri, eval_uri=ctx.eval_uri,
        checkpoint_uri=ctx.checkpoint_uri, checkpoint_every=ctx.checkpoint_every,
        keep_checkpoints=ctx.keep_checkpoints, metrics_file=ctx.metrics_file,
        device="cuda" if ctx.device.startswith("cuda") else "cpu", seed=ctx.seed,
    )


def train(**arguments: Any) -> dict[str, Any]:
    """Train on this worker's share; rank 0 reports the final metrics, exports and returns them."""
    config = TrainConfig.from_run(run_config_of_context(), arguments)
    schema = read_schema(config.train_uri)
    spec = resolve_features(
        schema, config.label, config.numeric_features, config.categorical_features, config.exclude_features,
        source=config.train_uri,
    )
    table = read_table(config.train_uri, spec.columns)
    if table.num_rows == 0:
        raise DataError(f"{config.train_uri}: no rows to train on")
    target = fit_target(table, spec.label, config.task, config.train_uri)
    labels = target.encode(table, spec.label, config.train_uri)
    preprocessing = fit_preprocessing(table, spec, config.max_categories, target)
    numeric, categorical = preprocessing.encode(table, config.train_uri)
    train_data = EncodedData(numeric, categorical, labels)
    evaluation = load_encoded(config.eval_uri, preprocessing) if config.eval_uri else None

    trainer = make_trainer(config, preprocessing, train_data)
    # no try/finally: a failing worker must exit (non-zero) rather than wait for the others in a
    # collective; its launcher then stops and restarts the group
    metrics = fit(config, trainer, train_data, evaluation, target)
    if trainer.rank == 0:
        runtime.report(metrics, final=True)
        with tempfile.TemporaryDirectory(prefix="dmlops-model-") as directory:
            model_files = trainer.export(Path(directory))
            runtime.export(
                directory, framework=trainer.framework, model_files=model_files,
                inputs={
                    "numeric": {"columns": spec.numeric, "dtype": "float32"},
                    "categorical": {"columns": spec.categorical, "dtype": "int64"},
                    "output": OUTPUTS[target.task],
                },
                label=spec.label,
                task=target.task,
                **({"classes": target.classes} if target.task == "multiclass" else {}),
                feature_schema={name: str(schema.field(name).type) for name in spec.columns},
                preprocessing=preprocessing.to_dict(),
                feature_domain=fit_domain(table, spec, preprocessing),
                hyperparameters={
                    "epochs": config.epochs, "batch_size": config.batch_size,
                    "learning_rate": config.learning_rate, "weight_decay": config.weight_decay,
                    "hidden_units": config.hidden_units, "embedding_dim": config.embedding_dim,
                    "dropout": config.dropout, "seed": config.seed,
                },
                train_rows=len(train_data),
            )
    trainer.close()
    return metrics
