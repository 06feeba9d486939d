"""Waiting for a server process the tests started to accept connections."""

from __future__ import annotations

import socket
import subprocess
import time


def wait_listening(process: subprocess.Popen, host: str, port: int, timeout_s: float) -> bool:
    """Whether ``process`` accepts TCP connections on ``host:port`` within ``timeout_s``; False as soon as
    it exits, or at the deadline (the process is then killed)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return True
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                return False
            time.sleep(0.05)
