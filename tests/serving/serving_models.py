"""Deliberately broken versions of an exported model, for canary tests: same files and metadata layout,
a TorchScript model that answers wrongly or fails."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from dmlops.training.export import METADATA_FILE, write_metadata


class ConstantOutput(torch.nn.Module):
    """Wrong outputs: the same very high logit for every row."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.inner(numeric, categorical) * 0.0 + 4.0


class FailsOnFirstCategory(torch.nn.Module):
    """Errors: raises for every batch holding the most frequent value of the first categorical feature."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        if bool((categorical[:, 0] == 1).any()):
            raise RuntimeError("broken model: cannot score this category")
        return self.inner(numeric, categorical)


def broken_copy(model_dir: Path, target: Path, wrapper: type[torch.nn.Module]) -> Path:
    """A copy of the export whose TorchScript model is wrapped by ``wrapper``; metadata digests rewritten."""
    shutil.copytree(model_dir, target)
    metadata = json.loads((target / METADATA_FILE).read_text())
    inner = torch.jit.load(str(target / metadata["model_files"]["torchscript"]))
    torch.jit.script(wrapper(inner)).save(str(target / metadata["model_files"]["torchscript"]))
    for key in ("files", "format_version", "dmlops_version"):
        metadata.pop(key)
    write_metadata(target, metadata)
    return target
