"""`mala test` and `mala calibrate` one category at a time: the same metrics, thresholds and report files as the
whole test set in one cache; the pixel threshold of all categories from float16 counts (`half_counts`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mala import engine
from mala.data.dataset import ImageCache, enlarged_count
from mala.data import sources
from mala.deploy.calibration import ALL, Calibration
from mala.eval.evaluate import Predictions, category_metrics, known_sections, predict_cache, routed_right
from mala.eval.half_counts import HalfCounts, f1_max_threshold as counted_f1_max_threshold, half_keys
from mala.eval.metrics import f1_max_threshold
from mala.eval.thresholds import thresholds_of
from mala.model.load import load_trained_model
from tests.data.layouts import copy, plate_defects, tile_defects
from tests.conftest import shared_data
from tests.deploy.conftest import save_random_model

CATEGORIES = ["metal_plate", "magnetic_tile"]
HALF_STEP = 2.0 ** -11  # float16 rounds a normal value to within this share of its size


def counted(values: np.ndarray) -> HalfCounts:
    counts = HalfCounts()
    counts.add(half_keys(values))
    return counts


def within_rounding(counted_value: float, exact: float) -> bool:
    return abs(counted_value - exact) <= HALF_STEP * abs(exact) + 2.0 ** -25


@pytest.mark.parametrize("seed", range(5))
def test_counted_thresholds_are_those_of_the_rounded_values(seed):
    """Exact on the values rounded to float16; on the values themselves, a quantile within the rounding, an F1-max
    threshold one with about the same F1 (on a flat curve rounding can move the peak further than the rounding)."""
    rng = np.random.default_rng(seed)
    labels = rng.random(20_000) < 0.05
    values = (rng.random(20_000) ** 3 + 0.4 * labels * rng.random(20_000)).astype(np.float32)
    rounded = values.astype(np.float16).astype(np.float64)
    found = counted_f1_max_threshold(counted(values[labels]), counted(values[~labels]))
    best, f1 = f1_max_threshold(labels, rounded)
    assert found == best
    assert f1 == pytest.approx(f1_max_threshold(labels, values)[1], abs=1e-3)
    for q in (0.0, 0.5, 0.9, 0.995, 1.0):
        quantile = counted(values).quantile(q)
        assert quantile == pytest.approx(np.quantile(rounded, q), rel=1e-12, abs=1e-15)
        assert within_rounding(quantile, float(np.quantile(values.astype(np.float64), q)))


def test_counts_keep_the_order_of_negative_zero_and_tiny_values():
    values = np.array([-3.0, -1e-6, -0.0, 0.0, 1e-7, 1e-4, 0.5, 1.0, 70000.0], dtype=np.float32)
    keys = half_keys(values)
    assert np.all(np.diff(keys.astype(int)) >= 0) and keys[2] == keys[3]  # -0 and +0 share a key
    assert counted(values).quantile(0.0) == -3.0 and counted(values).quantile(1.0) == np.inf  # beyond float16
    assert counted_f1_max_threshold(HalfCounts(), counted(values)) is None
    with pytest.raises(ValueError, match="NaN"):
        half_keys(np.array([0.5, np.nan]))


def two_sets(root: Path, normals: int = 5, defects: int = 6) -> list[Path]:
    """metal_plate and magnetic_tile test images in MVTec layout, 11 each, so that a batch of 16 holds both."""
    plate, tile = root / "metal_plate", root / "magnetic_tile"
    for source, target in ((shared_data("metal_plate"), plate), (shared_data("magnetic_tile"), tile)):
        for image in sorted((source / "test" / "good").iterdir())[:normals]:
            copy(image, target / "test" / "good" / image.name)
        train = sorted((source / "train" / "good").iterdir())[0]  # the layout needs one
        copy(train, target / "train" / "good" / train.name)
    pairs = [(plate, "defect", pair) for pair in plate_defects(defects)]
    pairs += [(tile, "blowhole", pair) for pair in tile_defects("blowhole", defects)]
    for target, defect, (image, mask) in pairs:
        copy(image, target / "test" / defect / image.name)
        copy(mask, target / "ground_truth" / defect / mask.name)
    return [plate, tile]


def whole_cache(checkpoint: Path, roots: list[Path], route: bool = False) -> tuple[ImageCache, Predictions]:
    """The test set in one cache and its predictions, as `mala test` made them before it streamed."""
    model, cfg, info = load_trained_model(checkpoint)
    cache = ImageCache.build(sources.test_samples(sources.scan_roots(roots)), cfg.input_shape)
    known = known_sections(cache, info["categories"])
    predictions = predict_cache(model, cache, cfg, sections=None if route else known)
    if route:
        predictions.routed_right = routed_right(known, predictions.sections)
    return cache, predictions


def assert_same_thresholds(calibration: Calibration, cache: ImageCache, predictions: Predictions) -> None:
    """Each category's entry exactly as on the whole cache; that of all categories too but for the pixel threshold,
    that of the maps rounded to float16."""
    groups = cache.indices_by_category()
    for category, indices in groups.items():
        assert calibration.entries[category] == thresholds_of(cache, predictions, indices, 0.995, 0.995)
    every = np.arange(len(cache.samples))
    exact = thresholds_of(cache, predictions, every, 0.995, 0.995)
    rounded = Predictions(predictions.maps.astype(np.float16).astype(np.float32), predictions.scores)
    streamed = calibration.entries[ALL]
    assert streamed.pixel_threshold == pytest.approx(thresholds_of(cache, rounded, every, 0.995, 0.995).pixel_threshold,
                                                     rel=1e-6)
    assert streamed.pixel_rule == f"{exact.pixel_rule}, map values rounded to float16"
    others = {"pixel_threshold", "pixel_rule"}
    assert {k: v for k, v in vars(streamed).items() if k not in others} == \
        {k: v for k, v in vars(exact).items() if k not in others}
    assert list(calibration.entries) == [ALL, *groups]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> list[Path]:
    return two_sets(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def hybrid_model(tmp_path_factory) -> Path:
    """Random weights with a memory section per category (each image read in its own)."""
    return save_random_model(tmp_path_factory.mktemp("model") / "model.safetensors", CATEGORIES, hybrid=True)


@pytest.mark.parametrize("route", [False, True])
def test_streamed_test_gives_the_whole_cache_metrics_thresholds_and_report(data, hybrid_model, tmp_path, route):
    out = tmp_path / "report"
    results = engine.test(hybrid_model, data, out=out, figures_per_category=2, route=route)
    cache, predictions = whole_cache(hybrid_model, data, route)
    assert results == category_metrics(cache, predictions)  # bit for bit, mean rows included
    assert list(results) == [*sorted(CATEGORIES), "mean"]
    assert_same_thresholds(Calibration.from_dict(json.loads((out / "thresholds.json").read_text())), cache,
                           predictions)
    files = {"metrics.json", "metrics.csv", "table.md", "index.html", "roc_image.png", "roc_pixel.png",
             "thresholds.json", *(f"examples_{category}.png" for category in CATEGORIES)}
    assert {path.name for path in out.iterdir()} == files
    assert all((out / name).stat().st_size > 0 for name in files)


def test_streamed_calibrate_warns_of_enlarged_images_once(data, tmp_path, capsys):
    """At 256 px the tiles (about 230 px high) are enlarged, the plates (512 px) are not."""
    checkpoint = save_random_model(tmp_path / "model.safetensors", CATEGORIES, image_size=256)
    calibration = engine.calibrate(checkpoint, roots=data)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "enlarged" in line]
    enlarged = enlarged_count(sources.test_samples(sources.scan_roots(data)), (256, 256))  # from the headers
    assert 0 < enlarged < 22
    assert len(warnings) == 1 and f"{enlarged} of 22 images are smaller than the model's 256 px" in warnings[0]
    assert_same_thresholds(calibration, *whole_cache(checkpoint, data))
