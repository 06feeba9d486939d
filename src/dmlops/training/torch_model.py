"""The tabular model in PyTorch: categorical embeddings concatenated with numeric features, then an MLP."""

from __future__ import annotations

import torch
from torch import nn


class TabularMLP(nn.Module):
    """From (numeric [n, d] float, categorical [n, c] int64) to one output per row ([n]: a binary logit
    or a regression value) or ``outputs`` per row ([n, outputs]: class logits)."""

    def __init__(
        self,
        num_numeric: int,
        cardinalities: list[int],
        embedding_widths: list[int],
        hidden_units: list[int],
        dropout: float = 0.0,
        outputs: int = 1,
    ):
        super().__init__()
        self.outputs = outputs
        self.embeddings = nn.ModuleList(
            nn.Embedding(size, width) for size, width in zip(cardinalities, embedding_widths)
        )
        layers: list[nn.Module] = []
        width = num_numeric + sum(embedding_widths)
        for units in hidden_units:
            layers += [nn.Linear(width, units), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        layers.append(nn.Linear(width, outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric]
        for index, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, index]))
        result = self.mlp(torch.cat(parts, dim=1))
        return result.squeeze(1) if self.outputs == 1 else result


class Unstandardized(nn.Module):
    """A regression model whose output is back in the label's units: ``model(...) * std + mean``."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        return self.model(numeric, categorical) * self.std + self.mean
