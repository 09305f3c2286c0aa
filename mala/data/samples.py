"""One record per image: what every dataset reader returns and every loader consumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "validation", "test")  # "validation": extra normal images (MVTec LOCO) that training ignores


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
