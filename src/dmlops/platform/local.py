"""The local backend: a group of worker processes on this machine, started the way the Kubeflow
operators start pods, so the worker cannot tell the difference; and detached processes (local model
servers) that outlive the step that starts them.

- ``pytorch`` (PyTorchJob / TrainJob torch-distributed / torchrun): MASTER_ADDR, MASTER_PORT,
  WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE per process;
- ``tensorflow`` (TFJob): TF_CONFIG naming every worker at a localhost port and the process's index;
- ``mpi`` (MPIJob running Horovod): one ``horovodrun --gloo -np N -H localhost:N`` that starts the N
  workers itself.

When a worker fails, the others are stopped and the whole group starts again, up to ``max_restarts``
times (as ``restartPolicy: OnFailure`` and torchrun ``--max-restarts`` do); a worker that checkpoints
resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO

LAUNCH_KINDS = ("pytorch", "tensorflow", "mpi")
STOP_GRACE_SECONDS = 5.0
TAIL_LINES = 30


class WorkerGroupFailed(RuntimeError):
    """A worker group failed and no restarts were left; the message carries the failing worker's output."""


class WorkerGroupTimeout(WorkerGroupFailed):
    """A worker group ran past its timeout and was stopped."""


class WorkerGroupStopped(WorkerGroupFailed):
    """The caller set ``stop``; the workers were stopped."""


@dataclass
class LocalRunResult:
    """How a local run ended: the number of group restarts it took and the wall time."""

    restarts: int
    seconds: float


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on localhost right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_environments(kind: str, num_workers: int) -> list[dict[str, str]]:
    """The per-process environment the operator of ``kind`` gives N workers (one entry for ``mpi``,
    whose ``horovodrun`` gives each worker its own)."""
    threads = str(max(1, (os.cpu_count() or 1) // num_workers))
    if kind == "pytorch":
        (port,) = free_ports(1)
        return [
            {
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(num_workers),
                "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(num_workers),
                "OMP_NUM_THREADS": threads,
            }
            for rank in range(num_workers)
        ]
    if kind == "tensorflow":
        workers = [f"localhost:{port}" for port in free_ports(num_workers)]
        return [
            {
                "TF_CONFIG": json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": rank}}),
                "OMP_NUM_THREADS": threads,
            }
            for rank in range(num_workers)
        ]
    if kind == "mpi":
        return [{"OMP_NUM_THREADS": threads}]
    raise ValueError(f"unknown launch kind {kind!r}; choose one of {', '.join(LAUNCH_KINDS)}")


def horovodrun_command(num_workers: int, command: list[str]) -> list[str]:
    """``horovodrun --gloo`` over ``num_workers`` local slots, as the MPI runtime launches Horovod."""
    horovodrun = shutil.which("horovodrun", path=os.path.dirname(sys.executable)) or shutil.which("horovodrun")
    if horovodrun is None:
        raise WorkerGroupFailed(
            "horovodrun not found: install horovod (scripts/build_horovod.sh builds and installs it)"
        )
    return [horovodrun, "--gloo", "-np", str(num_workers), "-H", f"localhost:{num_workers}", *command]


class _Worker:
    """One started process and a thread copying its output, prefixed, to the run's output."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], output: TextIO):
        self.name = name
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            start_new_session=True,
        )
        self.reader = threading.Thread(target=self._copy, args=(output,), daemon=True)
        self.reader.start()

    def _copy(self, output: TextIO) -> None:
        for line in self.process.stdout:
            self.tail.append(line.rstrip("\n"))
            output.write(f"[{self.name}] {line}")
            output.flush()

    def stop(self) -> None:
        """SIGTERM the worker's process group, SIGKILL it after a grace period."""
        if self.process.poll() is None:
            for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, None)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.process.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self.reader.join(timeout=STOP_GRACE_SECONDS)


def _start_group(kind: str, num_workers: int, command: list[str], env: dict[str, str], output: TextIO) -> list[_Worker]:
    environments = worker_environments(kind, num_workers)
    if kind == "mpi":
        return [_Worker("horovodrun", horovodrun_command(num_workers, command), {**env, **environments[0]}, output)]
    return [
        _Worker(f"worker-{rank}", command, {**env, **environment}, output)
        for rank, environment in enumerate(environments)
    ]


def run_workers(
    kind: str,
    num_workers: int,
    command: list[str],
    env: dict[str, str] | None = None,
    max_restarts: int = 0,
    timeout: float | None = None,
    output: TextIO | None = None,
    stop: threading.Event | None = None,
    restart_policy: str = "OnFailure",
) -> LocalRunResult:
    """Run ``command`` as a group of ``num_workers`` workers started the way ``kind``'s operator starts
    them; return when all exit 0, restart the group when one fails, raise WorkerGroupFailed when no
    restarts are left and WorkerGroupTimeout past ``timeout`` seconds. ``restart_policy`` "ExitCode"
    restarts only a worker killed by a signal or exiting with 128-255; an exit code of 1-127 is a
    permanent error that fails at once (training-operator pkg/util/train/train_util.go IsRetryableExitCode)."""
    if kind not in LAUNCH_KINDS:
        raise ValueError(f"unknown launch kind {kind!r}; choose one of {', '.join(LAUNCH_KINDS)}")
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    output = output or sys.stdout
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    started = time.monotonic()
    restarts = 0
    while True:
        workers = _start_group(kind, num_workers, command, base_env, output)
        failed = None
        try:
            while failed is None:
                codes = [worker.process.poll() for worker in workers]
                failed = next((w for w, code in zip(workers, codes) if code not in (None, 0)), None)
                if failed is None and all(code == 0 for code in codes):
                    for worker in workers:
                        worker.reader.join(timeout=STOP_GRACE_SECONDS)
                    return LocalRunResult(restarts=restarts, seconds=time.monotonic() - started)
                if stop is not None and stop.is_set():
                    raise WorkerGroupStopped(f"{num_workers} {kind} workers stopped on request")
                if timeout is not None and time.monotonic() - started > timeout:
                    raise WorkerGroupTimeout(f"{num_workers} {kind} workers ran past the {timeout:.0f} s timeout")
                time.sleep(0.05)
        finally:
            for worker in workers:
                worker.stop()
        code = failed.process.returncode
        reason = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
        permanent = restart_policy == "ExitCode" and 1 <= code <= 127
        if restarts >= max_restarts or permanent:
            tail = "\n".join(failed.tail)
            raise WorkerGroupFailed(
                f"{failed.name} {reason}{' (a permanent error: not restarted)' if permanent else ''} after "
                f"{restarts} restart(s) of {num_workers} {kind} workers; "
                f"its last output:\n{tail}"
            )
        restarts += 1
        output.write(f"[local] {failed.name} {reason}; restarting all {num_workers} workers "
                     f"(restart {restarts} of {max_restarts})\n")
        output.flush()


def start_detached(command: list[str], log_path: Path) -> subprocess.Popen:
    """Start ``command`` in a session of its own (it outlives its parent), output appended to ``log_path``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)


def process_running(pid: int, *arguments: str) -> bool:
    """Whether process ``pid`` runs (not a zombie) with every one of ``arguments`` on its command line, so a
    reused pid is not mistaken for it. Linux reads /proc (images have no ``ps``); elsewhere ``ps``."""
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            words = [word.decode(errors="replace") for word in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
        except OSError:
            return False
        state = stat.rpartition(")")[2].split()[0]  # the field after "(comm)", which may hold spaces
    else:
        listing = subprocess.run(["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True)
        if listing.returncode != 0 or not listing.stdout.strip():
            return False
        state, _, command = listing.stdout.strip().partition(" ")
        words = command.split()
    return not state.startswith("Z") and all(argument in words for argument in arguments)


def stop_detached(pid: int, running: Callable[[], bool], grace_s: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM the process group of a detached process, SIGKILL it after ``grace_s``; nothing once
    ``running()`` says it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not running():
            return
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:  # reap it when this process started it
                if os.waitpid(pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                pass
            if not running():
                return
            time.sleep(0.05)
