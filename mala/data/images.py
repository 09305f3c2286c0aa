"""Reading images and masks of any mode Pillow knows, with one-line errors that name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mala.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None
    return image


def _to_8bit_rgb(image: Image.Image) -> Image.Image:
    """Grey, 16-bit, palette and alpha images become 8-bit RGB (grey repeated to 3 channels)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or values.max() > 255 else 255.0
        image = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8))
    return image.convert("RGB")


def read_rgb(path: Path, size: int) -> np.ndarray:
    """Image as uint8 array (size, size, 3)."""
    image = _to_8bit_rgb(_open(path))
    return np.asarray(image.resize((size, size), Image.BILINEAR), dtype=np.uint8)


def read_mask(path: Path, size: int, image_path: Path | None = None) -> np.ndarray:
    """Binary mask as bool array (size, size); any non-zero pixel is anomalous.

    If `image_path` is given, the mask must have the image's original size.
    """
    mask = _open(path)
    if image_path is not None:
        image_size = _open_size(image_path)
        if mask.size != image_size:
            raise DataError(
                f"{path}: mask is {mask.size[0]}x{mask.size[1]} but its image {image_path.name} "
                f"is {image_size[0]}x{image_size[1]}"
            )
    binary = np.asarray(mask.convert("L"), dtype=np.uint8) > 0
    resized = Image.fromarray(binary.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(resized) > 127


def _open_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__})") from None
