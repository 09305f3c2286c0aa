"""The ten DRAEM colour/geometry augmentations of the anomaly content, with Pillow on uint8 images.

Parameter ranges follow DRAEM's imgaug settings, except that ranges which include the identity
(a sharpness or gamma factor near 1, a tiny hue shift) are kept away from it: an augmentation that
leaves the content unchanged would silently make the anomaly less varied.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from mala.data.images import to_uint8, unit_range

Augmentation = Callable[[Image.Image, np.random.Generator], Image.Image]


def _factor_away_from_one(rng: np.random.Generator, low: float, high: float) -> float:
    """A factor from [low, 0.8] or [1.25, high], with equal chance: clearly below or above 1."""
    return rng.uniform(low, 0.8) if rng.random() < 0.5 else rng.uniform(1.25, high)


def _apply_lut(image: Image.Image, lut: np.ndarray) -> Image.Image:
    """Map channel values through a table: 256 entries for all channels, or one row of 256 per channel."""
    per_channel = np.broadcast_to(lut, (len(image.getbands()), 256))
    return image.point(np.clip(np.rint(per_channel), 0, 255).astype(np.uint8).ravel().tolist())


def gamma_contrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Per-channel gamma in [0.5, 2] (imgaug GammaContrast(per_channel=True))."""
    levels = np.arange(256) / 255.0
    gammas = [_factor_away_from_one(rng, 0.5, 2.0) for _ in range(3)]
    return _apply_lut(image, np.stack([255 * levels**gamma for gamma in gammas]))


def brightness(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Multiply by [0.8, 1.2] and add +-[10, 30] (imgaug MultiplyAndAddToBrightness)."""
    multiplier, offset = rng.uniform(0.8, 1.2), rng.uniform(10, 30) * rng.choice([-1, 1])
    return _apply_lut(image, np.arange(256) * multiplier + offset)


def sharpness(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Blur (factor < 1) or sharpen (factor > 1), factor in [0, 2] (pillike.EnhanceSharpness)."""
    return ImageEnhance.Sharpness(image).enhance(_factor_away_from_one(rng, 0.0, 2.0))


def hue_saturation(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Add +-[10, 50] to hue (cyclic) and to saturation (imgaug AddToHueAndSaturation)."""
    hue_shift, saturation_shift = rng.uniform(10, 50, size=2) * rng.choice([-1, 1], size=2)
    levels = np.arange(256)
    lut = np.stack([(levels + round(hue_shift)) % 256, levels + saturation_shift, levels])
    return _apply_lut(image.convert("HSV"), lut).convert("RGB")


def solarize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Invert values above a threshold in [32, 128] (imgaug Solarize)."""
    return ImageOps.solarize(image, threshold=int(rng.integers(32, 129)))


def posterize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 1 to 4 bits per channel (pillike.Posterize)."""
    return ImageOps.posterize(image, int(rng.integers(1, 5)))


def invert(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Negative image (imgaug Invert); draws nothing from rng."""
    return ImageOps.invert(image)


def autocontrast(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Stretch each channel, clipping 2-10 % of each histogram end (pillike.Autocontrast)."""
    return ImageOps.autocontrast(image, cutoff=rng.uniform(2, 10))


def equalize(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Histogram equalisation per channel (pillike.Equalize); draws nothing from rng."""
    return ImageOps.equalize(image)


def rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Rotate by +-[10, 45] degrees, black corners (imgaug Affine(rotate=(-45, 45)))."""
    angle = rng.uniform(10, 45) * rng.choice([-1, 1])
    return image.rotate(angle, resample=Image.Resampling.BILINEAR)


AUGMENTATIONS: dict[str, Augmentation] = {
    augmentation.__name__: augmentation
    for augmentation in (
        gamma_contrast, brightness, sharpness, hue_saturation, solarize,
        posterize, invert, autocontrast, equalize, rotate,
    )
}


def random_augment_uint8(image: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """random_augment on a uint8 HxWx3 array, without the float round trip."""
    if not 0 <= n <= len(AUGMENTATIONS):
        raise ValueError(f"n={n} augmentations requested, only {len(AUGMENTATIONS)} exist")
    names = list(AUGMENTATIONS)
    pil_image = Image.fromarray(image)
    for index in rng.choice(len(names), size=n, replace=False):
        pil_image = AUGMENTATIONS[names[index]](pil_image, rng)
    return np.asarray(pil_image)


def random_augment(image: np.ndarray, rng: np.random.Generator, n: int) -> np.ndarray:
    """Apply n distinct augmentations, chosen at random, in random order to a float32 HxWx3 [0, 1] image."""
    return unit_range(random_augment_uint8(to_uint8(image), rng, n))
