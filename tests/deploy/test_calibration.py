"""Thresholds: F1-max and quantile rules, anomalib's normalisation, and their storage with the model."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import precision_recall_curve

from mala.deploy.calibration import ALL, Calibration, normalize
from mala.deploy.graph import read_calibration, store_calibration
from mala.errors import CheckpointError, DataError
from mala.eval.metrics import f1_max_threshold
from mala.eval.thresholds import choose_thresholds, image_threshold, pixel_threshold


def test_f1_max_threshold_matches_scikit_learn():
    rng = np.random.default_rng(0)
    labels = rng.random(500) < 0.3
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # rounded: many ties
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    threshold, best = f1_max_threshold(labels, scores)
    assert best == pytest.approx(f1[:-1].max(), abs=1e-9)
    assert threshold == pytest.approx(thresholds[np.argmax(f1[:-1])])


def test_f1_max_threshold_needs_both_classes():
    assert f1_max_threshold(np.zeros(5), np.arange(5.0)) is None


def test_quantile_of_normal_scores_when_there_are_no_anomalies():
    scores = np.arange(1000.0)
    value, rule = image_threshold(np.zeros(1000), scores, 0.99)
    assert value == pytest.approx(np.quantile(scores, 0.99))
    assert np.mean(scores >= value) == pytest.approx(0.01, abs=0.002)
    assert "0.99 quantile of 1000 normal images" == rule


def test_pixel_threshold_falls_back_to_normal_pixels_without_anomalous_masks():
    maps = np.random.default_rng(1).random((4, 8, 8))
    value, rule = pixel_threshold(np.zeros((4, 8, 8), bool), maps, maps, 0.9)
    assert value == pytest.approx(np.quantile(maps, 0.9)) and "quantile" in rule
    masks = maps > 0.7  # the map separates the pixels perfectly
    value, rule = pixel_threshold(masks, maps, maps[:0], 0.9)
    assert rule == "F1-max over pixels" and value == pytest.approx(maps[masks].min())


def test_choose_thresholds_uses_only_images_with_known_pixels():
    rng = np.random.default_rng(2)
    maps = rng.random((3, 4, 4)).astype(np.float32)
    maps[2] = 5.0  # an anomalous image without a mask: must not enter the pixel threshold
    masks = np.zeros((2, 4, 4), bool)
    masks[1, :2] = True
    maps[1, :2] += 1.0
    thresholds = choose_thresholds(np.array([0, 1, 1]), np.array([0.1, 0.9, 0.8]), maps,
                                   np.array([True, True, False]), masks)
    assert thresholds.pixel_threshold == pytest.approx(maps[1, :2].min())
    assert thresholds.image_rule == "F1-max" and thresholds.image_threshold == pytest.approx(0.8)
    assert (thresholds.pixel_min, thresholds.pixel_max) == (pytest.approx(maps.min()), 5.0)


def test_no_normal_images_is_a_clear_error():
    with pytest.raises(DataError, match="needs normal images"):
        image_threshold(np.ones(3), np.arange(3.0), 0.99)


def test_normalisation_puts_the_threshold_at_one_half_and_clips():
    values = np.array([0.2, 0.4, 0.6, 5.0, -5.0])
    normalized = normalize(values, threshold=0.4, low=0.0, high=0.8)
    np.testing.assert_allclose(normalized, [0.25, 0.5, 0.75, 1.0, 0.0], atol=1e-6)
    assert normalize(np.array([3.0]), 3.0, 1.0, 1.0)[0] == 0.5  # a constant range does not divide by zero


def _calibration() -> Calibration:
    rng = np.random.default_rng(3)
    maps = rng.random((6, 4, 4)).astype(np.float32)
    entry = choose_thresholds(np.array([0, 0, 0, 1, 1, 1]), rng.random(6), maps, np.ones(6, bool),
                              maps > 0.8)
    return Calibration({ALL: entry, "metal_plate": entry}, "mala calibrate", ["somewhere"])


def test_calibration_is_stored_with_the_model_and_read_back(checkpoint):
    assert read_calibration(checkpoint) is None
    calibration = _calibration()
    store_calibration(checkpoint, calibration)
    assert read_calibration(checkpoint) == calibration
    assert read_calibration(checkpoint.parent) == calibration  # a run folder stands for its model


def test_unknown_category_lists_the_calibrated_ones():
    with pytest.raises(CheckpointError, match=r"no thresholds for category 'screw'.*metal_plate"):
        _calibration().thresholds("screw")


def test_malformed_stored_thresholds_are_a_clear_error():
    with pytest.raises(CheckpointError, match="malformed"):
        Calibration.from_dict({"entries": {ALL: {"image_threshold": 1.0}}, "chosen_by": "x"})
