"""The built dmlops images (``make images``) on a Docker engine: fixtures to reach the engine and run
commands in an image. Every test here is marked ``images`` and skips when no engine answers."""

import os
import sys
from pathlib import Path

import pytest

from dmlops.images import image

for folder in (Path(__file__).resolve().parents[1] / "cluster", Path(__file__).resolve().parents[1]):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

BUILD_HINT = "build them with `make images` (scripts/images.sh)"


@pytest.fixture(scope="session")
def docker_client():
    """A client of the local Docker engine; the tests skip when none answers."""
    try:
        import docker
    except ImportError:
        pytest.skip("the docker Python SDK is not installed (pip install docker)")
    try:
        client = docker.from_env(timeout=600)
        client.ping()
    except docker.errors.DockerException as error:
        pytest.skip(f"no Docker engine is reachable ({error}); start one, or run scripts/images.sh as root, "
                    "which installs and starts Debian's docker.io")
    yield client
    client.close()


@pytest.fixture(scope="session")
def built(docker_client):
    """``built(family)``: the image reference the compiled components name, failing when it is not built."""

    def reference(family: str) -> str:
        name = image(family)
        if not docker_client.images.list(name=name):
            unavailable = os.environ.get("DMLOPS_IMAGES_UNAVAILABLE")
            if unavailable:  # the run said why it built no images (.ci/run: out of its time budget)
                pytest.skip(f"{name} is not built: {unavailable}")
            pytest.fail(f"{name} is not built; {BUILD_HINT}")
        return name

    return reference


@pytest.fixture(scope="session")
def run_in(docker_client):
    """``run_in(image, [argv...])``: run a command in a fresh container of the image as its own user;
    returns (exit code, stdout and stderr together)."""

    def run(reference: str, argv: list[str], **options) -> tuple[int, str]:
        container = docker_client.containers.run(reference, entrypoint=argv[:1], command=argv[1:], detach=True,
                                                 **options)
        try:
            code = container.wait(timeout=600)["StatusCode"]
            return code, container.logs().decode(errors="replace")
        finally:
            container.remove(force=True)

    return run
