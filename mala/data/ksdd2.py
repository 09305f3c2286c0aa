"""Reader for the original KolektorSDD2 layout, one category `kolektorsdd2`:

    ROOT/train/N.png, ROOT/train/N_GT.png     training images and their ground truth
    ROOT/test/N.png,  ROOT/test/N_GT.png      test images and their ground truth

An image is anomalous when its ground truth has any non-zero pixel, so scanning reads every ground truth.
Training uses the train images with an empty ground truth; testing uses all test images.
"""

from __future__ import annotations

from pathlib import Path

from mala.data.images import mask_pixels
from mala.data.samples import Sample
from mala.data.scanning import (
    Problems, by_stem, choose_categories, image_files, listed_images, reported, required_mask, root_found,
)
from mala.data.specs import DataSource

CATEGORY = "kolektorsdd2"
GT_SUFFIX = "_GT"
DEFECT = "defect"  # KolektorSDD2 names no defect types


def _sample(image: Path, truth: Path, split: str, problems: Problems) -> Sample | None:
    """Labelled by its ground truth's pixels; None with the problem reported if they cannot be read."""
    pixels = reported(lambda: mask_pixels(truth, image), problems)
    if pixels is None:
        return None
    if pixels.any():
        return Sample(CATEGORY, image, split, 1, DEFECT, truth)
    return Sample(CATEGORY, image, split, 0)


def _split_samples(root: Path, split: str, problems: Problems) -> list[Sample]:
    folder = root / split
    files = listed_images(folder, problems)
    truths = by_stem([p for p in files if p.stem.endswith(GT_SUFFIX)], problems, strip=GT_SUFFIX)
    samples = []
    for image in image_files(folder, problems, [p for p in files if not p.stem.endswith(GT_SUFFIX)]):
        truth = required_mask(image, truths, folder / f"{image.stem}{GT_SUFFIX}.png", problems)
        sample = None if truth is None else _sample(image, truth, split, problems)
        if sample is not None:
            samples.append(sample)
    return samples


def read_ksdd2(source: DataSource, problems: Problems) -> list[Sample]:
    """Train and test samples of its one category."""
    if not root_found(source.root, problems) or not choose_categories({CATEGORY: source.root}, source, problems):
        return []
    return _split_samples(source.root, "train", problems) + _split_samples(source.root, "test", problems)
