"""Decoded-once image cache, per-category epoch sampling, and the datasets of both stages and of testing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mala.data.diskcache import cache_key, load_arrays, save_arrays
from mala.data.images import open_rgb, read_mask, resize_rgb, smaller_than, unit_range
from mala.data.samples import Sample, categories_of
from mala.errors import DataError
from mala.progress import progress
from mala.sizes import ImageShape, describe_shape, image_shape


@dataclass
class ImageCache:
    """Images resized once to the model's (H, W) as uint8, and masks for anomalous test images."""

    samples: list[Sample]
    images: np.ndarray  # (N, H, W, 3) uint8
    masks: dict[int, np.ndarray]  # sample index -> (H, W) bool, only anomalous samples
    upscaled: int = 0  # images decoded smaller than (H, W) in either direction, and so enlarged (0 from the disk cache)

    @classmethod
    def build(cls, samples: list[Sample], size: int | ImageShape, workers: int = 2, desc: str = "decoding images",
              cache_dir: Path | None = None) -> "ImageCache":
        """Decode and resize every image (and mask) once to `size` (an int: a square; else (height, width)); with
        `cache_dir`, reuse the arrays stored there by an earlier run with the same files and size, or store them
        for the next (see `diskcache`)."""
        if not samples:
            raise DataError("no images to load")
        shape = image_shape(size, "image size")
        if cache_dir is None:
            return cls(samples, *_decode(samples, shape, workers, desc))
        key = cache_key(samples, shape)
        arrays = load_arrays(Path(cache_dir), key, len(samples), shape)
        if arrays is not None:
            return cls(samples, *arrays)
        images, masks, upscaled = _decode(samples, shape, workers, desc)
        save_arrays(Path(cache_dir), key, images, masks)
        return cls(samples, images, masks, upscaled)

    def mask(self, index: int) -> np.ndarray:
        found = self.masks.get(index)
        return found if found is not None else np.zeros(self.images.shape[1:3], dtype=bool)

    def indices_by_category(self) -> dict[str, np.ndarray]:
        return {
            category: np.array([i for i, s in enumerate(self.samples) if s.category == category])
            for category in categories_of(self.samples)
        }

    def upscaled_note(self) -> str | None:
        """A one-line warning when some images were smaller than the model's size (README, "Image size")."""
        if not self.upscaled:
            return None
        height, width = self.images.shape[1:3]
        return (f"{self.upscaled} of {len(self.samples)} images are smaller than the model's "
                f"{describe_shape((height, width))} and were enlarged to it: their maps show no finer detail than "
                "the images hold")


def _decode(samples: list[Sample], shape: ImageShape, workers: int,
            desc: str) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """Images, masks, and how many images were enlarged."""
    images = np.empty((len(samples), *shape, 3), dtype=np.uint8)
    masks: dict[int, np.ndarray] = {}
    enlarged: list[int] = []

    def load(index: int) -> None:
        sample = samples[index]
        image = open_rgb(sample.path)
        if smaller_than(image, shape):
            enlarged.append(index)
        images[index] = resize_rgb(image, shape)
        if sample.mask_path is not None:
            masks[index] = read_mask(sample.mask_path, shape, image_path=sample.path)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for _ in progress(pool.map(load, range(len(samples))), total=len(samples), desc=desc, unit="img", leave=False):
            pass
    return images, masks, len(enlarged)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 or float [0,1] to (3, H, W) float32 [0,1]."""
    array = unit_range(image) if image.dtype == np.uint8 else image.astype(np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


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


class TestImages(Dataset):
    """Test images with masks and labels; returns (image, mask, label, index)."""

    def __init__(self, cache: ImageCache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        mask = torch.from_numpy(self.cache.mask(index))
        return to_tensor(self.cache.images[index]), mask, self.cache.samples[index].label, index
