"""Fixtures of the platform tests: the shared fake Kubernetes API and a launcher pointed at it."""

import sys
import time
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parents[1])
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)  # the shared helpers tests/fake_kube.py and tests/crds.py

from fake_kube import FakeKube, fake_kube  # noqa: E402,F401  (fake_kube is the shared fixture)

from dmlops.platform.kubernetes import KubernetesLauncher  # noqa: E402


class Echo(list):
    """Collects the launcher's output lines; ``wait_for_line`` waits for one containing a text."""

    def wait_for_line(self, text: str, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self):
                if text in line:
                    return line
            time.sleep(0.02)
        raise AssertionError(f"no output line containing {text!r}; got:\n" + "\n".join(self))


@pytest.fixture
def echo() -> Echo:
    return Echo()


@pytest.fixture
def launcher(fake_kube: FakeKube, echo: Echo) -> KubernetesLauncher:  # noqa: F811
    return KubernetesLauncher(
        fake_kube.api_client(), echo=echo.append, poll_interval_s=0.05, watch_window_s=2, log_drain_s=5
    )
