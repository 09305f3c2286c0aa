"""Reader for a generic folder layout: one category from folders named in `--data` or a data config.

    normal=DIR          normal training images
    test=DIR1;DIR2;...  test images; each folder's name is its defect (`good`: normal images)
    masks=DIR           optional masks matched to test images by name (STEM.png or STEM_mask.png), taken from
                        MASKS/DEFECT/ where that folder exists, else from MASKS/ itself

An anomalous image without a mask counts for image metrics only (its Sample has no mask_path).
"""

from __future__ import annotations

from pathlib import Path

from mala.data.samples import Sample
from mala.data.scanning import Problems, by_stem, choose_categories, image_files, listed_images
from mala.data.specs import DataSource

GOOD = "good"


class _Masks:
    """The masks of each defect by image name, each folder listed once; a mask may belong to one image only."""

    def __init__(self, root: Path | None, problems: Problems):
        self.root, self.problems = root, problems
        self.by_folder: dict[Path, dict[str, Path]] = {}
        self.owner: dict[Path, Path] = {}

    def of(self, image: Path, defect: str) -> Path | None:
        if self.root is None:
            return None
        folder = self.root / defect if (self.root / defect).is_dir() else self.root
        if folder not in self.by_folder:
            self.by_folder[folder] = by_stem(listed_images(folder, self.problems), self.problems, strip="_mask")
        mask = self.by_folder[folder].get(image.stem)
        if mask in self.owner:  # two test folders share a flat mask folder and an image name
            self.problems.append(f"{image}: its mask {mask} would also be {self.owner[mask]}'s; "
                                 f"put each test folder's masks in {self.root}/DEFECT")
            return None
        if mask is not None:
            self.owner[mask] = image
        return mask


def _test_samples(source: DataSource, category: str, problems: Problems) -> list[Sample]:
    masks = _Masks(source.masks, problems)
    samples = []
    for folder in source.test:
        for image in image_files(folder, problems):
            if folder.name == GOOD:
                samples.append(Sample(category, image, "test", 0))
            else:
                samples.append(Sample(category, image, "test", 1, folder.name, masks.of(image, folder.name)))
    return samples


def read_folder(source: DataSource, problems: Problems) -> list[Sample]:
    """Normal training images and test images of its one category (`category`, or else the dataset name)."""
    category = source.category or source.dataset_name()
    if not choose_categories({category: source.normal}, source, problems):
        return []
    normal = [Sample(category, image, "train", 0) for image in image_files(source.normal, problems)]
    return normal + _test_samples(source, category, problems)
