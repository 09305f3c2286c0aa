"""Tiled inference: cut images at the grid's fixed positions, run the model on all tiles at once, and stitch the
tile maps by averaging where tiles overlap.

Every position is a Python constant, so torch.export unrolls the loops and the ONNX export stays one graph with a
dynamic batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from mala.tiling import TileGrid

MapFunction = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, h, w) -> maps (N, h, w)


def cut_tiles(images: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(B, C, H, W) at the source size -> (B x tiles, C, h, w), each image's tiles together, row by row."""
    height, width = grid.tile
    tiles = [images[..., y:y + height, x:x + width] for y, x in grid.corners.tolist()]
    return torch.stack(tiles, dim=1).flatten(0, 1)


def stitch_maps(tile_maps: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(B x tiles, h, w) in `cut_tiles` order -> (B, H, W): each pixel the mean of the tiles that hold it.

    Tiles are padded to their place and summed (a row of tiles at a time, so at most one row's padded copies exist
    at once); padding and adding export to ONNX where in-place slice updates would not stay simple."""
    (source_height, source_width), (height, width) = grid.source, grid.tile
    maps = tile_maps.unflatten(0, (-1, len(grid.rows), len(grid.columns)))
    canvas = None
    for row, y in enumerate(grid.rows):
        strip = sum(F.pad(maps[:, row, column], (x, source_width - x - width))
                    for column, x in enumerate(grid.columns))
        placed = F.pad(strip, (0, 0, y, source_height - y - height))
        canvas = placed if canvas is None else canvas + placed
    return canvas / torch.from_numpy(grid.coverage()).to(canvas)


def tiled_maps(images: torch.Tensor, grid: TileGrid, map_of: MapFunction) -> torch.Tensor:
    """The stitched map (B, H, W) of images (B, 3, H, W) at the source size; one batched `map_of` over all tiles."""
    return stitch_maps(map_of(cut_tiles(images, grid)), grid)
