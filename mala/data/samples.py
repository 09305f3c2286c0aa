"""One record per image: what every dataset reader returns and every loader consumes."""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")  # "validation": extra normal images (MVTec LOCO) that training ignores


def category_seed(category: str) -> int:
    """A number of a category's name, the same in every process (unlike hash()): it seeds the category's own random
    draws, so that they do not depend on which other categories are beside it."""
    return zlib.crc32(category.encode())


@dataclass(frozen=True)
class Sample:
    category: str
    path: Path
    split: str  # one of SPLITS
    label: int  # 0 normal, 1 anomalous
    defect: str = "good"
    # None for normal images (an all-zero mask) and for anomalous images whose mask is unknown (see has_mask).
    # A folder stands for several masks merged into one (MVTec LOCO: one file per defect region).
    mask_path: Path | None = None
    dataset: str = ""  # the dataset (data root) the image comes from; categories are unique across datasets

    @property
    def has_mask(self) -> bool:
        """Whether its pixels are known: normal images (all normal) and anomalous ones with a mask."""
        return self.label == 0 or self.mask_path is not None


def categories_of(samples: list[Sample]) -> list[str]:
    return sorted({s.category for s in samples})
