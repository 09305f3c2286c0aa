"""Fill the hybrid's normal-feature memory (mala.model.memory) from the training images, after stage 2."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from mala.data.dataset import ImageCache
from mala.train.epoch_data import Crops, NormalImages
from mala.model import MALA
from mala.model.memory import FeatureMemory
from mala.progress import progress
from mala.tiling import TileGrid

HELD_OUT = 0.1  # share of images whose distances to the others set the memory's scale
SCALE_QUANTILE = 0.99
COVER_CHUNK = 2048  # candidate tokens compared with the kept ones at once


@torch.no_grad()
def normal_feature_tokens(model: MALA, cache: ImageCache, grid: TileGrid | None = None,
                          batch_size: int = 8) -> torch.Tensor:
    """Backbone feature tokens (images, N, C) of every cached image, in cache order; with tiling, those of each
    image's grid tiles together (images, tiles x N, C), the tiles the model sees at inference."""
    images = len(cache.samples)
    if grid is None:
        dataset = NormalImages(cache, np.arange(images))
    else:
        dataset = NormalImages(cache, np.repeat(np.arange(images), grid.count),
                               Crops(np.tile(grid.corners, (images, 1)), grid.tile))
    loader = DataLoader(dataset, batch_size=batch_size)
    batches = progress(loader, desc="normal-feature memory", unit="batch", leave=False)
    device = next(model.parameters()).device  # the training device: the memory is built where the model is
    tokens = torch.cat([model.feature_tokens(tiles.to(device)).float() for tiles in batches])
    return tokens.unflatten(0, (images, -1)).flatten(1, 2)  # an image's tiles overlap: held out together


def cover(tokens: torch.Tensor, radius: float, seed: int) -> torch.Tensor:
    """A subset of `tokens` (N, C) within `radius` of every token (an epsilon-net, taken greedily in random order).

    Any query's nearest distance to the subset exceeds its distance to all tokens by at most `radius` (triangle
    inequality), so the memory's map changes by a bounded amount while repeated textures collapse to few tokens.
    One pass: each chunk is compared with the tokens kept so far, and the far ones are thinned among themselves."""
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed)).to(tokens.device)
    kept = FeatureMemory(tokens.shape[1]).to(tokens.device)
    for start in range(0, len(tokens), COVER_CHUNK):
        chunk = tokens[order[start:start + COVER_CHUNK]]
        if not kept.empty:
            chunk = chunk[kept.nearest_distance(chunk) > radius]
        if len(chunk):
            kept.fill(torch.cat([kept.tokens, chunk[_spread(chunk, radius)]]), 1.0)
    return kept.tokens


def _spread(tokens: torch.Tensor, radius: float) -> list[int]:
    """Indices of a greedy subset of `tokens` whose members lie more than `radius` apart."""
    close = (torch.cdist(tokens, tokens) <= radius).cpu().numpy()
    free = np.ones(len(tokens), dtype=bool)
    chosen = []
    for index in range(len(tokens)):
        if free[index]:
            chosen.append(index)
            free &= ~close[index]
    return chosen


def fill_memory(model: MALA, cache: ImageCache, seed: int, grid: TileGrid | None = None) -> None:
    """A scale, the 99% quantile of the nearest distances of held-out images' tokens to the other images' tokens;
    then an epsilon-net of all training tokens with epsilon = `memory_radius` x scale (`cover`), at most
    `memory_size` of them (a random subset beyond that)."""
    tokens = normal_feature_tokens(model, cache, grid)
    rng = np.random.default_rng(seed)
    scale = held_out_scale(tokens, rng) if len(tokens) > 1 else 1.0  # a single image has no others
    every = tokens.flatten(0, 1)
    if model.cfg.memory_radius > 0:
        every = cover(every, model.cfg.memory_radius * scale, seed)
    limit = model.cfg.memory_size
    if len(every) > limit:
        every = every[torch.from_numpy(np.sort(rng.permutation(len(every))[:limit])).to(every.device)]
    model.memory.fill(every, scale)


def held_out_scale(tokens: torch.Tensor, rng: np.random.Generator) -> float:
    """The `SCALE_QUANTILE` of held-out images' tokens' nearest distances to the other images' tokens (N, T, C)."""
    held_out = rng.permutation(len(tokens))[: max(1, int(round(HELD_OUT * len(tokens))))]
    others = np.setdiff1d(np.arange(len(tokens)), held_out)
    reference = FeatureMemory(tokens.shape[-1])
    reference.fill(tokens[torch.from_numpy(others).to(tokens.device)].flatten(0, 1), 1.0)
    distances = reference.nearest_distance(tokens[torch.from_numpy(held_out).to(tokens.device)].flatten(0, 1))
    return float(torch.quantile(distances[:100_000], SCALE_QUANTILE).clamp_min(1e-6))
