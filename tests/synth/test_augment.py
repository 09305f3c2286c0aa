import numpy as np
import pytest
from PIL import Image

from mala.synth import AUGMENTATIONS, random_augment
from mala.synth import augment as augment_module
from mala.data.images import to_uint8


def test_there_are_the_ten_draem_augmentations():
    assert len(AUGMENTATIONS) == 10


@pytest.mark.parametrize("name", sorted(AUGMENTATIONS))
def test_each_augmentation_changes_a_real_image_and_keeps_its_shape(name, metal_plate_images):
    original = Image.fromarray(to_uint8(metal_plate_images[0]))
    for seed in range(5):
        changed = AUGMENTATIONS[name](original, np.random.default_rng(seed))
        assert changed.mode == "RGB" and changed.size == original.size
        changed_share = (np.asarray(changed) != np.asarray(original)).mean()
        # Sharpness only touches edges, about 15 % of the values of this smooth plate.
        assert changed_share > 0.1, f"{name} (seed {seed}) changed {changed_share:.1%} of the values"


@pytest.mark.parametrize("n", [0, 1, 3, 10])
def test_random_augment_applies_n_distinct_augmentations(n, metal_plate_images, monkeypatch):
    applied: list[str] = []
    for name, augmentation in AUGMENTATIONS.items():
        def recording(image, rng, name=name, augmentation=augmentation):
            applied.append(name)
            return augmentation(image, rng)

        monkeypatch.setitem(augment_module.AUGMENTATIONS, name, recording)
    random_augment(metal_plate_images[0], np.random.default_rng(0), n)
    assert len(applied) == n and len(set(applied)) == n


def test_random_augment_keeps_float_range_shape_and_is_seeded(metal_plate_images, magnetic_tile_images):
    for image in (metal_plate_images[0], magnetic_tile_images[0]):
        out = random_augment(image, np.random.default_rng(1), 3)
        assert out.dtype == np.float32 and out.shape == image.shape
        assert out.min() >= 0 and out.max() <= 1
        assert np.abs(out - image).mean() > 0.01
        assert np.array_equal(out, random_augment(image, np.random.default_rng(1), 3))
        assert not np.array_equal(out, random_augment(image, np.random.default_rng(2), 3))


def test_too_many_augmentations_is_an_error(metal_plate_images):
    with pytest.raises(ValueError, match="11"):
        random_augment(metal_plate_images[0], np.random.default_rng(0), 11)
