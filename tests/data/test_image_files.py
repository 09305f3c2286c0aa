"""Finding image files below a folder, through symbolic links to folders too."""

from __future__ import annotations

import shutil

import pytest

from mala.data.images import image_files, require_image_files
from mala.data.unlabeled import unlabeled_samples
from mala.errors import DataError
from tests.conftest import shared_data


def test_linked_folders_are_followed(tmp_path):
    real = tmp_path / "real" / "good"
    real.mkdir(parents=True)
    for path in sorted(shared_data("metal_plate", "train", "good").glob("*.png"))[:3]:
        shutil.copy(path, real / path.name)
    (real / "readme.txt").write_text("not an image")
    assembled = tmp_path / "assembled"
    assembled.mkdir()
    (assembled / "plates").symlink_to(real, target_is_directory=True)
    found = image_files(assembled)
    assert [p.name for p in found] == sorted(p.name for p in real.glob("*.png"))
    samples = unlabeled_samples([assembled])
    assert len(samples) == 3 and {s.category for s in samples} == {"assembled/plates"}


def test_a_folder_without_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images in it or below it"):
        require_image_files(tmp_path)
