"""The procedural `mala demo` dataset: layout, exact masks, determinism, real normal variation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mala.data.procedural import (
    CATEGORIES,
    DEFECTS,
    MAX_DEFECT_AREA,
    MIN_DEFECT_AREA,
    MIN_IMAGE_SIZE,
    README_NAME,
    make_demo_dataset,
    render_scene,
)
from mala.data.sources import scan_roots
from mala.errors import DataError

COUNTS = {"n_train": 3, "n_test_good": 2, "n_test_defect": 3}
OBJECTS = ("washer", "pcb_chip")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    assert make_demo_dataset(root, seed=7, **COUNTS) == list(CATEGORIES)
    return root


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_has_textures_and_objects_with_every_defect() -> None:
    assert len(CATEGORIES) >= 4 and set(OBJECTS) < set(CATEGORIES)
    assert set(DEFECTS) == {"scratch", "spot", "missing", "stain"}


def test_the_scan_finds_every_category_split_and_defect(demo_root: Path) -> None:
    found = Counter((s.category, s.split, s.label, s.defect) for s in scan_roots([demo_root]))
    expected = Counter()
    for category in CATEGORIES:
        expected[(category, "train", 0, "good")] = COUNTS["n_train"]
        expected[(category, "test", 0, "good")] = COUNTS["n_test_good"]
        for defect in DEFECTS:
            expected[(category, "test", 1, defect)] = COUNTS["n_test_defect"]
    assert found == expected
    assert "seed 7" in (demo_root / README_NAME).read_text()


def test_masks_are_exactly_the_changed_pixels_and_lie_on_the_object(demo_root: Path) -> None:
    for sample in scan_roots([demo_root]):
        if not sample.label:
            continue
        image, mask = _pixels(sample.path), _pixels(sample.mask_path)
        scene = render_scene(
            sample.category, "test", sample.defect, int(sample.path.stem), image_size=image.shape[0], seed=7
        )
        changed = (image != scene.pixels()).any(axis=-1)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}, sample.mask_path
        assert np.array_equal(mask == 255, changed), sample.mask_path
        assert MIN_DEFECT_AREA <= changed.mean() <= MAX_DEFECT_AREA, sample.mask_path
        assert not (changed & ~scene.surface).any(), sample.mask_path
        if sample.category in OBJECTS:
            assert scene.surface.mean() < 0.6  # the surface is the object, not the whole image


def test_normal_images_differ_from_each_other(demo_root: Path) -> None:
    for category in CATEGORIES:
        normals = [_pixels(s.path) for s in scan_roots([demo_root], [category]) if not s.label]
        distinct = {image.tobytes() for image in normals}
        assert len(distinct) == len(normals), category


@pytest.mark.parametrize("image_size", [MIN_IMAGE_SIZE, 96])
def test_other_image_sizes(tmp_path: Path, image_size: int) -> None:
    make_demo_dataset(tmp_path, image_size=image_size, n_train=1, n_test_good=0, n_test_defect=1)
    masks = sorted(tmp_path.glob("*/ground_truth/*/*_mask.png"))
    assert len(masks) == len(CATEGORIES) * len(DEFECTS)
    for path in masks:
        mask = _pixels(path)
        assert mask.shape == (image_size, image_size)
        assert MIN_DEFECT_AREA <= (mask == 255).mean() <= MAX_DEFECT_AREA, path


def test_same_seed_same_files_and_other_seed_other_files(tmp_path: Path) -> None:
    small = {"image_size": 48, "n_train": 2, "n_test_good": 1, "n_test_defect": 1}
    first, again, other = tmp_path / "first", tmp_path / "again", tmp_path / "other"
    make_demo_dataset(first, seed=3, **small)
    make_demo_dataset(again, seed=3, **small)
    make_demo_dataset(other, seed=4, **small)
    assert _files(first) == _files(again)
    first_files, other_files = _files(first), _files(other)
    assert first_files.keys() == other_files.keys()
    images = [name for name in first_files if name.endswith(".png")]
    assert all(first_files[name] != other_files[name] for name in images)


def test_regenerating_leaves_no_stale_images(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, image_size=48, n_train=3, n_test_good=1, n_test_defect=1)
    make_demo_dataset(tmp_path, image_size=48, n_train=1, n_test_good=1, n_test_defect=1)
    assert len([s for s in scan_roots([tmp_path]) if s.split == "train"]) == len(CATEGORIES)


def test_refuses_a_folder_that_holds_other_data(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        make_demo_dataset(tmp_path, image_size=48, n_train=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"
