"""From the user's data roots to samples: several roots, one category list, train/test split."""

from __future__ import annotations

from pathlib import Path

from mala.data.mvtec import scan_mvtec
from mala.data.samples import Sample
from mala.errors import DataError


def scan_roots(roots: list[Path], categories: list[str] | None = None) -> list[Sample]:
    """Samples of every category found under the roots (MVTec layout), optionally only `categories`."""
    samples: list[Sample] = []
    seen: dict[str, Path] = {}
    for root in roots:
        found = scan_mvtec(Path(root))
        for category in sorted({s.category for s in found}):
            if category in seen:
                raise DataError(f"category {category!r} is in two roots: {seen[category]} and {root}")
            seen[category] = Path(root)
        samples += found
    if categories:
        missing = sorted(set(categories) - set(seen))
        if missing:
            raise DataError(f"categories not found: {', '.join(missing)} (found: {', '.join(sorted(seen))})")
        samples = [s for s in samples if s.category in set(categories)]
    return samples


def train_samples(samples: list[Sample]) -> list[Sample]:
    return [s for s in samples if s.split == "train" and s.label == 0]


def test_samples(samples: list[Sample]) -> list[Sample]:
    found = [s for s in samples if s.split == "test"]
    if not found:
        raise DataError("no test images found (expected CATEGORY/test/good and CATEGORY/test/DEFECT folders)")
    return found
