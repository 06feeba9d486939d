"""Periodic training checkpoints under a URI (local path, gs://, s3://, minio://, any fsspec URL).

A checkpoint is one opaque payload named by its global step, ``ckpt-000000001200.bin``. On a local
path a payload is written under a temporary name and renamed into place; an object store's upload is
atomic by itself. A worker killed mid-write never leaves a checkpoint that looks complete. The newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import os
import re

from fsspec.implementations.local import LocalFileSystem

from dmlops.platform import storage

_NAME = re.compile(r"ckpt-(\d{12})\.bin$")


class CheckpointStore:
    """Save and find checkpoints under one URI."""

    def __init__(self, uri: str, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.uri = uri.rstrip("/")
        self.keep = keep
        self.fs, self.path = storage.filesystem(self.uri)

    def _file(self, name: str) -> str:
        return f"{self.path}/{name}"

    def steps(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        self.fs.invalidate_cache(self.path)
        if not self.fs.exists(self.path):
            return []
        names = (entry.rsplit("/", 1)[-1] for entry in self.fs.ls(self.path, detail=False))
        return sorted(int(match.group(1)) for match in map(_NAME.match, names) if match)

    def save(self, step: int, payload: bytes) -> str:
        """Write the checkpoint of ``step`` and drop the ones beyond ``keep``; returns its URI."""
        self.fs.makedirs(self.path, exist_ok=True)
        name = f"ckpt-{step:012d}.bin"
        if isinstance(self.fs, LocalFileSystem):
            temporary = self._file(f".{name}.partial")
            self.fs.pipe_file(temporary, payload)
            os.replace(temporary, self._file(name))
        else:
            self.fs.pipe_file(self._file(name), payload)
        for old in self.steps()[: -self.keep]:
            self.fs.rm_file(self._file(f"ckpt-{old:012d}.bin"))
        return f"{self.uri}/{name}"

    def latest(self) -> tuple[int, bytes] | None:
        """The newest checkpoint as (step, payload), or None when there is none."""
        steps = self.steps()
        if not steps:
            return None
        return steps[-1], self.fs.cat_file(self._file(f"ckpt-{steps[-1]:012d}.bin"))
