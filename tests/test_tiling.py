"""Tile positions, the tiling settings and their checks: bad tiling input is one line, never a traceback."""

from __future__ import annotations

import numpy as np
import pytest

from mala.cli import main
from mala.config import MalaConfig, ModelConfig, TilingConfig, apply_overrides, config_from_dict
from mala.errors import ConfigError
from mala.tiling import TileGrid, default_stride, median_shape, tile_starts
from tests.conftest import shared_data


@pytest.mark.parametrize("length,tile,stride", [(100, 32, 24), (96, 32, 32), (32, 32, 8), (517, 64, 1), (70, 64, 64)])
def test_tiles_cover_every_pixel_and_the_last_is_flush(length, tile, stride):
    starts = tile_starts(length, tile, stride)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        covered[start:start + tile] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] == length - tile
    assert all(0 < later - earlier <= stride for earlier, later in zip(starts, starts[1:]))


def test_a_stride_equal_to_the_tile_does_not_overlap_when_it_divides():
    grid = TileGrid((96, 128), (32, 32), 32)
    assert grid.rows == [0, 32, 64] and grid.columns == [0, 32, 64, 96]
    assert grid.count == 12 and np.all(grid.coverage() == 1)


def test_the_grid_lists_corners_row_by_row_and_counts_overlaps():
    grid = TileGrid((40, 100), (32, 32), 24)
    assert grid.rows == [0, 8] and grid.columns == [0, 24, 48, 68]
    assert grid.corners[:5].tolist() == [[0, 0], [0, 24], [0, 48], [0, 68], [8, 0]]
    coverage = grid.coverage()
    assert coverage[0, 0] == 1 and coverage[10, 30] == 4 and coverage.sum() == grid.count * 32 * 32


def test_random_corners_keep_whole_tiles_inside():
    grid = TileGrid((40, 100), (32, 48), 16)
    corners = grid.random_corners(np.random.default_rng(0), 500)
    assert corners[:, 0].min() == 0 and corners[:, 0].max() == 8
    assert corners[:, 1].min() == 0 and corners[:, 1].max() == 52


def test_the_default_stride_overlaps_a_quarter():
    assert default_stride((224, 224)) == 168 and default_stride((64, 96)) == 48
    cfg = MalaConfig(model=ModelConfig(image_size=64, patch_size=8), tiling=TilingConfig(source_size=[96, 160]))
    assert cfg.tiling.stride == 48 and cfg.input_shape == (96, 160) and cfg.tile_grid.tile == (64, 64)


def test_a_config_without_tiling_reads_as_before():
    cfg = config_from_dict({"model": {"image_size": 64, "patch_size": 8}})
    assert cfg.tile_grid is None and cfg.input_shape == (64, 64) and not cfg.tiling.enabled


def test_tiling_settings_are_stored_and_read_back():
    cfg = apply_overrides(MalaConfig(), ["model.image_size=64", "tiling.source_size=[96,160]", "tiling.stride=40"])
    again = config_from_dict(cfg.to_dict())
    assert again.tiling == TilingConfig(source_size=[96, 160], stride=40)
    assert again.tile_grid == TileGrid((96, 160), (64, 64), 40)


@pytest.mark.parametrize("tiling,message", [
    ({"source_size": 48}, r"the tile \(model.image_size, --tile\) 64 px is larger than the images it is cut from"),
    ({"source_size": [200, 48]}, r"larger than the images it is cut from \(tiling.source_size, --tile-source\) 200"),
    ({"source_size": 128, "stride": 0}, r"tiling.stride \(--tile-stride\) must be a whole number of pixels from 1 "
                                        r"to the tile's side 64, got 0"),
    ({"source_size": 128, "stride": -8}, "got -8"),
    ({"source_size": 128, "stride": 65}, "got 65"),
    ({"source_size": 128, "stride": 12.5}, "got 12.5"),
    ({"source_size": 128, "stride": "half"}, "got 'half'"),
    ({"source_size": "big"}, r"tiling.source_size: expected an integer"),
    ({"stride": 32}, r"tiling.stride=32 without tiling.source_size"),
])
def test_bad_tiling_settings_are_config_errors(tiling, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"model": {"image_size": 64, "patch_size": 8}, "tiling": tiling})


def test_a_tile_as_high_as_the_source_makes_one_row():
    cfg = config_from_dict({"model": {"image_size": 64, "patch_size": 8}, "tiling": {"source_size": [64, 200]}})
    assert cfg.tile_grid.rows == [0] and cfg.tile_grid.columns == [0, 48, 96, 136]


def test_median_shape_of_image_shapes():
    assert median_shape([(100, 300), (50, 200), (80, 400)]) == (80, 300)
    with pytest.raises(ConfigError, match="no images"):
        median_shape([])


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("flags,message", [
    (["--tile", "64", "--tile-stride", "0", "--tile-source", "128"], "tiling.stride (--tile-stride) must be"),
    (["--tile", "64", "--tile-stride", "80", "--tile-source", "128"], "got 80"),
    (["--tile", "64", "--tile-source", "48x300"], "the tile (model.image_size, --tile) 64 px is larger than"),
    (["--tile", "60", "--tile-source", "128"], "model.image_size 60 px: each side must be a multiple of 16"),
    (["--tile-stride", "32"], "--tile-stride and --tile-source go with --tile SIZE"),
    (["--tile", "64", "--image-size", "96"], "--tile sets the model's input (the tile), as --image-size does"),
])
def test_bad_tiling_flags_are_one_line(flags, message, capsys):
    assert main(["train", "--dry-run", "--data", str(shared_data("metal_plate")), *flags]) == 2
    line = _one_error_line(capsys)
    assert line.startswith("mala: error: ") and message in line


def test_a_tile_larger_than_the_training_images_is_one_line(capsys):
    """Without --tile-source the source is the images' median size: metal_plate's are 512 x 512."""
    assert main(["train", "--dry-run", "--data", str(shared_data("metal_plate")), "--tile", "528"]) == 2
    assert _one_error_line(capsys).endswith("(tiling.source_size, --tile-source) 512 px: choose a smaller tile or "
                                            "a larger source size")


def test_a_malformed_tile_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--dry-run", "--tile", "64y64"])
    assert "is no image size" in _one_error_line(capsys)


def test_tiling_flags_with_resume_are_refused(tmp_path, capsys):
    assert main(["train", "--resume", "--tile", "64", "--data", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--tile cannot change them" in _one_error_line(capsys)


def test_the_dry_run_names_the_tiles(capsys):
    assert main(["train", "--dry-run", "--data", str(shared_data("metal_plate")), "--tile", "224",
                 "--tile-stride", "160"]) == 0
    captured = capsys.readouterr()
    assert "tiling: 9 tiles of 224 px, stride 160 px, on images resized to 512 px" in captured.out
    # the plan says what the run would choose from the data and warn about at its start
    assert "tiling source size 512 px, the training images' median height and width" in captured.out
    assert "warning: no texture folder (--textures, synth.texture_dir)" in captured.out
