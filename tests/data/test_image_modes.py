"""Decoding every grey depth by its real range: 8, 12 and 16-bit integers, 32-bit integers, floats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.data.images import open_rgb, read_mask

WIDTH = 64


def saved(path: Path, values: np.ndarray, mode: str | None = None) -> Path:
    """A grey ramp image written to `path`, checked to read back in the intended Pillow mode."""
    image = Image.fromarray(values)
    image.save(path)
    with Image.open(path) as back:
        assert back.mode == (mode or image.mode), f"{path.name} reads back as {back.mode}"
    return path


def ramp(top: float, dtype: type, low: float = 0.0) -> np.ndarray:
    """One row from `low` to `top`, eight rows high."""
    return np.tile(np.linspace(low, top, WIDTH), (8, 1)).astype(dtype)


def grey(path: Path) -> np.ndarray:
    rgb = np.asarray(open_rgb(path))
    assert rgb.dtype == np.uint8 and rgb.shape == (8, WIDTH, 3)
    assert (rgb == rgb[..., :1]).all()
    return rgb[..., 0].astype(int)


@pytest.mark.parametrize("name, values, mode, expected_top", [
    ("full16.png", ramp(65535, np.uint16), "I;16", 255),  # 16-bit data uses the whole range
    ("twelve.png", ramp(4095, np.uint16), "I;16", 255),  # 12-bit data in a 16-bit container: not 16 times darker
    ("dim12.png", ramp(2047, np.uint16), "I;16", 127),  # a dim 12-bit image stays dim
    ("int32.tif", ramp(4095, np.int32), "I", 255),
    ("int8.tif", ramp(255, np.int32), "I", 255),  # 8-bit values in a 32-bit container, as before
    ("wide.tif", ramp(1_000_000, np.int32), "I", 255),  # beyond 16 bits: the image's own maximum
    ("unit.tif", ramp(1.0, np.float32), "F", 255),  # floats in [0, 1] as they are
    ("half.tif", ramp(0.5, np.float32), "F", 128),
    ("any.tif", ramp(900.0, np.float32, low=-100.0), "F", 255),  # any other range: min to max
    ("grey8.png", ramp(255, np.uint8), "L", 255),
])
def test_grey_images_are_scaled_by_their_real_range(tmp_path, name, values, mode, expected_top):
    pixels = grey(saved(tmp_path / name, values, mode))
    assert pixels[:, 0].max() == 0
    assert abs(pixels.max() - expected_top) <= 1
    assert (np.diff(pixels[0]) >= 0).all()  # the ramp stays a ramp


def test_non_finite_float_pixels_do_not_stop_decoding(tmp_path):
    values = ramp(1.0, np.float32)
    values[0, :4] = [np.nan, np.inf, -np.inf, np.nan]
    pixels = grey(saved(tmp_path / "broken.tif", values, "F"))
    assert pixels.max() == 255 and (pixels[0, :4] == 0).all()


@pytest.mark.parametrize("kind", ["rgb", "rgba", "palette"])
def test_eight_bit_colour_images_are_unchanged(tmp_path, kind):
    rgb = np.random.default_rng(0).integers(0, 256, (8, WIDTH, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    if kind == "rgba":
        image.putalpha(128)
    elif kind == "palette":
        image = image.quantize(16)
        rgb = np.asarray(image.convert("RGB"))
    image.save(tmp_path / "colour.png")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "colour.png")), rgb)


@pytest.mark.parametrize("name, dtype, value", [("twelve.png", np.uint16, 1), ("deep.tif", np.int32, 70000),
                                                ("float.tif", np.float32, 0.001)])
def test_any_non_zero_mask_value_of_any_depth_is_anomalous(tmp_path, name, dtype, value):
    mask = np.zeros((8, WIDTH), dtype=dtype)
    mask[:, :WIDTH // 2] = value
    pixels = read_mask(saved(tmp_path / name, mask), WIDTH)
    assert pixels[:, :WIDTH // 2].all() and not pixels[:, WIDTH // 2:].any()
