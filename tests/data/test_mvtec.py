"""The MVTec-layout reader and image cache on real data, and their one-line errors on bad input."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.data.dataset import ImageCache
from mala.train.epoch_data import draw_per_category
from mala.data.images import read_mask, read_rgb
from mala.data.sources import scan_roots
from mala.errors import DataError
from tests.conftest import shared_data


def test_counts_of_the_real_datasets():
    counts = Counter((s.category, s.split, s.label) for s in scan_roots([shared_data("magnetic_tile"), shared_data("metal_plate")]))
    assert counts[("magnetic_tile", "train", 0)] == 714
    assert counts[("magnetic_tile", "test", 0)] == 238
    assert counts[("magnetic_tile", "test", 1)] == 115 + 85 + 57 + 32 + 103
    assert counts[("metal_plate", "train", 0)] == 54
    assert counts[("metal_plate", "test", 1)] == 81


def test_masks_match_their_images_and_are_binary():
    samples = [s for s in scan_roots([shared_data("metal_plate")]) if s.label == 1][:3]
    for sample in samples:
        mask = read_mask(sample.mask_path, 64, image_path=sample.path)
        assert mask.dtype == bool and mask.shape == (64, 64) and mask.any()


def _mini_category(root: Path, name: str = "plate") -> Path:
    """A small MVTec-layout category built from real metal_plate files."""
    source = shared_data("metal_plate")
    category = root / name
    for folder in ("train/good", "test/good", "test/defect", "ground_truth/defect"):
        (category / folder).mkdir(parents=True)
    goods = sorted((source / "train" / "good").iterdir())[:3]
    for path in goods:
        shutil.copy(path, category / "train" / "good" / path.name)
    shutil.copy(goods[0], category / "test" / "good" / goods[0].name)
    defect = sorted((source / "test" / "defect").iterdir())[0]
    shutil.copy(defect, category / "test" / "defect" / defect.name)
    mask = source / "ground_truth" / "defect" / f"{defect.stem}_mask.png"
    shutil.copy(mask, category / "ground_truth" / "defect" / mask.name)
    return category


def test_mini_category_reads(tmp_path):
    _mini_category(tmp_path)
    samples = scan_roots([tmp_path])
    assert Counter((s.split, s.label) for s in samples) == {("train", 0): 3, ("test", 0): 1, ("test", 1): 1}
    cache = ImageCache.build(samples, 32, workers=1)
    assert cache.images.shape == (5, 32, 32, 3) and len(cache.masks) == 1


def test_missing_root_names_it(tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        scan_roots([tmp_path / "nowhere"])


def test_root_without_categories(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError, match="no category folders"):
        scan_roots([f"mvtec:{tmp_path}"])


def test_empty_train_folder(tmp_path):
    category = _mini_category(tmp_path)
    for path in (category / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"train/good: no images"):
        scan_roots([tmp_path])


def test_test_image_without_mask_names_the_image(tmp_path):
    category = _mini_category(tmp_path)
    for path in (category / "ground_truth" / "defect").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=r"test/defect/.*: no mask found"):
        scan_roots([tmp_path])


def test_unreadable_image_names_the_file_when_the_cache_is_built(tmp_path):
    category = _mini_category(tmp_path)
    broken = category / "train" / "good" / "broken.png"
    broken.write_bytes(b"not a png at all")
    samples = scan_roots([tmp_path])
    with pytest.raises(DataError, match=r"broken\.png: cannot read image"):
        ImageCache.build(samples, 32, workers=1)


def test_mask_of_the_wrong_size_names_the_mask(tmp_path):
    category = _mini_category(tmp_path)
    mask_path = next((category / "ground_truth" / "defect").iterdir())
    Image.new("L", (100, 80)).save(mask_path)
    with pytest.raises(DataError, match=rf"{mask_path.name}: mask is 100x80 but its image .* is 512x512"):
        ImageCache.build(scan_roots([tmp_path]), 32, workers=1)


def test_image_modes_become_rgb(tmp_path):
    grey16 = tmp_path / "grey16.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(grey16)
    palette = tmp_path / "palette.png"
    Image.new("RGB", (20, 10), (200, 10, 10)).convert("P").save(palette)
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (10, 10), (0, 0, 255, 128)).save(rgba)
    for path in (grey16, palette, rgba):
        image = read_rgb(path, 16)
        assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    grey = read_rgb(grey16, 16)
    assert np.array_equal(grey[..., 0], grey[..., 2]) and grey.max() > 200


def test_per_category_draw_is_balanced_and_repeats_small_categories_evenly():
    rng = np.random.default_rng(0)
    drawn = draw_per_category({"big": np.arange(100), "small": np.arange(100, 105)}, 12, rng)
    assert len(drawn["big"]) == 12 and len(set(drawn["big"])) == 12
    assert sorted(Counter(drawn["small"]).values()) == [2, 2, 2, 3, 3]
