"""Fill the hybrid's normal-feature memory (mala.model.memory) from the training images, after stage 2."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch
from lightning_fabric import Fabric
from torch.utils.data import DataLoader

from mala.data.dataset import ImageCache
from mala.data.samples import category_seed
from mala.train.epoch_data import Crops, NormalImages
from mala.model import MALA
from mala.model.memory import FeatureMemory, MemorySection, image_features
from mala.progress import progress
from mala.tiling import TileGrid

HELD_OUT = 0.1  # share of images whose distances to the others set the memory's scale
SCALE_QUANTILE = 0.99
SCALE_QUERIES = 20_000  # held-out tokens whose nearest distances give the scale: a bounded sample (all of them for
# up to about 1,000 untiled 224 px images of a category; 200 of them above the 99 % quantile)
SEARCH_BLOCK = 4096  # tokens searched at once: held-out ones for the scale, a section's rows for a cut's spacing
SCALE_BLOCK_ROWS = 200_000  # the other images' tokens searched at once (about 120 MB at 152 channels)
COVER_CHUNK = 2048  # candidate tokens compared with the kept ones at once
COARSEN_STEP = 1.2  # a cut section's epsilon-net radius grows by this factor until the net fits
SPACING_SAMPLE = 1024  # rows whose nearest-row distances give a cut's first radius


@torch.no_grad()
def normal_feature_tokens(model: MALA, cache: ImageCache, indices: np.ndarray, grid: TileGrid | None = None,
                          batch_size: int = 8, desc: str = "normal-feature memory") -> list[torch.Tensor]:
    """Backbone feature tokens (images, N, C) of the cached images `indices`, in that order, for the memory and, if
    the model has one, the score memory (each on its own grid); with tiling, those of each image's grid tiles
    together (images, tiles x N, C), the tiles the model sees at inference."""
    if grid is None:
        dataset = NormalImages(cache, indices)
    else:
        dataset = NormalImages(cache, np.repeat(indices, grid.count),
                               Crops(np.tile(grid.corners, (len(indices), 1)), grid.tile))
    device = next(model.parameters()).device  # the training device: the memory is built where the model is
    tokens = [torch.empty(len(dataset), count, model.feature_tokens.channels, device=device)
              for _, count in model.memories]
    done = 0
    for tiles in progress(DataLoader(dataset, batch_size=batch_size), desc=desc, unit="batch", leave=False):
        for held, batch in zip(tokens, model.backbone_tokens(tiles.to(device))[1:]):
            held[done:done + len(tiles)] = batch
        done += len(tiles)
    return [t.unflatten(0, (len(indices), -1)).flatten(1, 2) for t in tokens]  # an image's tiles held out together


def category_tokens(model: MALA, cache: ImageCache, indices: np.ndarray, grid: TileGrid | None,
                    fabric: Fabric | None, desc: str) -> list[torch.Tensor]:
    """`normal_feature_tokens` of `indices`, each rank embedding every world-size-th image; all ranks get them all,
    in order."""
    if fabric is None or fabric.world_size == 1:
        return normal_feature_tokens(model, cache, indices, grid, desc=desc)
    rank, world = fabric.global_rank, fabric.world_size
    gathered_tokens = []
    for share in normal_feature_tokens(model, cache, indices[rank::world], grid, desc=desc):
        padded = share.new_zeros(-(-len(indices) // world), *share.shape[1:])  # all_gather needs equal shapes
        padded[:len(share)] = share
        gathered = fabric.all_gather(padded)  # (world, per rank, ...): rank r's j-th image is indices[r + j x world]
        gathered_tokens.append(gathered.transpose(0, 1).flatten(0, 1)[:len(indices)])
    return gathered_tokens


def cover(tokens: torch.Tensor, radius: float, seed: int) -> torch.Tensor:
    """A subset of `tokens` (N, C) within `radius` of every token: the rows `cover_indices` keeps."""
    return tokens[cover_indices(tokens, radius, seed)]


def cover_indices(tokens: torch.Tensor, radius: float, seed: int) -> torch.Tensor:
    """Indices of a subset of `tokens` (N, C) within `radius` of every token (an epsilon-net, taken greedily in random
    order).

    Any query's nearest distance to the subset exceeds its distance to all tokens by at most `radius` (triangle
    inequality), so the memory's map changes by a bounded amount while repeated textures collapse to few tokens.
    One pass: each chunk is compared with the tokens kept so far, and the far ones are thinned among themselves. The
    kept tokens grow in a buffer of doubling capacity, so they are not copied once per chunk."""
    order = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(seed)).to(tokens.device)
    kept = FeatureMemory(tokens.shape[1]).to(tokens.device)
    buffer, used, chosen = tokens.new_empty(0, tokens.shape[1]), 0, []
    with progress(total=len(tokens), desc="memory epsilon-net", unit="token", leave=False) as bar:
        for start in range(0, len(tokens), COVER_CHUNK):
            indices = order[start:start + COVER_CHUNK]
            if used:
                indices = indices[kept.nearest_distance(tokens[indices]) > radius]
            if len(indices):
                indices = indices[_spread(tokens[indices], radius)]
                chosen.append(indices)
                if used + len(indices) > len(buffer):
                    grown = tokens.new_empty(max(used + len(indices), 2 * len(buffer)), tokens.shape[1])
                    grown[:used] = buffer[:used]
                    buffer = grown
                buffer[used:used + len(indices)] = tokens[indices]
                used += len(indices)
                kept.tokens = buffer[:used]  # a view: rows of a contiguous buffer are contiguous
            bar.update(min(COVER_CHUNK, len(tokens) - start))
    return torch.cat(chosen) if chosen else order[:0]


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


def fill_memory(model: MALA, cache: ImageCache, seed: int, grid: TileGrid | None = None,
                fabric: Fabric | None = None) -> None:
    """One memory section per category, in `cache.indices_by_category` order (the model's category list): its
    scale, the 99% quantile of the nearest distances of held-out images' tokens to the category's other images'
    tokens; then an epsilon-net of the category's tokens with epsilon = `memory_radius` x scale (`cover`). At most
    `memory_section_size` tokens a section and `memory_size` in all (beyond: `MEMORY_CUTS`). A score memory
    (`score_memory`) is filled the same way from the same images' tokens on its own grid, layer-normed.

    Under data parallelism each rank embeds its share of the images; rank 0 builds the sections and every rank
    receives them, so the memory is built once and is the same on every rank."""
    memories = model.memories
    sections: list[list[MemorySection]] = [[] for _ in memories]
    for category, indices in cache.indices_by_category().items():
        held_tokens = category_tokens(model, cache, indices, grid, fabric, desc=f"memory: {category}")
        if fabric is None or fabric.is_global_zero:
            for kept, held, (_, count) in zip(sections, held_tokens, memories):
                rng = np.random.default_rng([seed, category_seed(category)])  # whatever else the model holds
                kept.append(category_section(held, count, model.cfg.memory_radius, rng, seed))
    for (memory, _), built, cut in zip(memories, sections, MEMORY_CUTS):
        if fabric is not None and fabric.world_size > 1:  # as CPU tensors: a CUDA one would unpickle on rank 0's GPU
            received = fabric.broadcast([_to_device(s, torch.device("cpu")) for s in built], src=0)
            built = [_to_device(s, memory.tokens.device) for s in received]
        memory.fill_sections(within_size(with_scales(built), model.cfg.memory_size, np.random.default_rng(seed),
                                         model.cfg.memory_section_size, cut))


def category_section(tokens: torch.Tensor, patches: int, radius: float, rng: np.random.Generator,
                     seed: int) -> MemorySection:
    """The memory section of one category's tokens (images, tiles x `patches`, C), routed to by each model input
    (image or tile); a category of one image has no held-out images, so no scale of its own (NaN until
    `with_scales`)."""
    scale = held_out_scale(tokens, rng) if len(tokens) > 1 else float("nan")
    every = tokens.flatten(0, 1)
    if radius > 0 and len(tokens) > 1:
        every = cover(every, radius * scale, seed)
    return MemorySection(every, scale, image_features(tokens.reshape(-1, patches, tokens.shape[-1])))


def with_scales(sections: list[MemorySection]) -> list[MemorySection]:
    """Sections of one image take the median scale of the others (1.0 when no section has one)."""
    known = [s.scale for s in sections if not np.isnan(s.scale)]
    fallback = float(np.median(known)) if known else 1.0
    return [dataclasses.replace(s, scale=fallback) if np.isnan(s.scale) else s for s in sections]


Cut = Callable[[MemorySection, int, np.random.Generator], MemorySection]


def random_rows(section: MemorySection, count: int, rng: np.random.Generator) -> MemorySection:
    """The section with `count` of its rows, drawn at random, in their order: the density of its common parts stays
    (their fine distances are what the pixel map ranks)."""
    rows = torch.from_numpy(np.sort(rng.permutation(len(section.tokens))[:count])).to(section.tokens.device)
    return dataclasses.replace(section, tokens=section.tokens[rows])


def within_size(sections: list[MemorySection], limit: int, rng: np.random.Generator,
                section_limit: int = 0, cut: Cut = random_rows) -> list[MemorySection]:
    """The sections, each cut to at most `section_limit` rows (0: no limit), then each to the same share of its rows
    when together they hold more than `limit`, by `cut` (at least one row)."""
    if section_limit and any(len(s.tokens) > section_limit for s in sections):
        sections = [cut(s, section_limit, rng) if len(s.tokens) > section_limit else s for s in sections]
    total = sum(len(s.tokens) for s in sections)
    if total <= limit:
        return sections
    return [cut(s, max(1, int(len(s.tokens) * limit / total)), rng) for s in sections]


def thinned(section: MemorySection, count: int, rng: np.random.Generator) -> MemorySection:
    """The section cut to `count` of its rows, in their order, by epsilon-nets of growing radius (`COARSEN_STEP` a
    step): every row it drops lies within the last net's radius of one it keeps, where a random cut can leave a
    rare normal part without any row; the last net is topped up to `count` with rows of the one before it."""
    tokens = section.tokens
    keep = torch.arange(len(tokens), device=tokens.device)
    radius = _spacing(tokens, rng)
    seed = int(rng.integers(2**31))
    while len(keep) > count:
        net = keep[cover_indices(tokens[keep], radius, seed)]
        if len(net) <= count:
            rest = keep[~torch.isin(keep, net)]
            extra = rest[torch.from_numpy(rng.permutation(len(rest))[:count - len(net)]).to(rest.device)]
            keep = torch.cat([net, extra])
        else:
            keep, radius = net, radius * COARSEN_STEP
    return dataclasses.replace(section, tokens=tokens[keep.sort().values])


def _spacing(tokens: torch.Tensor, rng: np.random.Generator) -> float:
    """The median distance of up to `SPACING_SAMPLE` random rows of `tokens` (N, C) to their nearest other row that is
    not a copy: the first radius worth thinning with (an epsilon-net's rows lie at least its radius apart; copies,
    as of a plain background, go at any radius)."""
    sample = torch.from_numpy(np.sort(rng.permutation(len(tokens))[:SPACING_SAMPLE])).to(tokens.device)
    nearest = torch.full((len(sample),), float("inf"), device=tokens.device)
    for start in range(0, len(tokens), SEARCH_BLOCK):  # a block of rows at a time: a section may hold 100,000s
        distances = torch.cdist(tokens[sample], tokens[start:start + SEARCH_BLOCK])
        inside = (sample >= start) & (sample < start + len(distances[0]))
        distances[inside.nonzero()[:, 0], sample[inside] - start] = float("inf")  # not to itself
        nearest = torch.minimum(nearest, distances.amin(dim=1))
    apart = nearest[nearest > 0]
    return float(apart.median()) if len(apart) else 1e-6


# how a section over its size is cut, per memory in `MALA.memories` order: the map's memory at random (on the memory
# protocol at 2,000 rows a section, pixel AUROC + AUPRO / 2 95.6 + 88.7 against 94.7 + 86.8 for a coarser net), the
# score memory by a coarser net (the image AUROC of the map's maximum, the score memory's job, 83.9 against 79.7 at
# random; BENCHMARKS.md "A section over its size")
MEMORY_CUTS: tuple[Cut, ...] = (random_rows, thinned)


def thin_sections(memory: FeatureMemory, radius: float, seed: int) -> None:
    """Each section of a filled memory thinned again to an epsilon-net of `radius` x its own scale (what-ifs of the
    benches on a trained model)."""
    memory.fill_sections([
        MemorySection(cover(memory.section_rows(k), radius * float(memory.scales[k]), seed), float(memory.scales[k]),
                      memory.image_features[memory.image_sections == k])
        for k in range(memory.section_count)])


def _to_device(section: MemorySection, device: torch.device) -> MemorySection:
    return MemorySection(section.tokens.to(device), section.scale, section.image_features.to(device))


def held_out_scale(tokens: torch.Tensor, rng: np.random.Generator) -> float:
    """The `SCALE_QUANTILE` of held-out images' tokens' nearest distances to the other images' tokens (N, T, C), from
    at most `SCALE_QUERIES` held-out tokens. The other images are searched a block at a time, so no copy of all
    their tokens is made."""
    held_out = rng.permutation(len(tokens))[: max(1, int(round(HELD_OUT * len(tokens))))]
    others = np.setdiff1d(np.arange(len(tokens)), held_out)
    queries = tokens[torch.from_numpy(held_out).to(tokens.device)].flatten(0, 1)
    if len(queries) > SCALE_QUERIES:  # a random sample: the first ones would all come from one tiled image
        queries = queries[torch.from_numpy(np.sort(rng.choice(len(queries), SCALE_QUERIES, replace=False)))]
    reference = FeatureMemory(tokens.shape[-1])
    nearest = torch.full((len(queries),), float("inf"), device=tokens.device)
    images_per_block = max(1, SCALE_BLOCK_ROWS // tokens.shape[1])
    blocks = np.array_split(others, -(-len(others) // images_per_block))
    for block in progress(blocks, desc="memory scale", unit="block", leave=False):
        reference.fill(tokens[torch.from_numpy(block).to(tokens.device)].flatten(0, 1), 1.0)
        block_nearest = [reference.nearest_distance(q) for q in queries.split(SEARCH_BLOCK)]
        nearest = torch.minimum(nearest, torch.cat(block_nearest))
    return float(torch.quantile(nearest, SCALE_QUANTILE).clamp_min(1e-6))
