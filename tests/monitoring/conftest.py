"""Fixtures of the monitoring tests: a real Prometheus Pushgateway process."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import requests

from dmlops.platform.local import free_ports


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory):
    """Debian's prometheus-pushgateway on a free 127.0.0.1 port: its URL."""
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.skip("prometheus-pushgateway is not installed (apt-get install prometheus-pushgateway; "
                    "scripts/services.sh does it)")
    (port,) = free_ports(1)
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with log.open("wb") as output:
        process = subprocess.Popen([binary, f"--web.listen-address=127.0.0.1:{port}"], stdout=output,
                                   stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if requests.get(f"{url}/-/ready", timeout=0.5).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"prometheus-pushgateway did not start on port {port}:\n{log.read_text()}")
        time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)
