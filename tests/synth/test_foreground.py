import numpy as np
import pytest

from mala.synth import foreground_mask, looks_like_object


def bright_disc(centre: tuple[int, int], radius: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy bright disc on a dark background, and its true mask."""
    rows, cols = np.mgrid[:224, :224]
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 < radius**2
    image = np.where(disc, 0.85, 0.15)[..., None] + np.random.default_rng(seed).normal(0, 0.04, (224, 224, 3))
    return np.clip(image, 0, 1).astype(np.float32), disc


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


def test_foreground_of_a_disc_is_found():
    for seed, (centre, radius) in enumerate([((112, 112), 60), ((80, 140), 40), ((150, 60), 25)]):
        image, disc = bright_disc(centre, radius, seed)
        mask = foreground_mask(image)
        assert mask.dtype == bool and mask.shape == disc.shape
        assert iou(mask, disc) > 0.9


def test_discs_look_like_objects_and_noise_does_not():
    discs = [bright_disc((100 + 5 * seed, 110), 50, seed)[0] for seed in range(4)]
    noise = [np.random.default_rng(seed).random((224, 224, 3), dtype=np.float32) for seed in range(4)]
    assert looks_like_object(discs)
    assert not looks_like_object(noise)
    assert foreground_mask(noise[0]).all()


def test_metal_plate_is_an_object_with_a_plausible_foreground(metal_plate_images):
    assert looks_like_object(metal_plate_images)
    for image in metal_plate_images:
        assert 0.2 < foreground_mask(image).mean() < 0.6  # the plate covers about a third


def test_textures_are_not_objects(magnetic_tile_images, texture_samples):
    assert not looks_like_object(magnetic_tile_images)
    for texture_class, images in texture_samples.items():
        assert not looks_like_object(images), texture_class


def test_foreground_keeps_the_original_size(magnetic_tile_full_size):
    image = magnetic_tile_full_size
    assert foreground_mask(image).shape == image.shape[:2]
    assert foreground_mask(image[..., 0]).shape == image.shape[:2]  # grey HxW works too


def test_looks_like_object_needs_images():
    with pytest.raises(ValueError):
        looks_like_object([])
