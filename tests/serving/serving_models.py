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


class LateDepartureRule(torch.nn.Module):
    """A better model for the serving tests' data (label = departure after 16:00, flipped for 20% of rows):
    the Bayes-optimal answer, 0.8 or 0.2, from the standardised ``dep_hour`` column."""

    def __init__(self, inner: torch.nn.Module, column: int, threshold: float):
        super().__init__()
        self.inner, self.column, self.threshold = inner, column, threshold

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        late = numeric[:, self.column] > self.threshold
        logit = torch.where(late, torch.full_like(late, 1.3863, dtype=torch.float32),
                            torch.full_like(late, -1.3863, dtype=torch.float32))
        return self.inner(numeric, categorical).reshape(-1) * 0.0 + logit


def late_departure_copy(model_dir: Path, target: Path) -> Path:
    """A copy of the export that answers with :class:`LateDepartureRule`."""
    numeric = json.loads((model_dir / METADATA_FILE).read_text())["preprocessing"]["numeric"]
    column = [item["column"] for item in numeric].index("dep_hour")
    stats = numeric[column]
    threshold = (16.5 - stats["mean"]) / stats["std"]
    return broken_copy(model_dir, target, lambda inner: LateDepartureRule(inner, column, threshold))


def broken_copy(model_dir: Path, target: Path, wrapper) -> Path:
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
