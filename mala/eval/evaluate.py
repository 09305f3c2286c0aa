"""Run a trained model over test images and compute per-category metrics and their means."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader

from mala.config import MalaConfig
from mala.data.dataset import ImageCache, TestImages
from mala.eval.full_resolution import pixels_at_original_size
from mala.eval.metrics import MetricsRow, MetricsTable, compute_metrics
from mala.model import MALA
from mala.model.maps import scores_and_maps
from mala.model.memory import UNKNOWN
from mala.progress import progress

MEAN_ROW = "mean"


@dataclass
class Predictions:
    maps: np.ndarray  # (N, H, W) float32 anomaly maps in [0, 1] (reconstruction error for that pipeline)
    scores: np.ndarray  # (N,) image scores
    sections: np.ndarray | None = None  # (N,) the memory section each image was read in, UNKNOWN where none was
    routed_right: np.ndarray | None = None  # routed images: 1 if to their own category's section, NaN if unknown


def known_sections(cache: ImageCache, model_categories: list[str]) -> np.ndarray:
    """Each sample's memory section: its category's place among the model's categories, `UNKNOWN` (routed) for a
    category the model was not trained on."""
    places = {category: place for place, category in enumerate(model_categories)}
    return np.array([places.get(sample.category, UNKNOWN) for sample in cache.samples], dtype=np.int64)


@torch.no_grad()
def predict_cache(model: MALA, cache: ImageCache, cfg: MalaConfig, batch_size: int = 16, device: str = "cpu",
                  sections: np.ndarray | None = None) -> Predictions:
    """Maps at `cfg.input_shape` (stitched with tiling) and image scores (eq. 7 on those maps), each image read in
    its memory section (`known_sections`; None: every image routed, in the same pass), and the sections read."""
    model = model.to(device).eval()
    maps = np.empty((len(cache.samples), *cfg.input_shape), dtype=np.float32)
    scores = np.empty(len(cache.samples), dtype=np.float64)
    read = np.full(len(cache.samples), UNKNOWN, dtype=np.int64)
    tiles_per_image = cfg.tile_grid.count if cfg.tile_grid else 1  # about `batch_size` model inputs per forward
    loader = DataLoader(TestImages(cache), batch_size=max(1, batch_size // tiles_per_image))
    for images, _, _, indices in progress(loader, desc="testing", unit="batch", leave=False):
        chosen = None if sections is None else torch.from_numpy(sections[indices.numpy()]).to(device)
        batch_scores, batch_maps, batch_sections = scores_and_maps(model, images.to(device), cfg, chosen)
        maps[indices.numpy()] = batch_maps.float().cpu().numpy()
        scores[indices.numpy()] = batch_scores.float().cpu().numpy()
        if batch_sections is not None:
            read[indices.numpy()] = torch.as_tensor(batch_sections).cpu().numpy()
    return Predictions(maps, scores, read)


def routed_right(known: np.ndarray, routed: np.ndarray) -> np.ndarray:
    """1 where an image was routed to its own category's section, else 0; NaN for categories the model lacks."""
    return np.where(known == UNKNOWN, np.nan, (routed == known).astype(float))


def pixels_at_model_size(cache: ImageCache, maps: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks and maps (n, H, W) of the given samples, at the size the model saw them."""
    return np.stack([cache.mask(i) for i in indices]), maps[indices]


def with_known_pixels(cache: ImageCache, indices: np.ndarray) -> np.ndarray:
    """The samples whose pixels are known: normal images and anomalous ones with a mask (`Sample.has_mask`)."""
    return indices[[cache.samples[i].has_mask for i in indices]]


class CategoryCollector(Protocol):
    """Takes one category's images and predictions at a time and keeps what it needs of them (`add_categories`)."""

    def add(self, category: str, cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> None: ...


def add_categories(cache: ImageCache, predictions: Predictions, *collectors: CategoryCollector) -> None:
    """Each category of the cache to each collector in turn: a whole test set, or (streamed) one category's cache."""
    for category, indices in cache.indices_by_category().items():
        for collector in collectors:
            collector.add(category, cache, predictions, indices)


class MetricsCollector:
    """The metrics rows of the categories added (`category_metrics`), and their means at the end."""

    def __init__(self, full_resolution: bool = False):
        self.pixels = pixels_at_original_size if full_resolution else pixels_at_model_size
        self.rows: MetricsTable = {}
        self.datasets: set[tuple[str, str]] = set()  # (dataset, category) for the dataset means

    def add(self, category: str, cache: ImageCache, predictions: Predictions, indices: np.ndarray) -> None:
        labels = np.array([cache.samples[i].label for i in indices])
        with_mask = with_known_pixels(cache, indices)  # anomalies without a mask: image metrics only
        masks, maps = self.pixels(cache, predictions.maps, with_mask) if len(with_mask) else (None, None)
        row = compute_metrics(labels, predictions.scores[indices], masks, maps)
        if predictions.routed_right is not None:
            routed = predictions.routed_right[indices]
            row["routing"] = None if np.isnan(routed).all() else float(np.nanmean(routed))
        self.rows[category] = row
        self.datasets |= {(cache.samples[i].dataset, category) for i in indices}

    def table(self) -> MetricsTable:
        """The category rows, a `DATASET/mean` row per dataset of several categories (`dataset_means`), `mean`."""
        overall = mean_row(self.rows)
        return self.rows | dataset_means(self.datasets, self.rows) | {MEAN_ROW: overall}


def category_metrics(
    cache: ImageCache, predictions: Predictions, full_resolution: bool = False
) -> MetricsTable:
    """Metrics per category, plus a `mean` row over the categories where each metric is defined (and one per dataset,
    see `dataset_means`). Pixel metrics leave out anomalous images without a mask (`Sample.has_mask`).

    With `full_resolution`, pixel metrics are computed at each image's original size (see `full_resolution.py`).
    """
    metrics = MetricsCollector(full_resolution)
    add_categories(cache, predictions, metrics)
    return metrics.table()


def dataset_means(datasets: set[tuple[str, str]], results: MetricsTable) -> MetricsTable:
    """A `DATASET/mean` row per dataset of several categories, when the (dataset, category) pairs come from more than
    one dataset."""
    by_dataset: dict[str, list[str]] = {}
    for dataset, category in sorted(datasets):
        by_dataset.setdefault(dataset, []).append(category)
    if len(by_dataset) < 2:
        return {}
    return {f"{dataset}/{MEAN_ROW}": mean_row({c: results[c] for c in categories})
            for dataset, categories in by_dataset.items() if len(categories) > 1}  # one category is its own mean


def mean_row(results: MetricsTable) -> MetricsRow:
    keys = next(iter(results.values())).keys()
    means: MetricsRow = {}
    for key in keys:
        values = [row[key] for row in results.values() if row.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means
