"""What the datasets change in the metrics: anomalies without masks count for image metrics only; means per dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mala.data.dataset import ImageCache
from mala.data.samples import Sample
from mala.eval.evaluate import MEAN_ROW, Predictions, category_metrics

SIZE = 8


def _cache_and_predictions(rows: list[tuple[Sample, np.ndarray, float]]) -> tuple[ImageCache, Predictions]:
    """Samples with their anomaly maps and scores; a sample's mask is where its map is 1 (when it has a mask)."""
    samples = [sample for sample, _, _ in rows]
    maps = np.stack([m for _, m, _ in rows]).astype(np.float32)
    masks = {i: maps[i] == 1 for i, s in enumerate(samples) if s.mask_path is not None}
    cache = ImageCache(samples, np.zeros((len(samples), SIZE, SIZE, 3), np.uint8), masks)
    return cache, Predictions(maps, np.array([score for _, _, score in rows]))


def _sample(category: str, label: int, with_mask: bool = True, dataset: str = "d") -> Sample:
    mask = Path("mask.png") if label and with_mask else None
    return Sample(category, Path(f"{category}.png"), "test", label, "dent" if label else "good", mask, dataset)


def _spot() -> np.ndarray:
    anomaly_map = np.zeros((SIZE, SIZE))
    anomaly_map[2:4, 2:4] = 1
    return anomaly_map


def test_an_anomaly_without_mask_counts_for_image_metrics_only():
    everywhere = np.full((SIZE, SIZE), 0.9)  # would be false positives if taken for an all-normal mask
    cache, predictions = _cache_and_predictions([
        (_sample("x", 0), np.zeros((SIZE, SIZE)), 0.1),
        (_sample("x", 1), _spot(), 0.8),
        (_sample("x", 1, with_mask=False), everywhere, 0.05),
    ])
    assert not cache.samples[2].has_mask and cache.samples[0].has_mask
    row = category_metrics(cache, predictions)["x"]
    assert row["pixel_auroc"] == 1.0
    assert row["image_auroc"] == 0.5  # the unmasked anomaly, scored lowest, does count here


def test_means_per_dataset_and_overall():
    rows = []
    for category, dataset, good_score in (("x", "a", 0.1), ("y", "a", 0.9), ("z", "b", 0.1)):
        rows += [(_sample(category, 0, dataset=dataset), np.zeros((SIZE, SIZE)), good_score),
                 (_sample(category, 1, dataset=dataset), _spot(), 0.5)]
    results = category_metrics(*_cache_and_predictions(rows))
    # dataset b has one category, which is its own mean: no b/mean row
    assert list(results) == ["x", "y", "z", "a/mean", MEAN_ROW]
    assert [results[c]["image_auroc"] for c in ("x", "y", "z")] == [1.0, 0.0, 1.0]
    assert results["a/mean"]["image_auroc"] == 0.5
    assert results[MEAN_ROW]["image_auroc"] == pytest.approx(2 / 3)


def test_one_dataset_has_only_the_overall_mean():
    rows = [(_sample(c, label), _spot() if label else np.zeros((SIZE, SIZE)), label) for c in "xy" for label in (0, 1)]
    assert list(category_metrics(*_cache_and_predictions(rows))) == ["x", "y", MEAN_ROW]
