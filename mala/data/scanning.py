"""What the dataset readers share: listing image folders, matching masks by file name, choosing categories, and
collecting problems. A reader reports every problem it meets and goes on; strict callers raise the first."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mala.data.images import IMAGE_SUFFIXES, mask_files
from mala.data.samples import Sample
from mala.data.specs import DataSource
from mala.errors import DataError

Problems = list[str]  # one-line messages, each naming the file or folder at fault
T = TypeVar("T")


def listed_images(folder: Path, problems: Problems) -> list[Path]:
    """The image files of a folder, sorted; a missing folder is a problem."""
    if not folder.is_dir():
        problems.append(f"{folder}: folder not found")
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def by_stem(files: list[Path], problems: Problems, strip: str = "") -> dict[str, Path]:
    """Files by name without extension and without a trailing `strip`; a second file of the same name is a problem."""
    found: dict[str, Path] = {}
    for path in files:
        key = path.stem.removesuffix(strip)
        if key in found:
            problems.append(f"{path}: same name as {found[key].name} in its folder (files are matched by name "
                            "without extension; keep one)")
        else:
            found[key] = path
    return found


def image_files(folder: Path, problems: Problems, listed: list[Path] | None = None) -> list[Path]:
    """The images of a folder that must hold some, one per name; `listed`: those that count, if not all of them."""
    files = list(by_stem(listed_images(folder, problems) if listed is None else listed, problems).values())
    if not files and folder.is_dir():
        problems.append(f"{folder}: no images (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def root_found(root: Path, problems: Problems) -> bool:
    if not root.is_dir():
        problems.append(f"{root}: data folder not found")
    return root.is_dir()


def required_mask(image: Path, masks: dict[str, Path], expected: Path, problems: Problems) -> Path | None:
    """The mask of an anomalous image, by its name; none is a problem (`expected`: where it was looked for)."""
    found = masks.get(image.stem)
    if found is None:
        problems.append(f"{image}: no mask found (looked for {expected})")
    return found


def masked_samples(category: str, defect: str, images: list[Path], masks: dict[str, Path],
                   expected: Callable[[Path], Path], problems: Problems) -> list[Sample]:
    """Anomalous test samples with their masks (files, or folders of them) found by name; none is a problem."""
    samples = []
    for image in images:
        mask = required_mask(image, masks, expected(image), problems)
        if mask is not None and reported(lambda: mask_files(mask), problems):
            samples.append(Sample(category, image, "test", 1, defect, mask))
    return samples


def choose_categories(found: dict[str, T], source: DataSource, problems: Problems) -> dict[str, T]:
    """The categories the source asks for (all when it names none); names it lacks are a problem."""
    if source.categories is None:
        return found
    missing = [c for c in source.categories if c not in found]
    if missing:
        problems.append(f"{source.describe()}: categories not found: {', '.join(missing)} "
                        f"(found: {', '.join(found) or 'none'})")
    return {c: found[c] for c in source.categories if c in found}


def reported(call: Callable[[], T], problems: Problems) -> T | None:
    """The call's result, or None with its DataError reported as a problem."""
    try:
        return call()
    except DataError as exc:
        problems.append(str(exc))
        return None


def raise_first(problems: Problems) -> None:
    """Raise the first problem as a one-line DataError that says how many more there are."""
    if problems:
        more = f" (and {len(problems) - 1} more problems: `mala check-data` lists them all)" if problems[1:] else ""
        raise DataError(problems[0] + more)
