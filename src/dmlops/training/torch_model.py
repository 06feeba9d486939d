"""The tabular model in PyTorch: categorical embeddings concatenated with numeric features, then an MLP."""

from __future__ import annotations

import torch
from torch import nn


class TabularMLP(nn.Module):
    """Binary classifier returning one logit per row from (numeric [n, d] float, categorical [n, c] int64)."""

    def __init__(
        self,
        num_numeric: int,
        cardinalities: list[int],
        embedding_widths: list[int],
        hidden_units: list[int],
        dropout: float = 0.0,
    ):
        super().__init__()
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
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        parts = [numeric]
        for index, embedding in enumerate(self.embeddings):
            parts.append(embedding(categorical[:, index]))
        return self.mlp(torch.cat(parts, dim=1)).squeeze(1)
