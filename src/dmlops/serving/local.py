"""Local serving: model servers (``python -m dmlops.serving``) as detached processes on 127.0.0.1.

A server outlives the pipeline step that starts it (kfp.local runs each step as a subprocess), so each
endpoint's servers are recorded in a state file ``<state dir>/<endpoint>.json`` (pid, port, model) and
stopped from there by :func:`stop_endpoints` (``dmlops serve --stop``). The state dir is
``$DMLOPS_SERVING_DIR`` or ``~/.dmlops/serving``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from dmlops.platform.local import free_ports, process_running, start_detached, stop_detached

STATE_DIR_ENV = "DMLOPS_SERVING_DIR"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


def state_dir() -> Path:
    """Where endpoint state files live: ``$DMLOPS_SERVING_DIR`` or ``~/.dmlops/serving``."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.home() / ".dmlops" / "serving")


@dataclass
class ServerProcess:
    """One running model server: its process, port, model and log file."""

    model_name: str
    model_uri: str
    pid: int
    port: int
    log_path: str
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def predict_url(self) -> str:
        return f"{self.url}/v1/models/{self.model_name}:predict"

    def alive(self) -> bool:
        """Whether the process still runs and is a dmlops model server on this port (not a reused pid)."""
        return process_running(self.pid, "dmlops.serving", str(self.port))


def _log_tail(path: str, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def start_server(
    model_uri: str,
    model_name: str,
    *,
    log_dir: Path,
    port: int | None = None,
    model_format: str = "",
    feast_config: str = "",
    extra_args: tuple[str, ...] = (),
    timeout_s: float = READY_TIMEOUT_S,
) -> ServerProcess:
    """Start a detached model server for ``model_uri`` on 127.0.0.1 and wait until the model is ready.

    Raises RuntimeError with the server's log tail if it exits or is not ready within ``timeout_s``.
    """
    port = port or free_ports(1)[0]
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{model_name}-{port}.log"
    command = [
        sys.executable, "-m", "dmlops.serving", "--model_dir", str(model_uri), "--model_name", model_name,
        "--http_port", str(port), "--host", "127.0.0.1", "--enable_grpc", "false",
        "--enable_latency_logging", "false", *extra_args,
    ]
    if model_format:
        command += ["--model_format", model_format]
    if feast_config:
        command += ["--feast_config", feast_config]
    process = start_detached(command, log_path)
    server = ServerProcess(model_name, str(model_uri), process.pid, port, str(log_path), time.time())
    deadline = time.monotonic() + timeout_s
    ready_url = f"{server.url}/v1/models/{model_name}"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"model server for {model_uri} exited with code {process.returncode}; log {log_path}:\n"
                f"{_log_tail(str(log_path))}"
            )
        try:
            if requests.get(ready_url, timeout=1).status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"model server for {model_uri} not ready within {timeout_s:g} s; log {log_path}:\n"
                       f"{_log_tail(str(log_path))}")


def stop_server(server: ServerProcess, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the server's process group, SIGKILL it after ``grace_s``; nothing if it is gone."""
    stop_detached(server.pid, server.alive, grace_s)


@dataclass
class EndpointState:
    """A local endpoint: the stable server that takes traffic, and a canary while a rollout runs."""

    endpoint: str
    stable: ServerProcess | None = None
    canary: ServerProcess | None = None
    example: dict | None = None

    def query_command(self) -> str:
        """A curl command that sends the recorded example request to the stable server."""
        if self.stable is None:
            return ""
        body = json.dumps(self.example or {"instances": [{}]}).replace("'", "'\\''")
        return f"curl -s -H 'Content-Type: application/json' -d '{body}' {self.stable.predict_url}"

    @property
    def path(self) -> Path:
        return state_dir() / f"{self.endpoint}.json"

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {"endpoint": self.endpoint,
                    "stable": asdict(self.stable) if self.stable else None,
                    "canary": asdict(self.canary) if self.canary else None,
                    "example": self.example}
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=2))
        temporary.replace(self.path)

    @classmethod
    def load(cls, endpoint: str) -> EndpointState:
        """The recorded state of ``endpoint``; servers that are no longer running are left out."""
        path = state_dir() / f"{endpoint}.json"
        if not path.exists():
            return cls(endpoint)
        document = json.loads(path.read_text())
        servers = {
            role: ServerProcess(**document[role]) if document.get(role) else None for role in ("stable", "canary")
        }
        stable, canary = (server if server and server.alive() else None for server in servers.values())
        return cls(endpoint, stable, canary, document.get("example"))


def list_endpoints() -> list[EndpointState]:
    """Every recorded local endpoint with its running servers."""
    return [EndpointState.load(path.stem) for path in sorted(state_dir().glob("*.json"))]


def stop_endpoints(endpoint: str = "") -> list[str]:
    """Stop the servers of one endpoint (all when ``endpoint`` is empty) and forget them; returns the
    endpoints stopped. This is what ``dmlops serve --stop`` calls."""
    states = [EndpointState.load(endpoint)] if endpoint else list_endpoints()
    stopped = []
    for state in states:
        for server in (state.canary, state.stable):
            if server is not None:
                stop_server(server)
        if state.path.exists():
            state.path.unlink()
            stopped.append(state.endpoint)
    return stopped
