"""Foreground of a normal image by simple segmentation, for local (on-object) synthetic anomalies.

The rule assumes an object photographed on a plain background that reaches the image border, as in
MVTec AD, VisA and MPDD object categories: foreground pixels are those whose colour differs from the
border colour (median of the border pixels) by more than an Otsu threshold, and by more than 95 % of
the border pixels themselves do; the second condition is what makes textures come out as "no
object", because their border is as varied as their interior.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from mala.data.images import to_uint8, unit_range
from mala.errors import ConfigError

if TYPE_CHECKING:
    from mala.data.dataset import ImageCache
    from mala.data.samples import Sample

WORK_SIZE = 128  # segment at this resolution: fast, and fine detail does not matter for a region mask
MIN_COVERAGE = 0.02  # less than this: noise or a speck, not an object
MAX_COVERAGE = 0.90  # more than this: the object is the whole image (texture-like)
BORDER_QUANTILE = 0.95  # tolerates an object touching a few per cent of the border
MIN_OBJECT_SHARE = 0.8  # share of sample images that must show a proper object
OBJECT_PROBE = 8  # normal images per category that `object_categories` gives `looks_like_object`


def _resize(array: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """Resize a uint8 HxW or HxWx3 array to size (width, height) with Pillow."""
    return np.asarray(Image.fromarray(array).resize(size, resample))


def _to_work_size(image: np.ndarray) -> np.ndarray:
    """float32 HxWx3 image in [0, 1] at WORK_SIZE on its long side (grey HxW repeated to 3 channels)."""
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    height, width = rgb.shape[:2]
    scale = WORK_SIZE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return unit_range(_resize(to_uint8(rgb), size, Image.Resampling.BILINEAR))


def _border(array: np.ndarray) -> np.ndarray:
    """The pixels of the outermost rows and columns, stacked along the first axis."""
    return np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])


def _otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that maximises the between-class variance of values (Otsu 1979)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between_variance = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[np.argmax(between_variance)])


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + np.argmax(sizes)


def _clean(mask: np.ndarray) -> np.ndarray:
    """Remove specks, close gaps and holes, keep the largest region."""
    mask = ndimage.binary_opening(mask, iterations=2)
    # Pad before closing so regions touching the border are not eaten by the border effect.
    mask = ndimage.binary_closing(np.pad(mask, 2, mode="edge"), iterations=2)[2:-2, 2:-2]
    return _largest_component(ndimage.binary_fill_holes(mask))


def _segment(image: np.ndarray, known_object: bool) -> np.ndarray:
    """Raw foreground at WORK_SIZE: far from the border colour, then cleaned."""
    small = _to_work_size(image)
    distance = np.linalg.norm(small - np.median(_border(small), axis=0), axis=2)
    threshold = _otsu_threshold(distance)
    if not known_object:  # the border condition tells textures from objects; a known object needs no such test
        threshold = max(threshold, float(np.quantile(_border(distance), BORDER_QUANTILE)))
    return _clean(distance > threshold)


def foreground_mask(image: np.ndarray, known_object: bool = False) -> np.ndarray:
    """Boolean HxW foreground of a float [0, 1] HxWx3 (or HxW) image; all True when no object is found.

    known_object: the image is known to show an object (set by hand), which may touch the image border: the
    colour threshold alone decides, without the border condition that makes textures come out as no object.
    """
    height, width = image.shape[:2]
    mask = _segment(image, known_object)
    if not MIN_COVERAGE <= mask.mean() <= MAX_COVERAGE:
        return np.ones((height, width), dtype=bool)
    return _resize(mask.astype(np.uint8) * 255, (width, height), Image.Resampling.BILINEAR) > 127


def looks_like_object(images: list[np.ndarray]) -> bool:
    """Whether a category shows objects (local anomalies apply) rather than a texture.

    Rule: at least MIN_OBJECT_SHARE (80 %) of the given normal images have a foreground that covers
    MIN_COVERAGE to MAX_COVERAGE (2-90 %) of the image, i.e. foreground_mask finds an object rather
    than falling back to the whole image. A handful of images (say 5-10) is enough.
    """
    if not images:
        raise ValueError("looks_like_object needs at least one image")
    found = [not foreground_mask(image).all() for image in images]
    return float(np.mean(found)) >= MIN_OBJECT_SHARE


def object_categories(cache: ImageCache, configured: list[str] | None = None,
                      by_hand: dict[str, bool] | None = None) -> list[str]:
    """The categories whose anomalies go on the foreground: `by_hand` (synth.objects) first, then the `configured`
    list (synth.object_categories) if given, else `looks_like_object` on `OBJECT_PROBE` of each category's images."""
    by_hand = by_hand or {}
    indices_by_category = cache.indices_by_category()
    unknown = sorted(set(by_hand) - set(indices_by_category))
    if unknown:
        raise ConfigError(f"synth.objects names {', '.join(unknown)}, not among the training categories "
                          f"({', '.join(sorted(indices_by_category))})")
    chosen = []
    for category, indices in indices_by_category.items():
        if category in by_hand:
            is_object = by_hand[category]
        elif configured is not None:
            is_object = category in configured
        else:
            is_object = looks_like_object([unit_range(cache.images[i]) for i in indices[:OBJECT_PROBE]])
        if is_object:
            chosen.append(category)
    return sorted(chosen)


def probe_samples(samples: list[Sample]) -> list[Sample]:
    """The images `object_categories` looks at, in their order: the first `OBJECT_PROBE` of each category (a cache
    of these alone decides as the cache of all the images does)."""
    seen: Counter[str] = Counter()
    probes = []
    for sample in samples:
        seen[sample.category] += 1
        if seen[sample.category] <= OBJECT_PROBE:
            probes.append(sample)
    return probes
