"""One record per image: what every dataset reader returns and every loader consumes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    category: str
    path: Path
    split: str  # "train" or "test"
    label: int  # 0 normal, 1 anomalous
    defect: str = "good"
    mask_path: Path | None = None  # None for normal images (an all-zero mask)


def categories_of(samples: list[Sample]) -> list[str]:
    return sorted({s.category for s in samples})
