"""Deliberately broken versions of an exported model, for canary tests: same files and metadata layout,
a ``torch.export`` program that answers wrongly or fails."""

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
        # an assertion the exported program keeps and checks on every call (a Python raise would not be exported)
        torch._assert_async(~(categorical[:, 0] == 1).any(), "broken model: cannot score this category")
        return self.inner(numeric, categorical)


def broken_copy(model_dir: Path, target: Path, wrapper: type[torch.nn.Module]) -> Path:
    """A copy of the export whose ``torch.export`` program is wrapped by ``wrapper`` and exported again;
    metadata digests rewritten."""
    shutil.copytree(model_dir, target)
    metadata = json.loads((target / METADATA_FILE).read_text())
    path = str(target / metadata["model_files"]["torch_export"])
    program = torch.export.load(path)
    rows = torch.export.Dim("rows")
    wrapped = torch.export.export(wrapper(program.module()), program.example_inputs[0],
                                  dynamic_shapes=({0: rows}, {0: rows}))
    torch.export.save(wrapped, path)
    for key in ("files", "format_version", "dmlops_version"):
        metadata.pop(key)
    write_metadata(target, metadata)
    return target
