"""Reader for the MVTec AD folder layout (also MVTec LOCO, MPDD, BTAD, converted MT and the `mala demo` data).

    ROOT/CATEGORY/train/good/*                      normal training images
    ROOT/CATEGORY/validation/good/*                 MVTec LOCO: more normal images, split "validation" (not trained on)
    ROOT/CATEGORY/test/good/*                       normal test images
    ROOT/CATEGORY/test/DEFECT/*                     anomalous test images
    ROOT/CATEGORY/ground_truth/DEFECT/STEM_mask.png their masks (or STEM.png),
    ROOT/CATEGORY/ground_truth/DEFECT/STEM/*.png    or a folder of masks merged into one (MVTec LOCO)

ROOT may also be a single category folder (one that holds `train/`).
"""

from __future__ import annotations

from pathlib import Path

from mala.data.samples import Sample
from mala.data.scanning import (
    Problems, by_stem, choose_categories, image_files, listed_images, masked_samples, root_found,
)
from mala.data.specs import DataSource

GOOD = "good"


def category_dirs(root: Path, problems: Problems) -> dict[str, Path]:
    """Category folders by name under an MVTec-layout root (or the root itself if it is one category)."""
    if not root_found(root, problems):
        return {}
    if (root / "train").is_dir():
        return {root.name: root}
    found = {p.name: p for p in sorted(root.iterdir()) if (p / "train").is_dir()}
    if not found:
        problems.append(f"{root}: no category folders with a train/ subfolder (expected ROOT/CATEGORY/train/good)")
    return found


def _normal_samples(category_dir: Path, split: str, problems: Problems) -> list[Sample]:
    good = category_dir / split / GOOD
    if not good.is_dir():
        if split == "train":  # the others are optional
            problems.append(f"{good}: folder of normal training images not found")
        return []
    return [Sample(category_dir.name, p, split, 0) for p in image_files(good, problems)]


def _mask_index(folder: Path, problems: Problems) -> dict[str, Path]:
    """The masks of one defect by image name: STEM_mask.png, STEM.png or a folder STEM/ of masks."""
    if not folder.is_dir():
        return {}
    mask_folders = sorted(p for p in folder.iterdir() if p.is_dir())
    return by_stem(listed_images(folder, problems) + mask_folders, problems, strip="_mask")


def _anomalous_samples(category_dir: Path, defect_dir: Path, problems: Problems) -> list[Sample]:
    truth = category_dir / "ground_truth" / defect_dir.name
    images = image_files(defect_dir, problems)
    return masked_samples(category_dir.name, defect_dir.name, images, _mask_index(truth, problems),
                          lambda image: truth / f"{image.stem}_mask.png", problems)


def _test_samples(category_dir: Path, problems: Problems) -> list[Sample]:
    test = category_dir / "test"
    if not test.is_dir():
        return []
    defect_dirs = sorted(p for p in test.iterdir() if p.is_dir())
    if not defect_dirs:
        problems.append(f"{test}: no image folders (expected test/good and test/DEFECT)")
    samples = []
    for defect_dir in defect_dirs:
        if defect_dir.name == GOOD:
            samples += _normal_samples(category_dir, "test", problems)
        else:
            samples += _anomalous_samples(category_dir, defect_dir, problems)
    return samples


def read_mvtec(source: DataSource, problems: Problems) -> list[Sample]:
    """All samples of the source's categories."""
    samples: list[Sample] = []
    for category_dir in choose_categories(category_dirs(source.root, problems), source, problems).values():
        for split in ("train", "validation"):
            samples += _normal_samples(category_dir, split, problems)
        samples += _test_samples(category_dir, problems)
    return samples
