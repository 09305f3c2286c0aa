"""Train the global map's autoencoder (mala.model.global_map) after stage 2, on the memory's tokens of the normal
training images, and set its standardisation and per-category error scales."""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning_fabric import Fabric

from mala.config import GlobalMapConfig
from mala.data.dataset import ImageCache
from mala.model import MALA
from mala.progress import progress
from mala.tiling import TileGrid
from mala.train.fill_memory import category_tokens

SCALE_QUANTILE = 0.99
SCALE_TOKENS = 2_000_000  # a category's errors the quantile reads at most (torch.quantile's input limit is 16M)
WARMUP_STEPS = 100
ERROR_BATCH = 32


def training_tokens(model: MALA, cache: ImageCache, settings: GlobalMapConfig, seed: int, grid: TileGrid | None,
                    fabric: Fabric | None) -> tuple[torch.Tensor, np.ndarray]:
    """The memory's tokens (inputs, N, C) of at most `images_per_category` model inputs (images or tiles) of each
    category, in half precision to bound the memory they take, with the section (category index) of each input."""
    rng = np.random.default_rng(seed)
    per_input, tiles = model.num_memory_tokens, grid.count if grid is not None else 1
    pools, sections = [], []
    for section, (category, indices) in enumerate(cache.indices_by_category().items()):
        chosen = np.sort(rng.permutation(indices)[:max(1, settings.images_per_category // tiles)])
        tokens = category_tokens(model, cache, chosen, grid, fabric, desc=f"global map: {category}")[0]
        pools.append(tokens.reshape(-1, per_input, tokens.shape[-1]).half())
        sections.append(np.full(len(pools[-1]), section))
    return torch.cat(pools), np.concatenate(sections)


def train_global_map(model: MALA, cache: ImageCache, settings: GlobalMapConfig, seed: int,
                     grid: TileGrid | None = None, fabric: Fabric | None = None) -> list[float]:
    """Fit `model.global_map` to the normal tokens of `cache` (1 - cosine similarity per token, random batches), then
    set each section's scale; returns the mean loss of every 100 steps. Every rank trains alike (same draws); rank
    0's result is then given to all, so the ranks hold one model."""
    net = model.global_map
    tokens, sections = training_tokens(model, cache, settings, seed, grid, fabric)
    device = net.token_mean.device
    mean, std = channel_statistics(tokens)
    net.token_mean.copy_(mean.to(device))
    net.token_std.copy_(std.clamp_min(1e-6).to(device))
    torch.manual_seed(seed)  # dropout's draws: one seed, one autoencoder
    losses = fit(net, tokens, settings, seed)
    net.scales = error_scales(net, tokens, sections).to(device)
    if fabric is not None and fabric.world_size > 1:  # CPU tensors: a CUDA one would unpickle on rank 0's GPU
        state = fabric.broadcast({k: v.cpu() for k, v in net.state_dict().items()}, src=0)
        net.load_state_dict(state)
    return losses


@torch.no_grad()
def channel_statistics(tokens: torch.Tensor, inputs_at_once: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) standard deviation of tokens (inputs, N, C), summed in float64 a few inputs at a
    time: no float32 copy of the whole half-precision pool (gigabytes for many categories)."""
    count, total, squares = 0, 0.0, 0.0
    for part in tokens.split(inputs_at_once):
        flat = part.flatten(0, 1).double()
        count, total, squares = count + len(flat), total + flat.sum(dim=0), squares + (flat * flat).sum(dim=0)
    mean = total / count
    variance = (squares - count * mean * mean) / max(count - 1, 1)
    return mean.float(), variance.clamp_min(0).sqrt().float()


def optimiser_of(net: torch.nn.Module, settings: GlobalMapConfig) -> torch.optim.Optimizer:
    """AdamW over the autoencoder's weights, made trainable."""
    for parameter in net.parameters():
        parameter.requires_grad_(True)
    return torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


def training_step(net: torch.nn.Module, batch: torch.Tensor, optimiser: torch.optim.Optimizer) -> float:
    """One optimizer step on raw tokens (B, N, C); returns the loss."""
    loss = net.errors(net.standardise(batch)).mean()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return loss.item()


def fit(net: torch.nn.Module, tokens: torch.Tensor, settings: GlobalMapConfig, seed: int) -> list[float]:
    """AdamW with warm-up and cosine decay on random batches of the standardised `tokens`; the loss per 100 steps."""
    device = net.token_mean.device
    generator = torch.Generator().manual_seed(seed)
    optimiser = optimiser_of(net, settings)
    steps = settings.steps
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / WARMUP_STEPS)
                                                 * 0.5 * (1 + math.cos(math.pi * step / steps)))
    losses, running = [], []
    net.train()
    bar = progress(range(steps), desc="global map", unit="step")
    for step in bar:
        batch = tokens[torch.randint(len(tokens), (settings.batch_size,), generator=generator)].to(device).float()
        running.append(training_step(net, batch, optimiser))
        schedule.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            losses.append(float(np.mean(running)))
            running = []
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return losses


@torch.no_grad()
def error_scales(net: torch.nn.Module, tokens: torch.Tensor, sections: np.ndarray) -> torch.Tensor:
    """Per section, the `SCALE_QUANTILE` of its training tokens' errors (at most `SCALE_TOKENS` of them)."""
    device = net.token_mean.device
    errors = torch.cat([net.errors(net.standardise(chunk.to(device).float())).cpu()
                        for chunk in tokens.split(ERROR_BATCH)])
    scales = []
    for section in range(int(sections.max()) + 1):
        chosen = errors[torch.from_numpy(sections == section)].flatten()[:SCALE_TOKENS]
        scales.append(float(torch.quantile(chosen, SCALE_QUANTILE).clamp_min(1e-6)))
    return torch.tensor(scales)
