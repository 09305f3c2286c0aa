"""Pixel metrics at each image's original size: maps upsampled bilinearly, masks read at their stored size.

Costs grow with the original pixel count: a category's maps and masks are held at once (5 bytes a pixel) and the
metrics sort copies of them, about 16 bytes a pixel at the peak (measured on metal_plate; 120 images of 1024 x 1024:
about 2 GB). Time grows likewise: metal_plate's 512 px originals take 9 times as long as its 224 px maps.
"""

from __future__ import annotations

import numpy as np

from mala.data.dataset import ImageCache
from mala.data.images import header_shape, mask_pixels
from mala.data.samples import Sample
from mala.deploy.render import resize_map
from mala.errors import DataError


def original_mask(sample: Sample, height: int, width: int) -> np.ndarray:
    """The sample's mask at its stored size (all normal without a mask)."""
    if sample.mask_path is None:
        return np.zeros((height, width), dtype=bool)
    return mask_pixels(sample.mask_path, image_path=sample.path)


def pixels_at_original_size(cache: ImageCache, maps: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks and upsampled maps (n, H, W) of one category's samples; all must share one original size."""
    samples = [cache.samples[i] for i in indices]
    sizes = {header_shape(sample.path) for sample in samples}
    if len(sizes) > 1:
        found = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise DataError(f"category {samples[0].category!r}: full-resolution metrics need one image size, found {found}")
    ((height, width),) = sizes
    masks = np.empty((len(samples), height, width), dtype=bool)  # filled in place: no second full-size copy
    upsampled = np.empty((len(samples), height, width), dtype=np.float32)
    for row, (sample, index) in enumerate(zip(samples, indices)):
        masks[row] = original_mask(sample, height, width)
        upsampled[row] = resize_map(maps[index], (width, height))
    return masks, upsampled
