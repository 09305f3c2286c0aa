"""Choosing decision thresholds on labelled or normal-only data (`mala test`, `mala calibrate`).

F1-max where the data has both classes; with only normal images, a high quantile of their scores (pixels), so that
about (1 - quantile) of normal images (pixels) are flagged.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mala.data.dataset import ImageCache
from mala.deploy.calibration import ALL, Calibration, Thresholds
from mala.eval.evaluate import Predictions, add_categories, pixels_at_model_size, with_known_pixels
from mala.eval.half_counts import HalfCounts, half_keys
from mala.eval.half_counts import f1_max_threshold as half_f1_max_threshold
from mala.errors import DataError
from mala.eval.metrics import f1_max_threshold

DEFAULT_QUANTILE = 0.995


def image_threshold(labels: np.ndarray, scores: np.ndarray, quantile: float) -> tuple[float, str]:
    """F1-max with both classes present, else the quantile of the normal scores."""
    best = f1_max_threshold(labels, scores)
    if best is not None:
        return best[0], "F1-max"
    normal = scores[np.asarray(labels) == 0]
    if normal.size == 0:
        raise DataError("a threshold needs normal images, or normal and anomalous ones")
    return float(np.quantile(normal, quantile)), f"{quantile:g} quantile of {normal.size} normal images"


def pixel_threshold(masks: np.ndarray | None, maps_with_masks: np.ndarray | None, normal_maps: np.ndarray,
                    quantile: float) -> tuple[float, str]:
    """F1-max over the pixels of images with known masks when anomalous pixels are among them, else the quantile
    of the normal images' pixels."""
    best = None if masks is None or not masks.any() else f1_max_threshold(masks, maps_with_masks)
    return pixel_rule(None if best is None else best[0], normal_maps.size,
                      lambda: float(np.quantile(normal_maps, quantile)), quantile)


def counts_pixel_threshold(anomalous: HalfCounts, normal: HalfCounts, of_normal_images: HalfCounts,
                           quantile: float) -> tuple[float, str]:
    """`pixel_threshold` of pixels counted as float16 values (`half_counts`): anomalous and normal pixels of the
    images with known masks, and the pixels of normal images."""
    rule = pixel_rule(half_f1_max_threshold(anomalous, normal), of_normal_images.size,
                      lambda: of_normal_images.quantile(quantile), quantile)
    return rule[0], f"{rule[1]}, map values rounded to float16"


def pixel_rule(f1_max: float | None, normal_pixels: int, normal_quantile: Callable[[], float],
               quantile: float) -> tuple[float, str]:
    """The F1-max threshold where there is one, else the quantile of normal pixels (computed only then)."""
    if f1_max is not None:
        return f1_max, "F1-max over pixels"
    if normal_pixels == 0:
        raise DataError("a pixel threshold needs normal images, or anomalous ones with masks")
    return normal_quantile(), f"{quantile:g} quantile of normal pixels"


def choose_thresholds(labels: np.ndarray, scores: np.ndarray, maps: np.ndarray, has_mask: np.ndarray,
                      masks: np.ndarray | None, quantile: float = DEFAULT_QUANTILE,
                      pixel_quantile: float = DEFAULT_QUANTILE) -> Thresholds:
    """Thresholds and normalisation range for one set of images.

    `maps` (N, H, W) of all images; `has_mask` marks the images whose pixels are known (normal ones and anomalous
    ones with a mask) and `masks` holds their masks in the same order (None when no image has one)."""
    labels = np.asarray(labels)
    known = maps[has_mask] if masks is not None else None
    pixel = pixel_threshold(masks, known, maps[labels == 0], pixel_quantile)
    return thresholds_with(labels, scores, quantile, pixel, (float(maps.min()), float(maps.max())))


def thresholds_with(labels: np.ndarray, scores: np.ndarray, quantile: float, pixel: tuple[float, str],
                    pixel_range: tuple[float, float]) -> Thresholds:
    """The image threshold and range chosen on `labels` and `scores`, with a pixel threshold and range chosen before."""
    image_value, image_rule = image_threshold(labels, scores, quantile)
    return Thresholds(image_value, pixel[0], float(scores.min()), float(scores.max()), *pixel_range, image_rule,
                      pixel[1], int(len(scores)))


def thresholds_of(cache: ImageCache, predictions: Predictions, indices: np.ndarray, quantile: float,
                  pixel_quantile: float) -> Thresholds:
    labels = np.array([cache.samples[i].label for i in indices])
    known = with_known_pixels(cache, indices)
    masks = pixels_at_model_size(cache, predictions.maps, known)[0] if len(known) else None
    has_mask = np.isin(indices, known)
    return choose_thresholds(labels, predictions.scores[indices], predictions.maps[indices], has_mask, masks,
                             quantile, pixel_quantile)


class ThresholdsCollector:
    """Each category's thresholds as it is added (exact, `thresholds_of`), and what the entry of all categories
    together needs: every image's label and score, the maps' range, and the maps' pixels counted in `HalfCounts`.

    The pixel threshold of all categories is chosen on those counts, so that no more than one category's maps are
    held at once: exact for the map values rounded to float16 (within 2^-11 of each value's size, see `HalfCounts`).
    A category's own entry and the image threshold of all are exact as before."""

    def __init__(self, quantile: float = DEFAULT_QUANTILE, pixel_quantile: float = DEFAULT_QUANTILE):
        self.quantile, self.pixel_quantile = quantile, pixel_quantile
        self.entries: dict[str, Thresholds] = {}
        self.labels: list[np.ndarray] = []
        self.scores: list[np.ndarray] = []
        self.anomalous_pixels, self.normal_pixels = HalfCounts(), HalfCounts()  # of images with known masks
        self.normal_image_pixels = HalfCounts()

    def add(self, category: str, cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> None:
        self.entries[category] = thresholds_of(cache, predictions, indices, self.quantile, self.pixel_quantile)
        self.labels.append(np.array([cache.samples[i].label for i in indices]))
        self.scores.append(predictions.scores[indices])
        for index in indices:  # one image at a time: no copy of the category's pixels
            keys = half_keys(predictions.maps[index])
            if cache.samples[index].has_mask:  # its pixels are known (`with_known_pixels`)
                mask = cache.mask(index)
                self.anomalous_pixels.add(keys[mask])
                self.normal_pixels.add(keys[~mask])
            if cache.samples[index].label == 0:
                self.normal_image_pixels.add(keys)

    def all_categories(self) -> Thresholds:
        """The entry of all categories together: `choose_thresholds` of every image, with `counts_pixel_threshold`."""
        pixel = counts_pixel_threshold(self.anomalous_pixels, self.normal_pixels, self.normal_image_pixels,
                                       self.pixel_quantile)
        entries = self.entries.values()
        pixel_range = (min(e.pixel_min for e in entries), max(e.pixel_max for e in entries))
        return thresholds_with(np.concatenate(self.labels), np.concatenate(self.scores), self.quantile, pixel,
                               pixel_range)

    def calibration(self, chosen_by: str, data: list[str]) -> Calibration:
        return Calibration({ALL: self.all_categories(), **self.entries}, chosen_by, data)


def calibrate(cache: ImageCache, predictions: Predictions, chosen_by: str, data: list[str],
              quantile: float = DEFAULT_QUANTILE, pixel_quantile: float = DEFAULT_QUANTILE) -> Calibration:
    """Thresholds for all images together and for each category on its own (see `ThresholdsCollector`)."""
    collector = ThresholdsCollector(quantile, pixel_quantile)
    add_categories(cache, predictions, collector)
    return collector.calibration(chosen_by, data)
