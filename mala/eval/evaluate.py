"""Run a trained model over test images and compute per-category metrics and their means."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from mala.config import MalaConfig
from mala.data.dataset import ImageCache, TestImages
from mala.eval.metrics import compute_metrics
from mala.model import MALA, image_score, reconstruction_map

MEAN_ROW = "mean"


@dataclass
class Predictions:
    maps: np.ndarray  # (N, S, S) float32 anomaly maps in [0, 1] (reconstruction error for that pipeline)
    scores: np.ndarray  # (N,) image scores


def anomaly_maps(model: MALA, images: torch.Tensor, cfg: MalaConfig) -> torch.Tensor:
    """The configured pipeline's map: the end-to-end head, or the reconstruction error (ablation)."""
    if cfg.run.pipeline == "reconstruction":
        return reconstruction_map(model, images)
    return model(images)


@torch.no_grad()
def predict(model: MALA, cache: ImageCache, cfg: MalaConfig, batch_size: int = 16, device: str = "cpu") -> Predictions:
    model = model.to(device).eval()
    size = cfg.model.image_size
    maps = np.empty((len(cache.samples), size, size), dtype=np.float32)
    scores = np.empty(len(cache.samples), dtype=np.float64)
    loader = DataLoader(TestImages(cache), batch_size=batch_size)
    for images, _, _, indices in tqdm(loader, desc="testing", unit="batch", leave=False):
        batch_maps = anomaly_maps(model, images.to(device), cfg)
        maps[indices.numpy()] = batch_maps.float().cpu().numpy()
        scores[indices.numpy()] = image_score(batch_maps, cfg.run.score_kernel).float().cpu().numpy()
    return Predictions(maps, scores)


def category_metrics(cache: ImageCache, predictions: Predictions) -> dict[str, dict[str, float | None]]:
    """Metrics per category, plus a `mean` row over the categories where each metric is defined."""
    results: dict[str, dict[str, float | None]] = {}
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        masks = np.stack([cache.mask(i) for i in indices])
        results[category] = compute_metrics(labels, predictions.scores[indices], masks, predictions.maps[indices])
    results[MEAN_ROW] = mean_row(results)
    return results


def mean_row(results: dict[str, dict[str, float | None]]) -> dict[str, float | None]:
    keys = next(iter(results.values())).keys()
    means: dict[str, float | None] = {}
    for key in keys:
        values = [row[key] for row in results.values() if row.get(key) is not None]
        means[key] = float(np.mean(values)) if values else None
    return means
