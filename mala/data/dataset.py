"""Decoded-once image cache and the test images' dataset (the training stages' datasets: mala.train.epoch_data)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mala.data.diskcache import cache_key, load_arrays, save_arrays
from mala.data.images import header_shape, open_rgb, read_mask, resize_rgb, smaller_than, unit_range
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
    upscaled: int = 0  # images smaller than (H, W) in either direction, and so enlarged

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
            return cls(samples, *arrays, enlarged_count(samples, shape))
        images, masks, upscaled = _decode(samples, shape, workers, desc)
        save_arrays(Path(cache_dir), key, images, masks)
        return cls(samples, images, masks, upscaled)

    def mask(self, index: int) -> np.ndarray:
        found = self.masks.get(index)
        return found if found is not None else np.zeros(self.images.shape[1:3], dtype=bool)

    def subset(self, chosen: np.ndarray) -> "ImageCache":
        """The cached samples `chosen` (indices), with their masks, without decoding again."""
        masks = {place: self.masks[index] for place, index in enumerate(chosen.tolist()) if index in self.masks}
        return ImageCache([self.samples[i] for i in chosen], self.images[chosen], masks)

    def indices_by_category(self) -> dict[str, np.ndarray]:
        return {
            category: np.array([i for i, s in enumerate(self.samples) if s.category == category])
            for category in categories_of(self.samples)
        }


def upscaled_note(upscaled: int, total: int, shape: ImageShape) -> str | None:
    """A one-line warning when `upscaled` of `total` images are smaller than the model's `shape` (README, "Image
    size"); None when there are none."""
    if not upscaled:
        return None
    return (f"warning: {upscaled} of {total} images are smaller than the model's {describe_shape(shape)} and were "
            "enlarged to it: their maps show no finer detail than the images hold")


def enlarged_count(samples: list[Sample], shape: ImageShape) -> int:
    """How many of the images decoding to `shape` enlarges, from their headers (the pixels are not decoded)."""
    return sum(smaller_than(header_shape(sample.path), shape) for sample in samples)


def _decode(samples: list[Sample], shape: ImageShape, workers: int,
            desc: str) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """Images, masks, and how many images were enlarged."""
    images = np.empty((len(samples), *shape, 3), dtype=np.uint8)
    masks: dict[int, np.ndarray] = {}
    enlarged: list[int] = []

    def load(index: int) -> None:
        sample = samples[index]
        image = open_rgb(sample.path)
        if smaller_than((image.height, image.width), shape):
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


class TestImages(Dataset):
    """Test images with masks and labels; returns (image, mask, label, index)."""

    def __init__(self, cache: ImageCache):
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cache.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        mask = torch.from_numpy(self.cache.mask(index))
        return to_tensor(self.cache.images[index]), mask, self.cache.samples[index].label, index
