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
SCALE_QUERIES = 100_000  # held-out tokens whose nearest distances give the scale: a bounded sample
SCALE_BLOCK = 4096  # held-out tokens searched at once, one step of the scale's progress
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
    One pass: each chunk is compared with the tokens kept so far, and the far ones are thinned among themselves. The
    kept tokens grow in a buffer of doubling capacity, so they are not copied once per chunk."""
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed)).to(tokens.device)
    kept = FeatureMemory(tokens.shape[1]).to(tokens.device)
    buffer, used = tokens.new_empty(0, tokens.shape[1]), 0
    with progress(total=len(tokens), desc="memory epsilon-net", unit="token", leave=False) as bar:
        for start in range(0, len(tokens), COVER_CHUNK):
            chunk = tokens[order[start:start + COVER_CHUNK]]
            if used:
                chunk = chunk[kept.nearest_distance(chunk) > radius]
            if len(chunk):
                new = chunk[_spread(chunk, radius)]
                if used + len(new) > len(buffer):
                    grown = tokens.new_empty(max(used + len(new), 2 * len(buffer)), tokens.shape[1])
                    grown[:used] = buffer[:used]
                    buffer = grown
                buffer[used:used + len(new)] = new
                used += len(new)
                kept.tokens = buffer[:used]  # a view: rows of a contiguous buffer are contiguous
            bar.update(min(COVER_CHUNK, len(tokens) - start))
    return buffer[:used].clone()  # without the buffer's spare rows


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
    """The `SCALE_QUANTILE` of held-out images' tokens' nearest distances to the other images' tokens (N, T, C), from
    the first `SCALE_QUERIES` held-out tokens."""
    held_out = rng.permutation(len(tokens))[: max(1, int(round(HELD_OUT * len(tokens))))]
    others = np.setdiff1d(np.arange(len(tokens)), held_out)
    reference = FeatureMemory(tokens.shape[-1])
    reference.fill(tokens[torch.from_numpy(others).to(tokens.device)].flatten(0, 1), 1.0)
    queries = tokens[torch.from_numpy(held_out).to(tokens.device)].flatten(0, 1)[:SCALE_QUERIES]
    blocks = progress(queries.split(SCALE_BLOCK), desc="memory scale", unit="block", leave=False)
    distances = torch.cat([reference.nearest_distance(block) for block in blocks])
    return float(torch.quantile(distances, SCALE_QUANTILE).clamp_min(1e-6))
