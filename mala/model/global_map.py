"""The global map: an autoencoder in the style of EfficientAD's that rebuilds the memory's backbone tokens of a whole
image from one latent vector, so that a token which is normal only elsewhere or in another arrangement (a missing,
extra or misplaced part) does not come back.

Our addition to MALA for the hybrid encoder (README, "Deviations"; BENCHMARKS.md, "A global map"). The memory asks
"has this token been seen?", the stage-2 map "does this look like a synthetic defect?"; neither sees the image as a
whole. One autoencoder serves all categories; its error (1 - cosine similarity per token) is read in units of the
category's own 99 % quantile on its training images, as the memory's distances are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mala.model.maps import Sections

WIDTH = 128  # channels of the convolutions (BENCHMARKS.md measured 128 with a latent of 64)
LATENT = 64
DROPOUT = 0.2


class GlobalAutoencoder(nn.Module):
    """Tokens (B, N, C) on `grid` -> their reconstruction: standardised per channel, strided convolutions down to a
    1 x 1 latent, then upsampling and convolutions (with dropout in training) back to the grid."""

    def __init__(self, channels: int, grid: tuple[int, int], width: int = WIDTH, latent: int = LATENT,
                 dropout: float = DROPOUT):
        super().__init__()
        self.grid = grid
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, latent, 1))
        # the decoder's sizes: the grid halved three times, twice, once, then the grid itself
        self.sizes = [tuple(max(1, -(-side // 2 ** k)) for side in grid) for k in (3, 2, 1, 0)]
        self.decoder = nn.ModuleList(
            nn.Sequential(nn.Conv2d(latent if k == 0 else width, width, 3, padding=1), nn.ReLU(), nn.Dropout(dropout))
            for k in range(len(self.sizes)))
        self.head = nn.Conv2d(width, channels, 1)
        # set by training (`mala.train.fit_global_map`): the training tokens' per-channel statistics, and per memory
        # section the 99 % quantile of its training tokens' errors; no scales: untrained, the model makes no map
        self.register_buffer("token_mean", torch.zeros(channels))
        self.register_buffer("token_std", torch.ones(channels))
        self.register_buffer("scales", torch.ones(0))

    @property
    def trained(self) -> bool:
        return self.scales.shape[0] > 0

    def make_room(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Per-section scales of the size a state dict holds (known only after training), before it is loaded."""
        if prefix + "scales" in state:
            self.scales = self.scales.new_ones(state[prefix + "scales"].shape)

    def standardise(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.token_mean) / self.token_std

    def forward(self, standardised: torch.Tensor) -> torch.Tensor:
        """Standardised tokens (B, N, C) -> their reconstruction (B, N, C)."""
        x = self.encoder(standardised.transpose(1, 2).unflatten(2, self.grid))
        for size, layer in zip(self.sizes, self.decoder):
            x = layer(F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return self.head(x).flatten(2).transpose(1, 2)

    def errors(self, standardised: torch.Tensor) -> torch.Tensor:
        """1 - cosine similarity (B, N) of each standardised token and its reconstruction: the training loss."""
        return 1 - F.cosine_similarity(self(standardised), standardised, dim=-1)

    def grid_distance(self, tokens: torch.Tensor, sections: Sections) -> torch.Tensor:
        """The errors of raw tokens (B, N, C) in units of their sections' scales (resolved: one index or one per
        image), as (B, 1, rows, columns): what `maps.distance_map` turns into a map, as the memory's distances."""
        scale = self.scales[sections]
        scale = scale.view(-1, 1) if isinstance(sections, torch.Tensor) else scale
        return (self.errors(self.standardise(tokens)) / scale).reshape(tokens.shape[0], 1, *self.grid)
