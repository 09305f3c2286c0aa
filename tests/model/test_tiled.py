"""Stitching tile maps: averages of the overlaps, the identity when one tile is the image, and a tiled model's maps
and scores through `anomaly_maps`."""

from __future__ import annotations

import dataclasses

import torch

from mala.config import TilingConfig
from mala.model.maps import anomaly_maps, model_maps
from mala.model import MALA
from mala.model.maps import cut_tiles, stitch_maps, tiled_maps
from mala.tiling import TileGrid

GRID = TileGrid((40, 100), (32, 32), 24)


def test_cut_tiles_are_the_image_at_each_corner():
    images = torch.rand(2, 3, 40, 100)
    tiles = cut_tiles(images, GRID).unflatten(0, (2, GRID.count))
    for index, (y, x) in enumerate(GRID.corners.tolist()):
        assert torch.equal(tiles[1, index], images[1, :, y:y + 32, x:x + 32])


def test_stitching_a_constant_gives_the_constant():
    stitched = stitch_maps(torch.full((3 * GRID.count, 32, 32), 0.7), GRID)
    assert stitched.shape == (3, 40, 100)
    torch.testing.assert_close(stitched, torch.full((3, 40, 100), 0.7))


def test_stitching_a_pointwise_map_gives_the_whole_image_map():
    """Where tiles agree on every pixel (a map of the pixel alone), their average is that map."""
    images = torch.rand(2, 3, 40, 100)
    torch.testing.assert_close(tiled_maps(images, GRID, lambda tiles: tiles.mean(dim=1)), images.mean(dim=1))


def test_overlaps_are_averaged():
    grid = TileGrid((8, 12), (8, 8), 4)  # two tiles, columns 4..7 shared
    stitched = stitch_maps(torch.stack([torch.zeros(8, 8), torch.ones(8, 8)]), grid)[0]
    assert torch.all(stitched[:, :4] == 0) and torch.all(stitched[:, 4:8] == 0.5) and torch.all(stitched[:, 8:] == 1)


def test_one_tile_the_size_of_the_image_is_the_untiled_model(small_config):
    torch.manual_seed(0)
    model = MALA(small_config.model).eval()
    tiled = dataclasses.replace(small_config, tiling=TilingConfig(source_size=64, stride=64))
    assert tiled.tile_grid.count == 1
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(anomaly_maps(model, images, tiled), model(images))


def test_a_tiled_model_maps_the_source_size(small_config):
    torch.manual_seed(0)
    model = MALA(small_config.model).eval()
    cfg = dataclasses.replace(small_config, tiling=TilingConfig(source_size=[96, 160], stride=48))
    images = torch.rand(2, 3, 96, 160)
    with torch.no_grad():
        maps = anomaly_maps(model, images, cfg)
        first_tile = model_maps(model, images[:, :, :64, :64], small_config)[0][:, 0]
    assert cfg.tile_grid.rows == [0, 32] and cfg.tile_grid.columns == [0, 48, 96]
    assert maps.shape == (2, 96, 160)
    # the top-left 32 x 48 pixels lie in the first tile alone
    torch.testing.assert_close(maps[:, :32, :48], first_tile[:, :32, :48])
