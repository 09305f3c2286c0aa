"""Unlabeled image collections for `mala pretrain`: every image under the given folders, searched recursively.

One category per top-level subfolder (`images/banded` for `images/banded/**`) and one for the images lying directly
in a given folder (`images`), so that the per-category sampling of stage 1 keeps sub-collections of very different
sizes balanced, as it does for product categories. Nothing is treated as a label: a dataset root in MVTec layout
would bring its test images and masks too, so give its `train/good` folders instead.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mala.data.images import require_image_files
from mala.data.samples import Sample
from mala.errors import DataError


def _category(folder_name: str, relative: Path) -> str:
    return folder_name if len(relative.parts) == 1 else f"{folder_name}/{relative.parts[0]}"


def _folder_samples(folder: Path) -> list[Sample]:
    if not folder.is_dir():
        raise DataError(f"{folder}: data folder not found")
    name = folder.resolve().name
    files = require_image_files(folder)
    return [Sample(_category(name, p.relative_to(folder)), p, "train", 0, dataset=name) for p in files]


def unlabeled_samples(folders: list[Path]) -> list[Sample]:
    """Every image under `folders` as a normal training sample; folder names become category names, so must differ."""
    names = Counter(Path(f).resolve().name for f in folders)
    repeated = sorted(name for name, count in names.items() if count > 1)
    if repeated:
        raise DataError(f"two data folders are named {', '.join(repeated)}: their categories would merge; "
                        "give each folder once, under different names (a symbolic link will do)")
    return [sample for folder in folders for sample in _folder_samples(Path(folder))]
