"""Reader for the original Magnetic Tile (MT) defect layout, one category `magnetic_tile`:

    ROOT/MT_Free/Imgs/*.jpg                          normal images, split into train and test (see below)
    ROOT/MT_<Defect>/Imgs/*.jpg and same-name *.png  anomalous test images and their masks (defect: <defect>)

Images are the non-PNG files of an Imgs folder, masks the PNG ones. The normal images, sorted by name, are
shuffled with `numpy.random.default_rng(seed)`; the first 75% (rounded) train, the rest test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mala.data.samples import Sample
from mala.data.scanning import (
    Problems, by_stem, choose_categories, image_files, listed_images, masked_samples, root_found,
)
from mala.data.specs import DataSource

CATEGORY = "magnetic_tile"
NORMAL_FOLDER = "MT_Free"
DEFECT_PREFIX = "MT_"
TRAIN_SHARE = 0.75


def _is_mask(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def _normal_samples(root: Path, seed: int, problems: Problems) -> list[Sample]:
    folder = root / NORMAL_FOLDER / "Imgs"
    images = image_files(folder, problems, [p for p in listed_images(folder, problems) if not _is_mask(p)])
    shuffled = np.random.default_rng(seed).permutation(len(images))
    train = set(shuffled[: round(TRAIN_SHARE * len(images))].tolist())
    return [Sample(CATEGORY, image, "train" if i in train else "test", 0) for i, image in enumerate(images)]


def _defect_samples(defect_dir: Path, problems: Problems) -> list[Sample]:
    folder = defect_dir / "Imgs"
    files = listed_images(folder, problems)
    images = image_files(folder, problems, [p for p in files if not _is_mask(p)])
    masks = by_stem([p for p in files if _is_mask(p)], problems)
    defect = defect_dir.name.removeprefix(DEFECT_PREFIX).lower()
    return masked_samples(CATEGORY, defect, images, masks, lambda image: image.with_suffix(".png"), problems)


def read_mt(source: DataSource, problems: Problems) -> list[Sample]:
    """Normal (split by `source.seed`) and anomalous samples of its one category."""
    if not root_found(source.root, problems) or not choose_categories({CATEGORY: source.root}, source, problems):
        return []
    samples = _normal_samples(source.root, source.seed, problems)
    for defect_dir in sorted(source.root.glob(f"{DEFECT_PREFIX}*")):
        if defect_dir.is_dir() and defect_dir.name != NORMAL_FOLDER:
            samples += _defect_samples(defect_dir, problems)
    return samples
