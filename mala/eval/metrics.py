"""Exact anomaly-detection metrics as MVTec AD and anomalib report them: AUROC, AP, F1-max and AUPRO.

Every metric is read from the same counts: for each distinct score of the positives (highest first), how many
positives and negatives score at or above it. Lowering the threshold past a score that no positive has only adds
false positives, so these thresholds hold every corner of the ROC, precision-recall and PRO curves, and ties are
handled as scikit-learn does (all samples with equal scores enter together). The negatives only need their values
sorted, never an argsort: on 20 M float32 values `np.sort` takes 0.4 s and `np.argsort` 7 s (stable: 11 s).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MetricsRow = dict[str, float | None]  # metric name -> value, None where undefined (no anomalies, no masks)
MetricsTable = dict[str, MetricsRow]  # row name (a category, a dataset's mean, the mean) -> its metrics

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class _Counts:
    """Counts at each distinct score of the positives, highest score first."""

    n_positives: int
    n_negatives: int
    thresholds: np.ndarray  # the distinct scores of the positives, highest first
    true_positives: np.ndarray  # positives scoring at or above the threshold
    false_positives: np.ndarray  # negatives scoring at or above the threshold
    false_positives_above: np.ndarray  # negatives scoring strictly above the threshold
    region_overlap: np.ndarray | None  # PRO: summed region weights of the positives at or above the threshold

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        return self._curve(self.true_positives / self.n_positives)

    def auroc(self) -> float:
        return _area_up_to(*self.roc(), 1.0)

    def average_precision(self) -> float:
        precision = self.true_positives / (self.true_positives + self.false_positives)
        recall_gain = np.diff(self.true_positives, prepend=0)
        return float(np.sum(recall_gain * precision) / self.n_positives)

    def f1(self) -> np.ndarray:
        # 2PR / (P + R) with P = tp / (tp + fp) and R = tp / positives.
        return 2 * self.true_positives / (self.true_positives + self.false_positives + self.n_positives)

    def f1_max(self) -> float:
        return float(self.f1().max())

    def aupro(self, fpr_limit: float) -> float:
        assert self.region_overlap is not None, "AUPRO needs counts built with region weights"
        fpr, pro = self._curve(self.region_overlap)
        return _area_up_to(fpr, pro, fpr_limit) / fpr_limit

    def _curve(self, heights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """FPR and height at every corner: flat while only negatives pass, one straight step per positive score."""
        heights_before = np.concatenate(([0.0], heights[:-1]))
        fpr = np.column_stack((self.false_positives_above, self.false_positives)).ravel() / self.n_negatives
        return (
            np.concatenate(([0.0], fpr, [1.0])),
            np.concatenate(([0.0], np.column_stack((heights_before, heights)).ravel(), heights[-1:])),
        )


def _area_up_to(x: np.ndarray, y: np.ndarray, x_limit: float) -> float:
    """Trapezoid area under the polyline (x nondecreasing from 0) from 0 to x_limit, interpolating y at x_limit."""
    end = int(np.searchsorted(x, x_limit, side="right"))
    x_in, y_in = x[:end], y[:end]
    area = float(np.sum(np.diff(x_in) * (y_in[1:] + y_in[:-1])) / 2)  # np.trapezoid needs numpy 2
    if end < len(x) and x[end - 1] < x_limit:
        x0, x1, y0, y1 = x[end - 1], x[end], y[end - 1], y[end]
        y_limit = y0 + (y1 - y0) * (x_limit - x0) / (x1 - x0)
        area += float((x_limit - x0) * (y0 + y_limit) / 2)
    return area


def _binary_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels
    if not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be boolean or 0/1")
    return labels != 0


def _counts(labels: np.ndarray, scores: np.ndarray, positive_weights: np.ndarray | None = None) -> _Counts | None:
    """Counts for binary labels and scores of the same shape; None when either class is missing."""
    labels, scores = _binary_labels(labels).ravel(), np.asarray(scores).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"{labels.size} labels but {scores.size} scores")
    positives = scores[labels]
    negatives = scores[~labels]
    if positives.size == 0 or negatives.size == 0:
        return None
    negatives.sort()
    if positive_weights is None:
        positives = np.sort(positives)[::-1]
    else:  # weights must follow their pixels; positives are few pixels in anomaly segmentation
        order = np.argsort(positives)[::-1]
        positives, positive_weights = positives[order], positive_weights[order]
    if np.isnan(positives[0]) or np.isnan(negatives[-1]):  # NaN sorts last
        raise ValueError("scores contain NaN")
    group_ends = np.append(np.flatnonzero(positives[1:] != positives[:-1]), positives.size - 1)
    thresholds = positives[group_ends]
    return _Counts(
        n_positives=positives.size,
        n_negatives=negatives.size,
        thresholds=thresholds,
        true_positives=group_ends + 1,
        false_positives=negatives.size - np.searchsorted(negatives, thresholds, side="left"),
        false_positives_above=negatives.size - np.searchsorted(negatives, thresholds, side="right"),
        region_overlap=None if positive_weights is None else np.cumsum(positive_weights)[group_ends],
    )


def _region_weights(masks: np.ndarray) -> np.ndarray:
    """Weight of each anomalous pixel (in `masks[masks]` order): 1 / (number of regions * size of its region)."""
    n_regions = 0
    region_size_of_pixel = [np.zeros(0, dtype=np.intp)]  # lets concatenate work when there is no region
    for mask in masks:
        if mask.any():  # labelling per image skips the normal ones and is faster than one 3-D label call
            regions, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
            region_of_pixel = regions[mask]
            region_size_of_pixel.append(np.bincount(region_of_pixel)[region_of_pixel])
            n_regions += count
    return 1.0 / (n_regions * np.concatenate(region_size_of_pixel))


def _pixel_counts(masks: np.ndarray, maps: np.ndarray) -> _Counts | None:
    masks, maps = _binary_labels(masks), np.asarray(maps)
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise ValueError(f"masks {masks.shape} and maps {maps.shape} must both be (N, H, W)")
    return _counts(masks, maps, _region_weights(masks))


def _check_fpr_limit(fpr_limit: float) -> None:
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")


def auroc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; None when only one class is present."""
    counts = _counts(labels, scores)
    return None if counts is None else counts.auroc()


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """False and true positive rates at every corner of the ROC curve, and its area (`auroc`); None with one class."""
    counts = _counts(labels, scores)
    if counts is None:
        return None
    fpr, tpr = counts.roc()
    return fpr, tpr, _area_up_to(fpr, tpr, 1.0)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision (step-wise, as scikit-learn); None when only one class is present."""
    counts = _counts(labels, scores)
    return None if counts is None else counts.average_precision()


def f1_max(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Highest F1 over all thresholds; None when only one class is present."""
    counts = _counts(labels, scores)
    return None if counts is None else counts.f1_max()


def f1_max_threshold(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float] | None:
    """The threshold with the highest F1 (a score at or above it is positive) and that F1; None with one class."""
    counts = _counts(labels, scores)
    if counts is None:
        return None
    best = int(np.argmax(counts.f1()))
    return float(counts.thresholds[best]), float(counts.f1()[best])


def aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float | None:
    """Area under the per-region-overlap curve up to fpr_limit, divided by fpr_limit; None without anomalous or
    without normal pixels."""
    _check_fpr_limit(fpr_limit)
    counts = _pixel_counts(masks, maps)
    return None if counts is None else counts.aupro(fpr_limit)


def _summary(counts: _Counts | None, prefix: str) -> MetricsRow:
    names = (f"{prefix}_auroc", f"{prefix}_ap", f"{prefix}_f1_max")
    if counts is None:
        return dict.fromkeys(names)
    return dict(zip(names, (counts.auroc(), counts.average_precision(), counts.f1_max())))


def compute_metrics(
    image_labels: np.ndarray,
    image_scores: np.ndarray,
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    fpr_limit: float = 0.3,
) -> MetricsRow:
    """Image and pixel AUROC, AP and F1-max plus pixel AUPRO; a metric is None where it is undefined."""
    _check_fpr_limit(fpr_limit)
    if (masks is None) != (maps is None):
        raise ValueError("give both masks and maps, or neither")
    pixel_counts = None if masks is None else _pixel_counts(masks, maps)
    return {
        **_summary(_counts(image_labels, image_scores), "image"),
        **_summary(pixel_counts, "pixel"),
        "pixel_aupro": None if pixel_counts is None else pixel_counts.aupro(fpr_limit),
    }
