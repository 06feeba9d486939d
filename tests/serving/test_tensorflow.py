"""A TensorFlow export (SavedModel) served by the same predictor over HTTP."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from dmlops.serving.local import start_server, stop_server
from dmlops.training.config import TrainConfig
from dmlops.training.data import load_encoded
from dmlops.training.evaluate import ExportedModel
from dmlops.training.worker import train

pytestmark = pytest.mark.slow  # TensorFlow import and training


def test_savedmodel_predictions_over_http_equal_offline(data_dir, eval_rows, tmp_path):
    pytest.importorskip("tensorflow")
    export = tmp_path / "tf-model"
    train(TrainConfig(train_uri=str(data_dir / "train.parquet"), label="label", export_uri=str(export),
                      strategy="tf-multiworker", epochs=1, batch_size=64, hidden_units=[8]))
    server = start_server(str(export), "flights-delay", log_dir=tmp_path / "logs", timeout_s=180)
    try:
        rows = eval_rows[:20]
        response = requests.post(server.predict_url, json={"instances": rows}, timeout=30)
        assert response.status_code == 200, response.text
        offline = ExportedModel(str(export))  # the training worker's own loader and preprocessing
        encoded = load_encoded(str(data_dir / "eval.parquet"), offline.preprocessing)
        expected = offline.predict_proba(encoded.numeric[:20], encoded.categorical[:20])
        np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-5, atol=1e-6)
    finally:
        stop_server(server)
