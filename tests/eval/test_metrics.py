"""Metrics against scikit-learn and a slow, direct AUPRO reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from mala.eval.metrics import aupro, auroc, average_precision, compute_metrics, f1_max


def sklearn_f1_max(labels: np.ndarray, scores: np.ndarray) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision),
                   where=precision + recall > 0)
    return float(f1.max())


def binary_cases() -> list:
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    return [
        pytest.param(labels, rng.random(500), id="random"),
        pytest.param(labels, rng.random(500).astype(np.float32), id="random float32"),
        pytest.param(labels, np.round(rng.random(500) * 3), id="heavy ties"),
        pytest.param(labels, np.minimum(rng.random(500), 0.7), id="ties at the top"),
        pytest.param(labels, np.full(500, 0.5), id="constant"),
        pytest.param(labels.astype(int), rng.integers(0, 5, 500), id="integer labels and scores"),
        pytest.param(labels, labels + rng.random(500) * 0.5, id="perfect"),
        pytest.param(labels, ~labels + rng.random(500) * 0.5, id="inverted"),
        pytest.param(np.array([0, 1]), np.array([0.4, 0.2]), id="two samples"),
        pytest.param(np.array([1, 0, 1]), np.array([0.3, 0.3, 0.3]), id="three tied samples"),
    ]


@pytest.mark.parametrize(("labels", "scores"), binary_cases())
def test_binary_metrics_equal_sklearn(labels: np.ndarray, scores: np.ndarray) -> None:
    assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    assert f1_max(labels, scores) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)


def test_binary_metrics_equal_sklearn_on_many_small_inputs() -> None:
    rng = np.random.default_rng(1)
    for _ in range(100):
        size = int(rng.integers(2, 30))
        labels = np.arange(size) < rng.integers(1, size)  # both classes present
        scores = np.round(rng.random(size), int(rng.integers(0, 3)))
        assert auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert average_precision(labels, scores) == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
        assert f1_max(labels, scores) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-6)


@pytest.mark.parametrize("labels", [np.zeros(5, dtype=bool), np.ones(5, dtype=bool), np.zeros(0, dtype=bool)])
def test_one_class_gives_none(labels: np.ndarray) -> None:
    scores = np.linspace(0, 1, labels.size)
    assert auroc(labels, scores) is None
    assert average_precision(labels, scores) is None
    assert f1_max(labels, scores) is None


@pytest.mark.parametrize(
    ("labels", "scores", "message"),
    [
        (np.array([0, 1, 1]), np.array([0.1, np.nan, 0.3]), "NaN"),
        (np.array([0, 1, 1]), np.array([0.1, 0.3]), "labels but"),
        (np.array([0, 1, 2]), np.array([0.1, 0.2, 0.3]), "0/1"),
    ],
)
def test_invalid_inputs_raise(labels: np.ndarray, scores: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        auroc(labels, scores)


def blob_masks(rng: np.random.Generator, n_images: int = 6, size: int = 16) -> np.ndarray:
    """Random discs, some overlapping or touching; the first image is normal."""
    rows, cols = np.mgrid[:size, :size]
    masks = np.zeros((n_images, size, size), dtype=bool)
    for mask in masks[1:]:
        for _ in range(rng.integers(1, 4)):
            row, col, radius = rng.integers(0, size), rng.integers(0, size), rng.uniform(1, 4)
            mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    return masks


def reference_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float) -> float:
    """PRO and FPR at every distinct threshold, integrated segment by segment up to fpr_limit."""
    regions = [(image, labelled == region)
               for image, mask in enumerate(masks)
               for labelled, count in [ndimage.label(mask, structure=np.ones((3, 3)))]
               for region in range(1, count + 1)]
    normal_scores = maps[~masks]
    points = [(0.0, 0.0)]
    for threshold in sorted(set(maps.ravel().tolist()), reverse=True):
        fpr = np.mean(normal_scores >= threshold)
        pro = np.mean([np.mean(maps[image][region] >= threshold) for image, region in regions])
        points.append((fpr, pro))
    points.append((1.0, 1.0))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= fpr_limit:
            break
        if x1 > fpr_limit:
            x1, y1 = fpr_limit, y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / fpr_limit


@pytest.mark.parametrize("decimals", [None, 1, 0])
@pytest.mark.parametrize("fpr_limit", [0.3, 0.05, 1.0])
def test_aupro_equals_reference(decimals: int | None, fpr_limit: float) -> None:
    rng = np.random.default_rng(2)
    masks = blob_masks(rng)
    maps = (rng.random(masks.shape) + masks).astype(np.float32)
    if decimals is not None:
        maps = np.round(maps, decimals)
    assert aupro(masks, maps, fpr_limit) == pytest.approx(reference_aupro(masks, maps, fpr_limit), abs=1e-6)


def test_aupro_perfect_and_inverted_maps() -> None:
    masks = blob_masks(np.random.default_rng(3))
    maps = masks + np.random.default_rng(4).random(masks.shape, dtype=np.float32) * 0.5
    assert aupro(masks, maps) == pytest.approx(1.0)
    assert aupro(masks, -maps) == pytest.approx(0.0, abs=1e-9)


def test_aupro_regions_are_eight_connected() -> None:
    masks = np.zeros((1, 5, 5), dtype=bool)
    masks[0, [0, 1, 3], [0, 1, 3]] = True  # one diagonal region of two pixels and a single pixel
    maps = np.zeros((1, 5, 5), dtype=np.float32)
    maps[0, [0, 3], [0, 3]] = 2.0  # half of the first region and the whole second region
    # PRO jumps to (1/2 + 1) / 2 = 0.75 at FPR 0, then rises linearly to 1 at FPR 1: 0.825 at FPR 0.3.
    assert aupro(masks, maps) == pytest.approx((0.75 + 0.825) / 2)


def test_aupro_without_regions_or_normal_pixels_is_none() -> None:
    maps = np.random.default_rng(5).random((2, 4, 4), dtype=np.float32)
    assert aupro(np.zeros(maps.shape, dtype=bool), maps) is None
    assert aupro(np.ones(maps.shape, dtype=bool), maps) is None


def test_compute_metrics_matches_the_single_metrics() -> None:
    rng = np.random.default_rng(6)
    masks = blob_masks(rng)
    maps = (rng.random(masks.shape) + masks).astype(np.float32)
    image_labels, image_scores = masks.any(axis=(1, 2)), maps.max(axis=(1, 2))
    assert compute_metrics(image_labels, image_scores, masks, maps, fpr_limit=0.2) == {
        "image_auroc": auroc(image_labels, image_scores),
        "image_ap": average_precision(image_labels, image_scores),
        "image_f1_max": f1_max(image_labels, image_scores),
        "pixel_auroc": auroc(masks, maps),
        "pixel_ap": average_precision(masks, maps),
        "pixel_f1_max": f1_max(masks, maps),
        "pixel_aupro": aupro(masks, maps, fpr_limit=0.2),
    }


@pytest.mark.parametrize("masks", [None, np.zeros((3, 4, 4), dtype=bool)], ids=["no masks", "no anomalous pixel"])
def test_compute_metrics_pixel_metrics_none_without_anomalous_pixels(masks: np.ndarray | None) -> None:
    maps = None if masks is None else np.random.default_rng(7).random(masks.shape, dtype=np.float32)
    metrics = compute_metrics(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), masks, maps)
    assert metrics["image_auroc"] == 1.0
    assert all(metrics[name] is None for name in ("pixel_auroc", "pixel_ap", "pixel_f1_max", "pixel_aupro"))


def test_compute_metrics_rejects_masks_without_maps() -> None:
    with pytest.raises(ValueError, match="both"):
        compute_metrics(np.array([0, 1]), np.array([0.1, 0.2]), masks=np.zeros((2, 4, 4), dtype=bool))
