"""TensorFlow training: a custom loop under ``MultiWorkerMirroredStrategy`` (``tf-multiworker``) or
with Horovod's DistributedGradientTape (``horovod-tf``).

tf-multiworker reads TF_CONFIG as TFJob sets it (no TF_CONFIG: one local worker). Keras 3
``model.fit`` fails under MultiWorkerMirroredStrategy (keras-team/keras#20585), so each step is
``strategy.run`` of a replica function; the Keras optimizer sums gradients across replicas in replica
context, so the loss is divided by the number of replicas. horovod-tf reads what ``horovodrun`` gives
and averages gradients with ``hvd.grouped_allreduce`` (Horovod's DistributedGradientTape and
broadcast_variables predate Keras 3 variables).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from dmlops.training import runtime
from dmlops.training.config import TrainConfig
from dmlops.training.data import EncodedData, Preprocessing
from dmlops.training.evaluate import activate

PREDICT_BATCH = 65536


def build_model(preprocessing: Preprocessing, config: TrainConfig, unstandardize: bool = False):
    """The Keras tabular model: inputs ``numeric`` [n, d] float32 and ``categorical`` [n, c] int64,
    output one logit or value per row, or one logit per class (the same architecture as the torch
    TabularMLP). ``unstandardize``: a regression output in the label's units (for the export)."""
    import keras

    numeric = keras.Input(shape=(len(preprocessing.numeric),), dtype="float32", name="numeric")
    categorical = keras.Input(shape=(len(preprocessing.categorical),), dtype="int64", name="categorical")
    parts = [numeric]
    widths = preprocessing.embedding_sizes(config.embedding_dim)
    for index, (size, width) in enumerate(zip(preprocessing.cardinalities, widths)):
        parts.append(keras.layers.Embedding(size, width, name=f"embedding_{index}")(categorical[:, index]))
    hidden = keras.layers.Concatenate()(parts) if len(parts) > 1 else numeric
    for units in config.hidden_units:
        hidden = keras.layers.Dense(units, activation="relu")(hidden)
        if config.dropout > 0:
            hidden = keras.layers.Dropout(config.dropout)(hidden)
    target = preprocessing.target
    output = keras.layers.Dense(target.outputs)(hidden)
    if target.outputs == 1:
        output = keras.ops.squeeze(output, axis=-1)
    if unstandardize and target.task == "regression":
        output = keras.layers.Rescaling(scale=target.std, offset=target.mean)(output)
    return keras.Model([numeric, categorical], output)


class TFTrainer:
    """One worker's Keras model, optimizer and training shard, and its link to the other workers."""

    framework = "tensorflow"

    def __init__(self, config: TrainConfig, preprocessing: Preprocessing, train: EncodedData):
        import keras
        import tensorflow as tf

        threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started in this process: its thread pools are fixed
            pass
        self.tf, self.keras = tf, keras
        self.config = config
        self.preprocessing = preprocessing
        self.task = preprocessing.target.task
        self._loss = {
            "binary": tf.nn.sigmoid_cross_entropy_with_logits,
            "multiclass": tf.nn.sparse_softmax_cross_entropy_with_logits,
            "regression": lambda labels, logits: tf.square(logits - labels),
        }[self.task]
        self.horovod = config.strategy == "horovod-tf"
        ctx = runtime.setup()
        self.rank, self.world_size = ctx.rank, ctx.world_size
        if self.horovod:
            import horovod.tensorflow as hvd

            self.hvd = hvd
            self.strategy = tf.distribute.get_strategy()
        else:
            self.strategy = runtime.distribution()
            self.world_size = self.strategy.num_replicas_in_sync

        keras.utils.set_random_seed(config.seed)
        with self.strategy.scope():
            self.model = build_model(preprocessing, config)
            self.optimizer = keras.optimizers.AdamW(
                learning_rate=config.learning_rate, weight_decay=config.weight_decay
            )
            self.optimizer.build(self.model.trainable_variables)
        if self.horovod:  # hvd.broadcast_variables cannot assign Keras 3 variables: broadcast values
            for variable in self.model.variables:
                variable.assign(hvd.broadcast(variable.value, root_rank=0, name=variable.path))

        self.numeric = tf.constant(train.numeric)
        self.categorical = tf.constant(train.categorical)
        self.labels = tf.constant(train.labels)
        self.loss_sum = 0.0
        self.loss_steps = 0
        self._step = tf.function(self._distributed_step, reduce_retracing=True)

    def _loss_and_gradients(self, numeric, categorical, labels, replicas: int):
        tf = self.tf
        with tf.GradientTape() as tape:
            logits = self.model([numeric, categorical], training=True)
            loss = tf.reduce_mean(self._loss(labels=labels, logits=logits))
            scaled = loss / replicas
        gradients = tape.gradient(scaled, self.model.trainable_variables)
        if self.horovod:  # DistributedGradientTape cannot key Keras 3 variables: average the gradients
            dense = [tf.convert_to_tensor(gradient) for gradient in gradients]
            gradients = self.hvd.grouped_allreduce(dense, op=self.hvd.Average)
        return loss, gradients

    def _distributed_step(self, numeric, categorical, labels):
        replicas = 1 if self.horovod else self.world_size

        def replica_step(numeric, categorical, labels):
            loss, gradients = self._loss_and_gradients(numeric, categorical, labels, replicas)
            self.optimizer.apply_gradients(zip(gradients, self.model.trainable_variables))
            return loss

        if self.horovod:
            return replica_step(numeric, categorical, labels)
        per_replica = self.strategy.run(replica_step, args=(numeric, categorical, labels))
        return self.strategy.experimental_local_results(per_replica)[0]

    def reseed(self, value: int) -> None:
        self.keras.utils.set_random_seed(value)

    def prepare_epoch(self, rows: np.ndarray) -> None:
        tf = self.tf
        self.epoch_numeric = tf.gather(self.numeric, rows)
        self.epoch_categorical = tf.gather(self.categorical, rows)
        self.epoch_labels = tf.gather(self.labels, rows)

    def train_step(self, step: int, batch_size: int) -> None:
        start, stop = step * batch_size, (step + 1) * batch_size
        loss = self._step(
            self.epoch_numeric[start:stop], self.epoch_categorical[start:stop], self.epoch_labels[start:stop]
        )
        self.loss_sum += float(loss)
        self.loss_steps += 1

    def take_mean_loss(self) -> float:
        mean = self.loss_sum / max(self.loss_steps, 1)
        self.loss_sum, self.loss_steps = 0.0, 0
        return mean

    def state(self) -> bytes:
        arrays = {f"model_{i}": value for i, value in enumerate(self.model.get_weights())}
        arrays.update({f"optimizer_{i}": variable.numpy() for i, variable in enumerate(self.optimizer.variables)})
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    def load_state(self, payload: bytes) -> None:
        arrays = np.load(io.BytesIO(payload))
        self.model.set_weights([arrays[f"model_{i}"] for i in range(len(self.model.weights))])
        for i, variable in enumerate(self.optimizer.variables):
            variable.assign(arrays[f"optimizer_{i}"])

    def _plain_model(self, unstandardize: bool = False):
        """A copy of the model outside any distribution strategy (for prediction and export)."""
        model = build_model(self.preprocessing, self.config, unstandardize)
        model.set_weights(self.model.get_weights())
        return model

    def predict(self, data: EncodedData) -> np.ndarray:
        """The task's predictions, as :meth:`TorchTrainer.predict` gives them."""
        model = self._plain_model()
        chunks = [
            model([data.numeric[start : start + PREDICT_BATCH], data.categorical[start : start + PREDICT_BATCH]],
                  training=False).numpy()
            for start in range(0, len(data), PREDICT_BATCH)
        ]
        return activate(self.task, np.concatenate(chunks))

    def export(self, directory: Path) -> dict[str, str]:
        """Write a SavedModel (signature ``serving_default``: inputs ``numeric``, ``categorical``; a
        regression output in the label's units)."""
        self._plain_model(unstandardize=True).export(str(directory / "saved_model"), format="tf_saved_model", verbose=False)
        return {"saved_model": "saved_model"}

    def close(self) -> None:
        if self.horovod:
            self.hvd.shutdown()
