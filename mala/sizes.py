"""The model's image size: an int (square) or [height, width], read, checked and described in one place.

Imports nothing but the errors, so the ONNX runtime path (no torch, no yaml) reads a stored size with it too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from mala.errors import ConfigError

ImageShape = tuple[int, int]  # (height, width) in pixels, as torch orders them
SIZE_FORMS = "an integer (square) or [height, width] of positive integers"
ASPECT = "aspect"  # `--image-size aspect`: chosen from the training images' aspect ratio, never stored
CLI_SIZE = re.compile(r"\s*(\d+)\s*(?:[xX,]\s*(\d+)\s*)?")  # `224`, `320x128` (height x width) or `320,128`


def _positive_int(value: Any) -> int | None:
    """The value as a positive int (YAML's 224 or 224.0), None for anything else (bools, strings, 0, 12.5)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value <= 0:
        return None
    return int(value)


def image_shape(value: Any, where: str = "model.image_size") -> ImageShape:
    """(height, width) of a stored size: an int for a square, or a [height, width] pair."""
    sides = [value] if not isinstance(value, (list, tuple)) else list(value)
    checked = [_positive_int(side) for side in sides]
    if len(checked) not in (1, 2) or None in checked:
        raise ConfigError(f"{where}: expected {SIZE_FORMS}, got {value!r}")
    return (checked[0], checked[-1])


def is_aspect(value: Any) -> bool:
    """True for `aspect` in any case or spacing: a size the training images choose (`--image-size aspect`)."""
    return isinstance(value, str) and value.strip().lower() == ASPECT


def stored_size(shape: ImageShape) -> int | list[int]:
    """The config's form of a shape: an int when square (as every config before rectangles), else [height, width]."""
    height, width = shape
    return height if height == width else [height, width]


def describe_shape(shape: ImageShape) -> str:
    """`224 px` for a square, `320 x 128 px (height x width)` otherwise."""
    height, width = shape
    return f"{height} px" if height == width else f"{height} x {width} px (height x width)"


def parse_size_option(text: str) -> int | list[int]:
    """A size on the command line, `224`, `320x128` or `320,128` (height first), in the config's form."""
    match = CLI_SIZE.fullmatch(text)
    if match is None:
        raise ConfigError(f"{text!r} is no image size: expected SIZE or HEIGHTxWIDTH, e.g. 224 or 320x128")
    return stored_size(image_shape([int(match[1]), int(match[2] or match[1])], f"image size {text!r}"))


def check_multiple(shape: ImageShape, multiple: int, why: str) -> None:
    """Both sides must be multiples of `multiple` (the patch size, or the backbone's coarsest stride)."""
    if any(side % multiple for side in shape):
        raise ConfigError(f"model.image_size {describe_shape(shape)}: each side must be a multiple of {multiple} "
                          f"({why}); e.g. {describe_shape(round_to_multiple(shape, multiple))}")


def round_to_multiple(shape: tuple[float, float], multiple: int) -> ImageShape:
    """Each side rounded to the nearest multiple of `multiple` (halves up), at least one multiple."""
    height, width = (max(1, math.floor(side / multiple + 0.5)) * multiple for side in shape)
    return height, width


def median_aspect_ratio(shapes: Iterable[ImageShape]) -> float:
    """The median height / width of images given as (height, width)."""
    ratios = sorted(height / width for height, width in shapes)
    if not ratios:
        raise ConfigError("no images to take the aspect ratio from")
    middle = len(ratios) // 2
    return ratios[middle] if len(ratios) % 2 else math.sqrt(ratios[middle - 1] * ratios[middle])


def aspect_shape(aspect_ratio: float, area: int, multiple: int) -> ImageShape:
    """(height, width) of about `area` pixels (so about the same token count) with height / width close to
    `aspect_ratio`, each side a multiple of `multiple`."""
    ideal = (math.sqrt(area * aspect_ratio), math.sqrt(area / aspect_ratio))
    return round_to_multiple(ideal, multiple)
