"""Ingestion outputs written under temporary names and renamed into place only on success."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile


class _Publisher:
    """Temporary names beside the outputs, renamed into place by ``publish`` and removed otherwise; what a
    killed earlier attempt left under those names is removed first."""

    def __init__(self, output_path: str, quarantine_path: str):
        self.final = {"output": output_path, "quarantine": quarantine_path}
        self.partial = {}
        for role, path in self.final.items():
            folder, name = os.path.split(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.*.partial")):
                os.remove(stale)
            for stale in glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.staging-*")):
                shutil.rmtree(stale, ignore_errors=True)
            self.partial[role] = os.path.join(folder, f".{name}.{os.getpid()}.partial")
        folder, name = os.path.split(os.path.abspath(output_path))
        self.staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=folder)

    def publish(self, output: bool) -> None:
        os.replace(self.partial["quarantine"], self.final["quarantine"])
        if output:
            os.replace(self.partial["output"], self.final["output"])

    def __enter__(self) -> _Publisher:
        return self

    def __exit__(self, *exc_info) -> None:
        for path in self.partial.values():
            if os.path.exists(path):
                os.remove(path)
        shutil.rmtree(self.staging, ignore_errors=True)
