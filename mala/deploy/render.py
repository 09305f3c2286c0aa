"""Anomaly maps as pictures: the map at the image's own size, and the jet overlay (numpy and Pillow only)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from mala.data.images import unit_range

OVERLAY_WEIGHT = 0.5  # share of the jet-coloured map in the overlay


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map, (...) values in [0, 1] to (..., 3) floats in [0, 1]: blue, cyan, yellow, red."""
    x = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where red, green and blue peak
    return np.clip(1.5 - np.abs(4.0 * (x - centres)), 0.0, 1.0)


def overlay(image: np.ndarray, anomaly_map: np.ndarray) -> np.ndarray:
    """The map (same height and width as the uint8 RGB image, values in [0, 1]) blended over the image, as uint8."""
    blended = (1 - OVERLAY_WEIGHT) * unit_range(image) + OVERLAY_WEIGHT * jet(anomaly_map)
    return np.round(blended * 255.0).astype(np.uint8)


def resize_map(anomaly_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map (H, W) to (height, width) = size[::-1], bilinear, pixel centres aligned (the geometry of the resize that shrank the image)."""
    resized = Image.fromarray(anomaly_map.astype(np.float32), mode="F").resize(size, Image.BILINEAR)
    return np.asarray(resized, dtype=np.float32)


def map_image(anomaly_map: np.ndarray) -> Image.Image:
    """A [0, 1] map as an 8-bit grey picture (255 = 1)."""
    return Image.fromarray(np.round(np.clip(anomaly_map, 0.0, 1.0) * 255.0).astype(np.uint8), mode="L")


def png_bytes(picture: Image.Image | np.ndarray) -> bytes:
    picture = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
