"""Fixtures shared by several test folders: real servers the tests start themselves."""

import shutil
import subprocess

import log_copy
import pytest

from dmlops.platform.local import free_ports
from kubeharness.listening import wait_listening

pytest_plugins = ["kubeharness.fixtures"]  # kube_api (a real API server) and kube_namespace


def pytest_configure(config):
    log_copy.start(config)  # every process of the session copies its JSON log lines to one file


def pytest_sessionfinish(session):
    log_copy.check(session)  # ... and no field of them may change type


@pytest.fixture(scope="session")
def redis_server():
    """A real Redis server on a free 127.0.0.1 port without persistence: its ``host:port``."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; scripts/services.sh does it)")
    (port,) = free_ports(1)
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_listening(process, "127.0.0.1", port, timeout_s=10):
        pytest.fail(f"redis-server did not start on port {port}")
    yield f"127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on a free 127.0.0.1 port, one per test module: its endpoint URL."""
    from moto.server import ThreadedMotoServer

    (port,) = free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module")
def gcs_server():
    """The GCS emulator (gcp-storage-emulator, in memory) on a free 127.0.0.1 port: its endpoint URL."""
    from gcp_storage_emulator.server import create_server

    (port,) = free_ports(1)
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
