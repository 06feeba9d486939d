"""A real MLflow tracking server (``mlflow server`` on 127.0.0.1, SQLite backend) for the registry tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from dmlops.platform.local import free_ports

START_TIMEOUT_S = 120


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> str:
    """The URL of an ``mlflow server`` process with its own SQLite store and artifact folder."""
    pytest.importorskip("mlflow", reason="the registry extra (mlflow-skinny) is not installed")
    root = tmp_path_factory.mktemp("mlflow")
    port = free_ports(1)[0]
    log = open(root / "server.log", "w")
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--default-artifact-root", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"mlflow server exited with {process.returncode}:\n{(root / 'server.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up in {START_TIMEOUT_S} s:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
