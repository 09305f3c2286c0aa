from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.cli import main
from mala.config import SynthConfig
from mala.errors import DataError
from mala.synth import AnomalySynthesizer, foreground_mask, perlin_mask, write_preview_grid
from tests.conftest import shared_data

SIZE = 224


@pytest.fixture(scope="module")
def synth(texture_dir: Path) -> AnomalySynthesizer:
    return AnomalySynthesizer(SynthConfig(texture_dir=str(texture_dir)), SIZE)


def sample_rng(index: int, epoch: int = 0, seed: int = 0) -> np.random.Generator:
    """The data loader's per-sample stream."""
    return np.random.default_rng([seed, epoch, index])


def test_normal_sample_is_unchanged_with_an_empty_mask(synth, metal_plate_images):
    image = metal_plate_images[0]
    out, mask = synth(image, sample_rng(0), anomalous=False)
    assert np.array_equal(out, image)
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.float32 and not mask.any()


def test_anomalous_sample_changes_the_image_only_inside_its_mask(
    synth, metal_plate_images, magnetic_tile_images
):
    for index, image in enumerate(metal_plate_images + magnetic_tile_images):
        out, mask = synth(image, sample_rng(index), anomalous=True)
        assert out.dtype == np.float32 and out.shape == image.shape
        assert 0 <= out.min() and out.max() <= 1
        assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
        outside = mask == 0
        assert np.array_equal(out[outside], image[outside])  # exactly
        assert not np.array_equal(out[~outside], image[~outside])


def test_blend_of_the_image_with_itself_is_the_image(metal_plate_images):
    # Unaugmented self content: x*(1-m) + (1-b)*x*m + b*x*m = x, up to the content's uint8 rounding.
    cfg = SynthConfig(texture_dir=None, num_augmentations=0)
    image = metal_plate_images[0]
    out, _ = AnomalySynthesizer(cfg, SIZE)(image, sample_rng(0), anomalous=True)
    assert np.abs(out - image).max() <= 0.5 / 255 + 1e-6


def test_local_anomalies_lie_inside_the_foreground(texture_dir, metal_plate_images):
    synth = AnomalySynthesizer(SynthConfig(texture_dir=str(texture_dir), local_prob=1.0), SIZE)
    for index, image in enumerate(metal_plate_images):
        foreground = foreground_mask(image)
        for epoch in range(5):
            _, mask = synth(image, sample_rng(index, epoch), anomalous=True, foreground=foreground)
            assert mask.any()
            assert not mask[~foreground].any()


def test_local_anomaly_falls_back_to_global_when_the_foreground_is_tiny(metal_plate_images):
    synth = AnomalySynthesizer(SynthConfig(local_prob=1.0), SIZE)
    speck = np.zeros((SIZE, SIZE), dtype=bool)
    speck[5, 5] = True
    for index in range(10):
        _, mask = synth(metal_plate_images[0], sample_rng(index), anomalous=True, foreground=speck)
        assert mask.any()


def test_same_seed_same_sample_other_seed_or_epoch_differs(synth, metal_plate_images):
    image = metal_plate_images[1]
    first = synth(image, sample_rng(3), anomalous=True)
    again = synth(image, sample_rng(3), anomalous=True)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for other_rng in (sample_rng(4), sample_rng(3, epoch=1), sample_rng(3, seed=1)):
        other = synth(image, other_rng, anomalous=True)
        assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[1], other[1])


def test_mask_area_distribution_matches_the_documented_bounds():
    # Bounds documented in mala/synth/anomaly.py; global anomalies use perlin_mask as is.
    cfg = SynthConfig()
    areas = np.array([perlin_mask((SIZE, SIZE), sample_rng(index), cfg).mean() for index in range(1000)])
    low, high = np.percentile(areas, [5, 95])
    assert 0.050 <= areas.mean() <= 0.065
    assert 0.018 <= low <= 0.032
    assert 0.085 <= high <= 0.110


def test_textures_are_found_recursively(synth):
    assert len(synth.texture_paths) == 1200  # 10 DTD classes x 120


def test_missing_or_empty_texture_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        AnomalySynthesizer(SynthConfig(texture_dir=str(tmp_path / "nowhere")), SIZE)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match="holds no images"):
        AnomalySynthesizer(SynthConfig(texture_dir=str(tmp_path)), SIZE)


def test_image_of_the_wrong_size_is_rejected(synth):
    with pytest.raises(ValueError, match="expected"):
        synth(np.zeros((100, 100, 3), np.float32), sample_rng(0), anomalous=True)


def test_preview_grid_has_one_row_per_image(synth, metal_plate_images, tmp_path):
    images = metal_plate_images[:2]
    foregrounds = [foreground_mask(image) for image in images]
    out = write_preview_grid(images, synth, tmp_path / "preview" / "grid.png", foregrounds=foregrounds)
    with Image.open(out) as grid:
        width, height = grid.size
        mask_tile = np.asarray(grid.convert("L"))[-SIZE:, 2 * SIZE : 3 * SIZE]
    assert width == 4 * SIZE and height - 2 * SIZE in range(0, 64)  # a title strip on top
    assert set(np.unique(mask_tile)) == {0, 255}


def test_a_rectangular_synthesizer_gives_masks_and_previews_of_its_height_and_width(texture_dir, tmp_path):
    shape = (96, 40)  # height, width
    synth = AnomalySynthesizer(SynthConfig(texture_dir=str(texture_dir), self_texture_prob=0.0), shape)
    image = np.asarray(Image.new("RGB", (40, 96), (128, 64, 32)), dtype=np.float32) / 255
    out, mask = synth(image, sample_rng(0), anomalous=True)
    assert out.shape == (*shape, 3) and mask.shape == shape and mask.any()
    with Image.open(write_preview_grid([image], synth, tmp_path / "grid.png")) as grid:
        assert grid.width == 4 * 40 and grid.height - 96 in range(0, 64)


def test_the_preview_command_takes_a_height_and_width(texture_dir, tmp_path):
    out = tmp_path / "preview.png"
    assert main(["synth-preview", "--data", str(shared_data("metal_plate")), "--textures", str(texture_dir),
                 "--count", "2", "--size", "64x32", "--out", str(out)]) == 0
    with Image.open(out) as grid:
        assert grid.width == 4 * 32 and grid.height - 2 * 64 in range(0, 64)
