"""Kill a local training worker mid-run, as a lost pod would be, and collect what the launcher did."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import psutil

from dmlops.platform.local import run_workers
from dmlops.training.checkpoints import CheckpointStore


def worker_with_rank(rank: str) -> psutil.Process | None:
    """The running dmlops training worker of this test process with ``RANK=rank``."""
    for child in psutil.Process().children(recursive=True):
        try:
            if "dmlops.training.worker" in " ".join(child.cmdline()) and child.environ().get("RANK") == rank:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def kill_rank_one_after_first_checkpoint(kind: str, command: list[str], checkpoint_uri: str,
                                         **run_options: Any) -> tuple[Any, str, int]:
    """Run 2 workers with ``run_workers``, kill rank 1 once a checkpoint exists and wait for the run to end:
    (its result, the launcher's log, the newest checkpoint step when rank 1 was killed)."""
    store = CheckpointStore(checkpoint_uri)
    output = io.StringIO()
    outcome = {}
    launcher = threading.Thread(target=lambda: outcome.update(
        result=run_workers(kind, 2, command, max_restarts=1, output=output, **run_options)))
    launcher.start()
    deadline = time.monotonic() + 120
    while not store.steps() and time.monotonic() < deadline:
        time.sleep(0.01)
    newest_at_kill = store.steps()[-1]
    worker_with_rank("1").kill()
    launcher.join(timeout=300)
    return outcome["result"], output.getvalue(), newest_at_kill
