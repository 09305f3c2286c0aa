"""Reading images and masks of any mode Pillow knows, with one-line errors that name the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from mala.errors import DataError
from mala.sizes import ImageShape, image_shape

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def image_files(folder: Path) -> list[Path]:
    """The image files in and below `folder`, sorted; symbolic links to folders are followed (a dataset assembled
    from links is common), which `Path.rglob` does not do before Python 3.13."""
    found = []
    for directory, _, names in os.walk(folder, followlinks=True):
        found += [Path(directory) / name for name in names if Path(name).suffix.lower() in IMAGE_SUFFIXES]
    return sorted(path for path in found if path.is_file())


def require_image_files(folder: Path) -> list[Path]:
    """`image_files`, with a clear error when there are none."""
    files = image_files(folder)
    if not files:
        raise DataError(f"{folder}: no images in it or below it (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None
    return image


INTEGER_DEPTHS = (8, 12, 16)  # bit depths a grey integer image may hold, whatever its container's size


def _unit_range(values: np.ndarray, floating: bool) -> np.ndarray:
    """Grey values scaled to [0, 1] by their real range (README, "Images and masks").

    Integers: divided by the largest value of the smallest of 8, 12 and 16 bits that holds the image's maximum
    (12-bit data in a 16-bit container is common in industry; the image's own maximum would stretch every
    image differently), or by that maximum beyond 16 bits. Floats: as they are in [0, 1], else min to max.
    """
    values = np.where(np.isfinite(values), values, 0.0)
    low, high = float(values.min()), float(values.max())
    if floating:
        if low >= 0.0 and high <= 1.0:
            return values
        return (values - low) / (high - low) if high > low else np.zeros_like(values)
    top = next((2.0**bits - 1 for bits in INTEGER_DEPTHS if high <= 2**bits - 1), high)
    return np.clip(values, 0.0, None) / top


def to_8bit_rgb(image: Image.Image) -> Image.Image:
    """Grey (8, 12, 16, 32-bit, float), palette and alpha images become 8-bit RGB (grey repeated to 3 channels)."""
    if image.mode.startswith("I") or image.mode == "F":
        unit = _unit_range(np.asarray(image, dtype=np.float64), floating=image.mode == "F")
        image = Image.fromarray(np.round(unit * 255.0).astype(np.uint8))
    return image.convert("RGB")


def open_rgb(path: Path) -> Image.Image:
    """The decoded image as 8-bit RGB at its own size."""
    return to_8bit_rgb(_open(path))


def resize_rgb(image: Image.Image, shape: ImageShape) -> np.ndarray:
    """An RGB image as the model sees it: uint8 array (height, width, 3), resized bilinearly (smaller ones upscaled)."""
    height, width = shape
    return np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.uint8)


def smaller_than(size: ImageShape, shape: ImageShape) -> bool:
    """Whether resizing an image of (height, width) `size` to `shape` enlarges it in either direction."""
    return size[0] < shape[0] or size[1] < shape[1]


def read_rgb(path: Path, size: int | ImageShape) -> np.ndarray:
    """Image as uint8 array (height, width, 3); an int size is a square."""
    return resize_rgb(open_rgb(path), image_shape(size, "image size"))


def read_mask(path: Path, size: int | ImageShape, image_path: Path | None = None) -> np.ndarray:
    """Binary mask as bool array (height, width); an int size is a square; see `mask_pixels`."""
    height, width = image_shape(size, "image size")
    binary = mask_pixels(path, image_path)
    resized = Image.fromarray(binary.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
    return np.asarray(resized) > 127


def mask_pixels(path: Path, image_path: Path | None = None) -> np.ndarray:
    """Binary mask at its own size; any non-zero pixel is anomalous. A folder holds masks merged into one.

    Every mask must have the size of its image if `image_path` is given, else of the folder's first mask.
    """
    files = mask_files(path)
    reference = image_path or files[0]
    expected = _open_size(reference)
    merged = np.zeros(expected[::-1], dtype=bool)
    for file in files:
        mask = _open(file)
        if mask.size != expected:
            what = f"its image {reference.name}" if image_path is not None else reference.name
            raise DataError(
                f"{file}: mask is {mask.size[0]}x{mask.size[1]} but {what} is {expected[0]}x{expected[1]}"
            )
        merged |= _nonzero(mask)
    return merged


def mask_files(path: Path) -> list[Path]:
    """The mask file itself, or the images in a folder of masks (MVTec LOCO: one file per defect region)."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(f"{path}: no mask images in this mask folder")
    return files


def _nonzero(mask: Image.Image) -> np.ndarray:
    """Pixels with any non-zero value in any colour channel (alpha ignored), whatever the mode and bit depth."""
    if mask.mode in ("P", "PA", "YCbCr", "LAB", "HSV"):  # their numbers are no intensities: black need not be 0
        mask = mask.convert("RGBA" if mask.mode == "PA" else "RGB")
    values = np.asarray(mask)
    if values.ndim == 3:
        colour = values[..., :-1] if mask.mode.endswith("A") else values
        return colour.any(axis=-1)
    return values != 0


def _open_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: cannot read image ({exc.__class__.__name__})") from None


def header_shape(path: Path) -> ImageShape:
    """(height, width) of an image file, read from its header only (the pixels are not decoded)."""
    width, height = _open_size(path)
    return height, width


def unit_range(pixels: np.ndarray) -> np.ndarray:
    """8-bit pixel values as float32 in [0, 1]: a uint8 numpy array, or a float torch tensor of 0..255 values."""
    return pixels.astype(np.float32) / 255.0 if isinstance(pixels, np.ndarray) else pixels / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """float [0, 1] -> uint8 [0, 255], rounded: the inverse of `unit_range`."""
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
