"""Normal-feature memory: the distance of each token to its nearest normal training token (as PatchCore).

Our addition to MALA for the hybrid encoder (README, "Deviations"): the stage-2 map learns what synthetic
anomalies look like; the memory knows what the real normal parts look like. One memory holds the tokens of all
categories, so the model stays one model; a token's nearest neighbour is found among its own category's tokens
without being told the category.
"""

from __future__ import annotations

import torch
from torch import nn

from mala.model.maps import distance_map

CHUNK = 2048  # memory rows per product: a batch-1 (queries x rows) block stays in cache (2x faster than 16k)


class FeatureMemory(nn.Module):
    def __init__(self, channels: int, rows: int = 0):
        super().__init__()
        self.register_buffer("tokens", torch.zeros(rows, channels))
        self.register_buffer("scale", torch.ones(()))  # a high quantile of normal distances: 1.0 means "unusual"

    @property
    def empty(self) -> bool:
        return self.tokens.shape[0] == 0

    def resize(self, rows: int) -> None:
        """Room for `rows` tokens, before a state dict of that size is loaded."""
        self.tokens = self.tokens.new_zeros(rows, self.tokens.shape[1])

    def fill(self, tokens: torch.Tensor, scale: float) -> None:
        self.tokens = tokens.detach().float().contiguous()
        self.scale.fill_(scale)

    def nearest_distance(self, queries: torch.Tensor) -> torch.Tensor:
        """Euclidean distance (..., C) -> (...) of each query to its nearest memory token."""
        flat = queries.reshape(-1, queries.shape[-1]).float()
        best = None
        for start in range(0, self.tokens.shape[0], CHUNK):
            rows = self.tokens[start:start + CHUNK]
            # |q - r|^2 less |q|^2, which does not change the minimum over r and is added once after it
            partial = torch.addmm((rows * rows).sum(1), flat, rows.T, alpha=-2).amin(dim=1)
            best = partial if best is None else torch.minimum(best, partial)
        best = best + (flat * flat).sum(1)
        return best.clamp_min(0).sqrt().reshape(queries.shape[:-1])

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
        """Tokens (B, N, C) to a map (B, H, W) in [0, 1): distance / scale, as `maps.distance_map`."""
        distance = self.nearest_distance(tokens).reshape(tokens.shape[0], 1, *grid) / self.scale
        return distance_map(distance, size)
