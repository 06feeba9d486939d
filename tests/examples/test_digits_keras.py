"""The Keras digits model (examples/digits_keras.py) on 2 tf-multiworker workers: trained, exported as a
SavedModel that answers like the trained model."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from dmlops.training.config import RunConfig
from dmlops.training.launch import read_export_metadata, run_local
from dmlops.training.worker import function_entrypoint

tf = pytest.importorskip("tensorflow")


def test_the_keras_digits_model_trains_on_two_tf_workers_exports_a_saved_model_and_is_served(digits, tmp_path,
                                                                                             served_accuracy):
    from examples.digits_keras import train

    run = RunConfig(export_uri=str(tmp_path / "model"), entrypoint=function_entrypoint(train),
                    entrypoint_args={"epochs": 3}, strategy="tf-multiworker", train_uri=digits["train"],
                    eval_uri=digits["eval"], checkpoint_uri=str(tmp_path / "checkpoints"))
    assert run_local(run, num_workers=2, max_restarts=0).restarts == 0
    metadata = read_export_metadata(run.export_uri)
    assert metadata["framework"] == "tensorflow" and metadata["workers"] == 2
    assert metadata["metrics"]["accuracy"] > 0.85

    served = tf.saved_model.load(str(tmp_path / "model" / "saved_model")).signatures["serving_default"]
    table = pq.read_table(digits["eval"])
    pixels = np.stack([table[f"p{index}"].to_numpy() for index in range(64)], axis=1).astype(np.float32) / 16
    (logits,) = served(pixels=tf.constant(pixels)).values()
    accuracy = float(np.mean(logits.numpy().argmax(1) == table["digit"].to_numpy()))
    assert accuracy == pytest.approx(metadata["metrics"]["accuracy"])
    assert served_accuracy(run.export_uri) == pytest.approx(metadata["metrics"]["accuracy"])
