"""What an epoch of either stage sees: per-category sampling, tiles, and the datasets of stage 1 (normal images) and
stage 2 (a share of them with a synthetic anomaly)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from mala.data.dataset import ImageCache, to_tensor
from mala.data.images import unit_range
from mala.sizes import ImageShape


def draw_per_category(
    by_category: dict[str, np.ndarray], per_category: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """`per_category` indices from each category: whole shuffled passes, so a small category repeats evenly."""
    drawn = {}
    for category, indices in by_category.items():
        passes = -(-per_category // len(indices))
        drawn[category] = np.concatenate([rng.permutation(indices) for _ in range(passes)])[:per_category]
    return drawn


def epoch_rng(seed: int, stage: int, epoch: int) -> np.random.Generator:
    """One random stream per (seed, stage, epoch): an epoch is reproducible on its own, which makes resume exact."""
    return np.random.default_rng([seed, stage, epoch])


@dataclass(frozen=True)
class Crops:
    """Where the items of a dataset are cut from their images (tiling): item i is the `shape` tile at `corners[i]`."""

    corners: np.ndarray  # (items, 2) top-left (y, x)
    shape: ImageShape  # (height, width) of every tile

    def __call__(self, item: int, array: np.ndarray) -> np.ndarray:
        """Item `item`'s tile of an (H, W, ...) array (an image, or its foreground)."""
        (y, x), (height, width) = self.corners[item], self.shape
        return array[y:y + height, x:x + width]


def whole(item: int, array: np.ndarray) -> np.ndarray:
    """No tiling: every item is its whole image."""
    return array


class NormalImages(Dataset):
    """Stage 1: the epoch's normal images (or their `crops`) as float tensors."""

    def __init__(self, cache: ImageCache, indices: np.ndarray, crops: Crops | None = None):
        self.cache, self.indices, self.crop = cache, indices, crops or whole

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> torch.Tensor:
        return to_tensor(self.crop(item, self.cache.images[self.indices[item]]))


class SyntheticAnomalies(Dataset):
    """Stage 2: the epoch's images (or their `crops`), a given share with a synthetic anomaly; returns (image, mask)."""

    def __init__(
        self,
        cache: ImageCache,
        indices: np.ndarray,
        anomalous: np.ndarray,
        synthesize,
        foregrounds: dict[int, np.ndarray],
        seed: tuple[int, ...],
        crops: Crops | None = None,
    ):
        self.cache, self.indices, self.anomalous = cache, indices, anomalous
        self.synthesize, self.foregrounds, self.seed = synthesize, foregrounds, seed
        self.crop = crops or whole

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(self.indices[item])
        rng = np.random.default_rng([*self.seed, item])  # per sample, so worker count does not change the data
        image = unit_range(self.crop(item, self.cache.images[index]))
        foreground = self.foregrounds.get(index)  # of the whole image: a tile alone may not show the object
        augmented, mask = self.synthesize(
            image, rng, anomalous=bool(self.anomalous[item]),
            foreground=None if foreground is None else self.crop(item, foreground),
        )
        return to_tensor(augmented), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))
