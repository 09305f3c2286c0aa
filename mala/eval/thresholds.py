"""Choosing decision thresholds on labelled or normal-only data (`mala test`, `mala calibrate`).

F1-max where the data has both classes; with only normal images, a high quantile of their scores (pixels), so that
about (1 - quantile) of normal images (pixels) are flagged.
"""

from __future__ import annotations

import numpy as np

from mala.data.dataset import ImageCache
from mala.deploy.calibration import ALL, Calibration, Thresholds
from mala.eval.evaluate import Predictions, pixels_at_model_size, with_known_pixels
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
    if best is not None:
        return best[0], "F1-max over pixels"
    if normal_maps.size == 0:
        raise DataError("a pixel threshold needs normal images, or anomalous ones with masks")
    return float(np.quantile(normal_maps, quantile)), f"{quantile:g} quantile of normal pixels"


def choose_thresholds(labels: np.ndarray, scores: np.ndarray, maps: np.ndarray, has_mask: np.ndarray,
                      masks: np.ndarray | None, quantile: float = DEFAULT_QUANTILE,
                      pixel_quantile: float = DEFAULT_QUANTILE) -> Thresholds:
    """Thresholds and normalisation range for one set of images.

    `maps` (N, H, W) of all images; `has_mask` marks the images whose pixels are known (normal ones and anomalous
    ones with a mask) and `masks` holds their masks in the same order (None when no image has one)."""
    labels = np.asarray(labels)
    image_value, image_rule = image_threshold(labels, scores, quantile)
    known = maps[has_mask] if masks is not None else None
    pixel_value, pixel_rule = pixel_threshold(masks, known, maps[labels == 0], pixel_quantile)
    return Thresholds(image_value, pixel_value, float(scores.min()), float(scores.max()),
                      float(maps.min()), float(maps.max()), image_rule, pixel_rule, int(len(scores)))


def thresholds_of(cache: ImageCache, predictions: Predictions, indices: np.ndarray, quantile: float,
                  pixel_quantile: float) -> Thresholds:
    labels = np.array([cache.samples[i].label for i in indices])
    known = with_known_pixels(cache, indices)
    masks = pixels_at_model_size(cache, predictions.maps, known)[0] if len(known) else None
    has_mask = np.isin(indices, known)
    return choose_thresholds(labels, predictions.scores[indices], predictions.maps[indices], has_mask, masks,
                             quantile, pixel_quantile)


def calibrate(cache: ImageCache, predictions: Predictions, chosen_by: str, data: list[str],
              quantile: float = DEFAULT_QUANTILE, pixel_quantile: float = DEFAULT_QUANTILE) -> Calibration:
    """Thresholds for all images together and for each category on its own."""
    groups = {ALL: np.arange(len(cache.samples)), **cache.indices_by_category()}
    entries = {name: thresholds_of(cache, predictions, indices, quantile, pixel_quantile)
               for name, indices in groups.items()}
    return Calibration(entries, chosen_by, data)
