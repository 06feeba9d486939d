"""A Keras model on scikit-learn's handwritten digits, trained by your own code under TensorFlow's
``MultiWorkerMirroredStrategy`` (``strategy="tf-multiworker"``: a TFJob, or TF_CONFIG workers locally).

:func:`train` asks :mod:`dmlops.training.runtime` for the strategy (``runtime.distribution()``), this
rank's batches, checkpoints, metrics and the export (a SavedModel). Keras 3 ``model.fit`` fails under
MultiWorkerMirroredStrategy (keras-team/keras#20585), so each step is ``strategy.run`` of a replica step.
:func:`digits_pipeline` is the whole thing as a KFP pipeline.
"""

from kfp import dsl

from examples.digits_torch import digits_data


def train(epochs: int = 3, batch_size: int = 64, learning_rate: float = 0.01) -> dict:
    """Train a small dense network on the run's training data (columns p0..p63 and ``digit``;
    ``batch_size`` is global), evaluate it on the run's evaluation data and export a SavedModel."""
    import io
    import tempfile
    from pathlib import Path

    import keras
    import numpy as np
    import tensorflow as tf

    from dmlops.training import runtime

    ctx = runtime.setup()
    strategy = runtime.distribution()
    keras.utils.set_random_seed(ctx.seed)

    def build():
        return keras.Sequential([keras.Input(shape=(64,), name="pixels"), keras.layers.Dense(64, activation="relu"),
                                 keras.layers.Dense(10)])

    with strategy.scope():
        model = build()
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        optimizer.build(model.trainable_variables)

    def replica_step(pixels, digits):
        with tf.GradientTape() as tape:
            logits = model(pixels, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=digits, logits=logits))
            # the optimizer sums the replicas' gradients: each replica contributes its share of the mean
            share = loss / strategy.num_replicas_in_sync
        gradients = tape.gradient(share, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    @tf.function(reduce_retracing=True)
    def step(pixels, digits):
        return strategy.experimental_local_results(strategy.run(replica_step, args=(pixels, digits)))[0]

    start_epoch = 0
    checkpoint = runtime.latest_checkpoint()
    if checkpoint:
        start_epoch, payload = checkpoint
        arrays = np.load(io.BytesIO(payload))
        model.set_weights([arrays[f"w{index}"] for index in range(len(model.weights))])
        runtime.report({"resumed_epoch": start_epoch})

    pixel_columns = [f"p{index}" for index in range(64)]
    columns = [*pixel_columns, "digit"]
    for epoch in range(start_epoch, epochs):
        losses = []
        for batch in runtime.shard_batches(ctx.train_uri, batch_size // ctx.world_size, columns, epoch=epoch):
            pixels = np.stack([batch[name] for name in pixel_columns], axis=1).astype(np.float32) / 16
            losses.append(float(step(tf.constant(pixels), tf.constant(batch["digit"]))))
        buffer = io.BytesIO()
        np.savez(buffer, **{f"w{index}": value for index, value in enumerate(model.get_weights())})
        runtime.save_checkpoint(epoch + 1, buffer.getvalue())
        runtime.report({"epoch": epoch + 1, "train_loss": float(np.mean(losses))})

    if not ctx.is_primary:
        return {}
    plain = build()  # outside the strategy, for evaluation and export
    plain.set_weights(model.get_weights())
    correct = total = 0
    for batch in runtime.batches(ctx.eval_uri or ctx.train_uri, 512, columns):
        pixels = np.stack([batch[name] for name in pixel_columns], axis=1).astype(np.float32) / 16
        correct += int((plain(pixels).numpy().argmax(1) == batch["digit"]).sum())
        total += len(batch["digit"])
    metrics = {"accuracy": correct / total}
    runtime.report(metrics, final=True)
    with tempfile.TemporaryDirectory() as directory:
        plain.export(str(Path(directory) / "saved_model"), format="tf_saved_model", verbose=False)
        runtime.export(directory, framework="tensorflow", model_files={"saved_model": "saved_model"},
                       inputs={"pixels": {"dtype": "float32", "shape": [-1, 64],
                                          "note": "8x8 grey levels 0..16 divided by 16"},
                               "output": "10 logits, one per digit"},
                       task="multiclass", label="digit")
    return metrics


@dsl.pipeline(name="digits-keras")
def digits_pipeline(num_workers: int = 2, epochs: int = 3):
    """The digits as Parquet, then ``train`` running :func:`train`'s source on tf-multiworker workers."""
    from dmlops.components import train as train_component
    from dmlops.training.worker import function_entrypoint

    data = digits_data()
    train_component(train_data=data.outputs["train_data"], eval_data=data.outputs["eval_data"],
                    entrypoint=function_entrypoint(train), entrypoint_args={"epochs": epochs},
                    strategy="tf-multiworker", num_workers=num_workers, max_restarts=0)
