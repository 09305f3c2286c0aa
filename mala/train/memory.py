"""Fill the hybrid's normal-feature memory (mala.model.memory) from the training images, after stage 2."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from mala.data.dataset import ImageCache, NormalImages
from mala.model import MALA
from mala.model.memory import FeatureMemory
from mala.progress import progress

HELD_OUT = 0.1  # share of images whose distances to the others set the memory's scale
SCALE_QUANTILE = 0.99


@torch.no_grad()
def normal_feature_tokens(model: MALA, cache: ImageCache, batch_size: int = 8) -> torch.Tensor:
    """Backbone feature tokens (images, N, C) of every cached image, in cache order."""
    loader = DataLoader(NormalImages(cache, np.arange(len(cache.samples))), batch_size=batch_size)
    batches = progress(loader, desc="normal-feature memory", unit="batch", leave=False)
    return torch.cat([model.feature_tokens(images) for images in batches])


def fill_memory(model: MALA, cache: ImageCache, seed: int) -> None:
    """All training tokens (a random `memory_size` of them beyond that), and a scale: the 99% quantile of the
    nearest distances of held-out images' tokens to the other images' tokens."""
    tokens = normal_feature_tokens(model, cache)
    rng = np.random.default_rng(seed)
    scale = 1.0  # a single image has no others to be compared with
    if len(tokens) > 1:
        held_out = rng.permutation(len(tokens))[: max(1, int(round(HELD_OUT * len(tokens))))]
        others = np.setdiff1d(np.arange(len(tokens)), held_out)
        reference = FeatureMemory(tokens.shape[-1])
        reference.fill(tokens[others].flatten(0, 1), 1.0)
        distances = reference.nearest_distance(tokens[held_out].flatten(0, 1))
        scale = float(torch.quantile(distances[:100_000], SCALE_QUANTILE).clamp_min(1e-6))
    every = tokens.flatten(0, 1)
    limit = model.cfg.memory_size
    if len(every) > limit:
        every = every[torch.from_numpy(np.sort(rng.permutation(len(every))[:limit]))]
    model.memory.fill(every, scale)
