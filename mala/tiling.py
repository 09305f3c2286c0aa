"""Tiling (README, "Tiling"): where the model's tiles lie on an image resized to the source size.

Pure numpy, no torch: the training data, the stitching (mala.model.maps) and the checks of the settings all read
the same positions from here.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from mala.errors import ConfigError
from mala.sizes import ImageShape, describe_shape

DEFAULT_OVERLAP = 0.25  # without --tile-stride, neighbouring tiles share a quarter of the tile


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """First pixels of tiles `stride` apart along a side of `length`, the last one flush with the end, so every
    pixel lies in a tile (the last step is shorter when `stride` does not divide `length - tile`)."""
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] + tile < length:
        starts.append(length - tile)
    return starts


def default_stride(tile: ImageShape) -> int:
    """The stride when none is given: the smaller tile side less `DEFAULT_OVERLAP` of it."""
    return max(1, round(min(tile) * (1 - DEFAULT_OVERLAP)))


@dataclass(frozen=True)
class TileGrid:
    """Tiles of `tile` (height, width) `stride` pixels apart (both directions) covering a `source` image."""

    source: ImageShape
    tile: ImageShape
    stride: int

    def __post_init__(self) -> None:
        check_tiling(self.source, self.tile, self.stride)

    @cached_property
    def rows(self) -> list[int]:
        return tile_starts(self.source[0], self.tile[0], self.stride)

    @cached_property
    def columns(self) -> list[int]:
        return tile_starts(self.source[1], self.tile[1], self.stride)

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.columns)

    @cached_property
    def corners(self) -> np.ndarray:
        """Top-left (y, x) of every tile, (count, 2), row by row."""
        return np.array([(y, x) for y in self.rows for x in self.columns], dtype=np.int64).reshape(-1, 2)

    def coverage(self) -> np.ndarray:
        """(H, W) float32: how many tiles hold each pixel (at least 1), the divisor of the stitched sum."""
        counts = np.zeros(self.source, dtype=np.float32)
        height, width = self.tile
        for y, x in self.corners:
            counts[y:y + height, x:x + width] += 1
        return counts

    def random_corners(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """`count` top-left corners (count, 2) anywhere a whole tile fits: training sees every position, not only
        the grid's."""
        (height, width), (tile_height, tile_width) = self.source, self.tile
        return np.stack([rng.integers(0, height - tile_height + 1, count),
                         rng.integers(0, width - tile_width + 1, count)], axis=1)

    def describe(self) -> str:
        return (f"{self.count} tiles of {describe_shape(self.tile)}, stride {self.stride} px, on images resized to "
                f"{describe_shape(self.source)}")


def check_tiling(source: ImageShape, tile: ImageShape, stride: object) -> None:
    """One-line ConfigErrors for settings that cannot tile: a stride that is no int in 1..tile, a tile larger than
    the source size."""
    if isinstance(stride, bool) or not isinstance(stride, int) or not 0 < stride <= min(tile):
        raise ConfigError(f"tiling.stride (--tile-stride) must be a whole number of pixels from 1 to the tile's "
                          f"{'side' if tile[0] == tile[1] else 'shorter side'} {min(tile)}, got {stride!r}")
    if tile[0] > source[0] or tile[1] > source[1]:
        raise ConfigError(f"the tile (model.image_size, --tile) {describe_shape(tile)} is larger than the images it "
                          f"is cut from (tiling.source_size, --tile-source) {describe_shape(source)}: choose a "
                          "smaller tile or a larger source size")


def median_shape(shapes: Iterable[ImageShape]) -> ImageShape:
    """The median (height, width) of images given as (height, width)."""
    listed = list(shapes)
    if not listed:
        raise ConfigError("no images to take the tiling source size from")
    return (int(statistics.median_low(height for height, _ in listed)),
            int(statistics.median_low(width for _, width in listed)))
