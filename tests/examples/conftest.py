"""The examples under examples/ are imported from the repository root; the digits as Parquet."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def digits(tmp_path_factory) -> dict[str, str]:
    """scikit-learn's digits as Parquet training (1,347 rows) and evaluation (450 rows) sets."""
    pytest.importorskip("sklearn")
    from examples.digits_torch import write_digits

    folder = tmp_path_factory.mktemp("digits")
    paths = {"train": str(folder / "train.parquet"), "eval": str(folder / "eval.parquet")}
    write_digits(paths["train"], paths["eval"])
    return paths


@pytest.fixture
def served_accuracy(digits, tmp_path):
    """Serve an export with the dmlops model server and return its accuracy on the evaluation digits,
    asked over V1 (the pixels of every row) and checked against V2 on the first rows; a request with the
    wrong row width gets a 400 that names the input."""
    import numpy as np
    import pyarrow.parquet as pq
    import requests

    from dmlops.serving.local import start_server, stop_server

    def serve_and_ask(export_dir: str) -> float:
        table = pq.read_table(digits["eval"])
        pixels = np.stack([table[f"p{index}"].to_numpy() for index in range(64)], axis=1) / 16
        server = start_server(export_dir, "digits", log_dir=tmp_path / "server-logs")
        try:
            v1 = requests.post(server.predict_url, json={"instances": pixels.tolist()}, timeout=60)
            assert v1.status_code == 200, v1.text
            logits = np.array(v1.json()["predictions"])
            assert logits.shape == (len(pixels), 10)
            v2 = requests.post(f"{server.url}/v2/models/digits/infer", timeout=60, json={
                "inputs": [{"name": "pixels", "shape": [3, 64], "datatype": "FP32", "data": pixels[:3].ravel().tolist()}]})
            assert v2.status_code == 200, v2.text
            (output,) = v2.json()["outputs"]
            assert output["shape"] == [3, 10]
            np.testing.assert_allclose(np.reshape(output["data"], (3, 10)), logits[:3], rtol=1e-5, atol=1e-5)
            wrong = requests.post(server.predict_url, json={"instances": [[0.0] * 63]}, timeout=60)
            assert wrong.status_code == 400 and "'pixels'" in wrong.text and "[-1, 64]" in wrong.text
        finally:
            stop_server(server)
        return float(np.mean(logits.argmax(1) == table["digit"].to_numpy()))

    return serve_and_ask
