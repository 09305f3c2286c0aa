"""Reader for the MVTec AD folder layout (also MPDD, BTAD, converted MT and the `mala demo` data).

    ROOT/CATEGORY/train/good/*            normal training images
    ROOT/CATEGORY/test/good/*             normal test images
    ROOT/CATEGORY/test/DEFECT/*           anomalous test images
    ROOT/CATEGORY/ground_truth/DEFECT/STEM_mask.png   (or STEM.png) their masks

ROOT may also be a single category folder (one that holds `train/`).
"""

from __future__ import annotations

from pathlib import Path

from mala.data.images import IMAGE_SUFFIXES
from mala.data.samples import Sample
from mala.errors import DataError


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def category_dirs(root: Path) -> list[Path]:
    """Category folders under an MVTec-layout root (or the root itself if it is one category)."""
    if not root.is_dir():
        raise DataError(f"{root}: data folder not found")
    if (root / "train").is_dir():
        return [root]
    found = sorted(p for p in root.iterdir() if (p / "train").is_dir())
    if not found:
        raise DataError(f"{root}: no category folders with a train/ subfolder (expected ROOT/CATEGORY/train/good)")
    return found


def _find_mask(category_dir: Path, defect: str, image: Path) -> Path:
    folder = category_dir / "ground_truth" / defect
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{image}: no mask found (looked for {folder / (image.stem + '_mask.png')})")


def _train_samples(category_dir: Path) -> list[Sample]:
    good = category_dir / "train" / "good"
    if not good.is_dir():
        raise DataError(f"{good}: folder of normal training images not found")
    files = _image_files(good)
    if not files:
        raise DataError(f"{good}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return [Sample(category_dir.name, p, "train", 0) for p in files]


def _test_samples(category_dir: Path) -> list[Sample]:
    test = category_dir / "test"
    if not test.is_dir():
        return []
    samples = []
    for defect_dir in sorted(p for p in test.iterdir() if p.is_dir()):
        defect = defect_dir.name
        for image in _image_files(defect_dir):
            if defect == "good":
                samples.append(Sample(category_dir.name, image, "test", 0))
            else:
                mask = _find_mask(category_dir, defect, image)
                samples.append(Sample(category_dir.name, image, "test", 1, defect, mask))
    return samples


def scan_mvtec(root: Path, categories: list[str] | None = None) -> list[Sample]:
    """All train and test samples of the chosen categories (all when None)."""
    dirs = category_dirs(Path(root))
    if categories:
        by_name = {d.name: d for d in dirs}
        missing = [c for c in categories if c not in by_name]
        if missing:
            raise DataError(f"{root}: categories not found: {', '.join(missing)} (found: {', '.join(by_name)})")
        dirs = [by_name[c] for c in categories]
    samples: list[Sample] = []
    for category_dir in dirs:
        samples += _train_samples(category_dir) + _test_samples(category_dir)
    return samples
