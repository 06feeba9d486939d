"""Detached processes of the local backend: they outlive their parent's session and are stopped by group."""

import sys
import time

from dmlops.platform.local import process_running, start_detached, stop_detached


def test_a_detached_process_is_recognised_and_stopped_with_its_children(tmp_path):
    script = tmp_path / "tree.py"
    script.write_text(
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', 'child-marker'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    log = tmp_path / "tree.log"
    process = start_detached([sys.executable, str(script), "parent-marker"], log)
    for _ in range(200):
        if log.read_text().strip() or process.poll() is not None:
            break
        time.sleep(0.05)
    child_pid = int(log.read_text().split()[0])
    assert process_running(process.pid, str(script), "parent-marker")
    assert not process_running(process.pid, "another-program")  # a reused pid is not taken for it
    assert process_running(child_pid, "child-marker")

    stop_detached(process.pid, lambda: process_running(process.pid, "parent-marker"), grace_s=5)
    assert not process_running(process.pid, "parent-marker")
    for _ in range(100):
        if not process_running(child_pid, "child-marker"):
            break
        time.sleep(0.05)
    assert not process_running(child_pid, "child-marker"), "the group's child outlived the stop"


def test_a_process_is_recognised_without_ps(tmp_path, monkeypatch):
    """The images have no procps: the serve image's deploy step asks whether its model server runs."""
    process = start_detached([sys.executable, "-c", "import time; time.sleep(30)", "server-marker"], tmp_path / "log")
    try:
        monkeypatch.setenv("PATH", str(tmp_path))  # no ps to be found
        assert process_running(process.pid, "server-marker")
        assert not process_running(process.pid, "another-program")
    finally:
        process.kill()
        process.wait()
    assert not process_running(process.pid, "server-marker")
