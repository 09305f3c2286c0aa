"""The validation split: held-out normals of each category, each with its synthetic anomalies."""

from pathlib import Path

import numpy as np
import pytest

from mala.data.dataset import ImageCache
from mala.data.samples import Sample
from mala.errors import DataError
from mala.synth.validation import CRACK_LENGTH, MIN_CHANGED
from mala.tune.split import MIN_IMAGES, validation_split


def normal_cache(count: int, category: str = "c") -> ImageCache:
    images = np.random.default_rng(0).integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
    return ImageCache([Sample(category, Path(f"n{i}.png"), "train", 0) for i in range(count)], images, {})


def test_small_validation_anomalies_leave_the_split_and_the_large_ones_as_they_were():
    train = normal_cache(10)
    fit, large = validation_split(train, 64)
    fit_both, both = validation_split(train, 64, ("large", "small"))
    assert [s.path for s in fit_both.samples] == [s.path for s in fit.samples]
    assert len(large.samples) == 2 * 2 and len(both.samples) == 2 * 3  # two held normals, each with its anomalies
    kinds = [s.path.stem.split("_", 1)[1] for s in both.samples]
    assert kinds == ["normal", "draem", "crack", "normal", "cut-paste", "speck"]
    assert np.array_equal(both.images[[1, 4]], large.images[[1, 3]])
    small = [2, 5]
    for k in small:
        assert MIN_CHANGED <= both.mask(k).sum() <= 9 * CRACK_LENGTH[1]


def test_broad_validation_anomalies_leave_the_split_and_the_others_as_they_were():
    train = normal_cache(10)
    fit, both = validation_split(train, 64, ("large", "small"))
    fit_all, every = validation_split(train, 64, ("large", "small", "broad"))
    assert [s.path for s in fit_all.samples] == [s.path for s in fit.samples]
    kinds = [s.path.stem.split("_", 1)[1] for s in every.samples]
    assert kinds == ["normal", "draem", "crack", "shade", "normal", "cut-paste", "speck", "shade"]
    assert np.array_equal(every.images[[0, 1, 2, 4, 5, 6]], both.images)
    for k in (3, 7):
        assert every.mask(k).sum() >= MIN_CHANGED


def test_the_split_holds_each_image_once_and_keeps_validation_images_out_of_the_models_training_set():
    train = normal_cache(20)
    fit, validation = validation_split(train, 64, ("small",))
    held = {int(s.path.stem.split("_")[0]) for s in validation.samples}
    assert len(fit.samples) == 16 and len(held) == 4
    assert not {s.path for s in fit.samples} & {s.path for s in validation.samples}
    normals = [k for k, s in enumerate(validation.samples) if s.label == 0]
    fitted = {fit.images[k].tobytes() for k in range(len(fit.samples))}
    assert not any(validation.images[k].tobytes() in fitted for k in normals)


def test_a_category_too_small_to_split_is_named():
    with pytest.raises(DataError, match="'screws' has 3 normal training image"):
        validation_split(normal_cache(MIN_IMAGES - 1, "screws"), 64, ("small",))


def test_a_category_splits_alike_whatever_is_trained_beside_it():
    alone = normal_cache(12, "plate")
    other = normal_cache(9, "anvil")
    both = ImageCache(other.samples + alone.samples, np.concatenate([other.images, alone.images]), {})
    fit, validation = validation_split(alone, 64, ("large", "small", "broad"))
    fit_both, validation_both = validation_split(both, 64, ("large", "small", "broad"))
    plate = [k for k, s in enumerate(validation_both.samples) if s.category == "plate"]
    assert [s.path for s in validation_both.samples if s.category == "plate"] == [s.path for s in validation.samples]
    assert np.array_equal(validation_both.images[plate], validation.images)
    assert {s.path for s in fit_both.samples if s.category == "plate"} == {s.path for s in fit.samples}
