"""A PNG contact sheet of synthetic anomalies, to check by eye what stage 2 trains on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

from mala.synth.anomaly import AnomalySynthesizer
from mala.data.images import to_uint8

COLUMNS = ("normal", "synthetic anomaly", "mask", "mask outline")
HEADER_HEIGHT = 16
OUTLINE_COLOUR = (255, 0, 0)


def _outlined(anomaly: Image.Image, mask: Image.Image) -> Image.Image:
    """The anomaly with the mask's outer boundary drawn over it."""
    boundary = ImageChops.subtract(mask.filter(ImageFilter.MaxFilter(3)), mask)
    return Image.composite(Image.new("RGB", anomaly.size, OUTLINE_COLOUR), anomaly, boundary)


def _row(
    image: np.ndarray, synth: AnomalySynthesizer, rng: np.random.Generator, foreground: np.ndarray | None
) -> list[Image.Image]:
    """The tiles of one row: normal, anomaly, mask, outline."""
    anomaly_array, mask_array = synth(image, rng, anomalous=True, foreground=foreground)
    anomaly = Image.fromarray(to_uint8(anomaly_array))
    mask = Image.fromarray(to_uint8(mask_array))
    return [Image.fromarray(to_uint8(image)), anomaly, mask.convert("RGB"), _outlined(anomaly, mask)]


def write_preview_grid(
    images: list[np.ndarray],
    synth: AnomalySynthesizer,
    out: Path,
    seed: int = 0,
    foregrounds: list[np.ndarray | None] | None = None,
) -> Path:
    """Write a grid with one row per image (float32 HxWx3 [0, 1] at synth.image_shape) and return out.

    Row i uses rng = default_rng([seed, 0, i]), the data loader's stream for epoch 0, sample i.
    """
    foregrounds = foregrounds if foregrounds is not None else [None] * len(images)
    if len(foregrounds) != len(images):
        raise ValueError(f"{len(foregrounds)} foregrounds for {len(images)} images")
    height, width = synth.image_shape
    grid = Image.new("RGB", (width * len(COLUMNS), HEADER_HEIGHT + height * len(images)), "white")
    draw = ImageDraw.Draw(grid)
    for column, title in enumerate(COLUMNS):
        draw.text((column * width + 4, 2), title, fill="black")
    for row, (image, foreground) in enumerate(zip(images, foregrounds)):
        rng = np.random.default_rng([seed, 0, row])
        for column, tile in enumerate(_row(image, synth, rng, foreground)):
            grid.paste(tile, (column * width, HEADER_HEIGHT + row * height))
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
