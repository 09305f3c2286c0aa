"""Decision thresholds stored with a model, and anomalib's normalisation that puts them at 0.5.

An image (pixel) is anomalous when its score (map value) is at or above the threshold. Thresholds are chosen
where the model is tested or calibrated (`mala.eval.thresholds`). Normalised values are `clip((x - threshold) / (max - min) + 0.5, 0, 1)`, with min and max
seen on the same data, as anomalib's min-max normalisation does: the threshold becomes 0.5 and most values fall in
[0, 1] without clipping. numpy only: this module runs on line PCs without torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from mala.errors import CheckpointError

ALL = "all categories"  # the entry chosen on every category together


@dataclass(frozen=True)
class Thresholds:
    image_threshold: float
    pixel_threshold: float
    image_min: float
    image_max: float
    pixel_min: float
    pixel_max: float
    image_rule: str  # how the image threshold was chosen, e.g. "F1-max" or "0.995 quantile of 200 normal images"
    pixel_rule: str
    images: int  # images it was chosen on

    def normalized_score(self, scores: np.ndarray) -> np.ndarray:
        return normalize(scores, self.image_threshold, self.image_min, self.image_max)

    def normalized_map(self, maps: np.ndarray) -> np.ndarray:
        return normalize(maps, self.pixel_threshold, self.pixel_min, self.pixel_max)

    @property
    def shifts(self) -> tuple[float, float, float, float]:
        """Image threshold and spread, pixel threshold and spread: what `rescale` reads (the exported graph's table)."""
        return (self.image_threshold, spread(self.image_min, self.image_max),
                self.pixel_threshold, spread(self.pixel_min, self.pixel_max))


def spread(low: float, high: float) -> float:
    return high - low if high > low else 1.0


def normalize(values: np.ndarray, threshold: float, low: float, high: float) -> np.ndarray:
    """anomalib's min-max normalisation: the threshold maps to 0.5."""
    return rescale(values, threshold, spread(low, high))


def rescale(values: np.ndarray, threshold: Any, spread: Any) -> np.ndarray:
    """`(values - threshold) / spread + 0.5` clipped to [0, 1]: numbers and numpy arrays (as float32) here, torch
    tensors (thresholds and spreads one per image) in the exported graph (`graph.ExportedGraph`), so both normalise
    alike."""
    if isinstance(values, (np.ndarray, np.generic, float, int)):
        values = np.asarray(values, dtype=np.float32)
    return ((values - threshold) / spread + 0.5).clip(0.0, 1.0)


@dataclass(frozen=True)
class Calibration:
    """Thresholds for all categories together (`ALL`) and for each category of the calibration data."""

    entries: dict[str, Thresholds]
    chosen_by: str  # "mala test" or "mala calibrate"
    data: list[str] = field(default_factory=list)  # where the images came from

    def thresholds(self, category: str | None = None) -> Thresholds:
        """The category's thresholds, or those of all categories together when `category` is None."""
        key = ALL if category is None else category
        if key not in self.entries:
            known = ", ".join(sorted(k for k in self.entries if k != ALL)) or "none"
            raise CheckpointError(f"no thresholds for category '{category}' (calibrated categories: {known})")
        return self.entries[key]

    def routed_thresholds(self, category: str | None) -> Thresholds:
        """What decides an image routed to `category`: its own thresholds, or all categories' where it has none."""
        return self.entries[category] if category in self.entries else self.thresholds()

    def to_dict(self) -> dict[str, Any]:
        return {"chosen_by": self.chosen_by, "data": self.data,
                "entries": {name: asdict(entry) for name, entry in self.entries.items()}}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Calibration:
        try:
            entries = {name: Thresholds(**entry) for name, entry in raw["entries"].items()}
            return cls(entries, raw["chosen_by"], list(raw.get("data", [])))
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"stored thresholds are malformed ({exc})") from None
