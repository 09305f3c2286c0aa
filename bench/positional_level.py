"""A normal level per pixel? (issue 22, item 2.) Solar cells, boards and plates are photographed aligned: a normal
image's map is high in the same places (a cell's dark corners, a board's edges), and the image score's maximum and
the pixel threshold both read those places as defects. Here each category's maps (the anomaly map and the image
score's map, as the model fuses them) have the per-pixel mean of its held-out NORMAL training images' maps
subtracted (or are put in per-pixel z units). Validation: the tuning's held-out 20 % with small synthetic defects,
cross-fitted (the statistics of even-numbered held-out images serve the odd ones and the other way round, so no image
meets its own statistics); test (outcome only): the shipped model, the statistics of all held-out normals.

    python bench/positional_level.py runs/s18_b18_seed0 --data D/magnetic_tile D/metal_plate D/deeppcb \
        D/pv_el_cells --out runs/positional_seed0.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.run_validation import refilled_model, run_arguments, unlevelled_maps  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.metrics import compute_metrics  # noqa: E402
from mala.model.filters import blur_reflected  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402

CANDIDATES = ("as is", "minus mean", "z")
SMOOTH_SIGMA = 4.0  # px: the per-pixel statistics are of 30 to 70 images, smoothed against their noise


def statistics(normal_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel mean and spread (2, H, W) each of normal maps (n, 2, H, W), smoothed; the spread floored at its
    median so that flat places do not blow up."""
    mean = blur_reflected(normal_maps.mean(0).unsqueeze(1), SMOOTH_SIGMA)[:, 0]
    spread = blur_reflected(normal_maps.std(0).unsqueeze(1), SMOOTH_SIGMA)[:, 0]
    floor = spread.flatten(1).median(1).values[:, None, None]
    return mean, torch.maximum(spread, floor)


def apply(maps: torch.Tensor, candidate: str, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    if candidate == "as is":
        return maps
    return maps - mean if candidate == "minus mean" else (maps - mean) / spread


def figures(labels: np.ndarray, masks: np.ndarray, maps: torch.Tensor) -> dict[str, float]:
    row = compute_metrics(labels, maps[:, 1].flatten(1).amax(1).numpy(), masks, maps[:, 0].numpy())
    return {name: 100 * row[name] for name in ("image_auroc", "pixel_auroc", "pixel_aupro")}


def validation_figures(cache: ImageCache, maps: torch.Tensor) -> dict[str, dict[str, dict[str, float]]]:
    """Per category and candidate, cross-fitted over two folds of the held-out images."""
    out = {}
    for category, indices in cache.indices_by_category().items():
        folds = np.array([int(cache.samples[i].path.stem.split("_")[0]) % 2 for i in indices])
        labels = np.array([cache.samples[i].label for i in indices])
        out[category] = {}
        for candidate in CANDIDATES:
            shown = torch.empty_like(maps[indices])
            for fold in (0, 1):
                stats = statistics(maps[indices[(folds != fold) & (labels == 0)]])
                shown[folds == fold] = apply(maps[indices[folds == fold]], candidate, *stats)
            masks = np.stack([cache.mask(i) for i in indices])
            out[category][candidate] = figures(labels, masks, shown)
    return out


def test_figures(cache: ImageCache, maps: torch.Tensor, stats_of: dict) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        masks = np.stack([cache.mask(i) for i in indices])
        out[category] = {c: figures(labels, masks, apply(maps[indices], c, *stats_of[category])) for c in CANDIDATES}
    return out


def print_table(name: str, table: dict) -> None:
    print(f"\n{name}: image / pixel AUROC / AUPRO\n| category | " + " | ".join(CANDIDATES) + " |\n|---|"
          + "---|" * len(CANDIDATES))
    metrics = list(next(iter(table.values()))[CANDIDATES[0]])
    mean = {c: {k: float(np.mean([row[c][k] for row in table.values()])) for k in metrics} for c in CANDIDATES}
    for category, row in [*table.items(), ("mean", mean)]:
        print(f"| {category} | " + " | ".join(" / ".join(f"{v:.2f}" for v in row[c].values()) for c in CANDIDATES)
              + " |")


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0])
    model, cfg, info, validation = refilled_model(args.run, args.data)
    categories = info["categories"]
    held = unlevelled_maps(model, validation, categories)
    report = {"validation": validation_figures(validation, held)}
    stats_of = {}
    for category, indices in validation.indices_by_category().items():
        normal = indices[[not validation.samples[i].label for i in indices]]
        stats_of[category] = statistics(held[normal])
    del model, held
    shipped, _, _ = load_trained_model(args.run)
    test = ImageCache.build(test_samples(scan_roots(args.data)), cfg.input_shape, desc="decoding test images")
    report["test"] = test_figures(test, unlevelled_maps(shipped, test, categories), stats_of)
    for name, table in report.items():
        print_table(name, table)
    args.out.write_text(json.dumps({"run": str(args.run), **report}, indent=1))


if __name__ == "__main__":
    main()
