"""Runs that differ in a training setting (backbone, stage 1, depth) ranked on training images only (issue 22, item
3): each trained model's memory is filled again from the images its stage 2 trained on (the 80 % of each category's
that `run.tune` trains on, so the fill is the tuning's own) and the model, with the fusion it chose, maps the held-out
20 %, each also with a small synthetic defect. Per category: validation image AUROC (the model's image score), pixel
AUROC and AUPRO; the run's validation score is the mean of image and pixel AUROC and AUPRO over categories. Unlike
`bench/tuning_summary.py` (pixel figures of the fusion only), this scores the image score too, which the backbone and
the encoder change. No test image is read.

    python bench/run_validation.py runs/held_seed0 runs/lite0_seed0 --data D/magnetic_tile D/metal_plate \
        D/deeppcb D/pv_el_cells --out runs/run_validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mala.config import MalaConfig  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, train_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.eval.metrics import compute_metrics  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.maps import image_score  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402
from mala.tune.protocol import VALIDATION_ANOMALIES, validation_views  # noqa: E402
from mala.tune.split import validation_split  # noqa: E402

FIGURES = ("image_auroc", "pixel_auroc", "pixel_aupro")


def unlevelled_maps(model: MALA, cache: ImageCache, categories: list[str]) -> torch.Tensor:
    """(N, 2, H, W): each image's anomaly map and image score's map as the model fuses them in its category's section,
    with the mirror views that section takes, not levelled (as the tuning reads them)."""
    taken = dict(zip(categories, model.mirror_counts or [0] * len(categories)))
    parts = validation_views(model, cache, known_sections(cache, categories), taken)[-1]
    return model.fused_maps(parts, *model.fusion_of(parts.sections), levelled=False)


def category_figures(model: MALA, validation: ImageCache, categories: list[str], kernel: int
                     ) -> dict[str, dict[str, float]]:
    """Per category: image AUROC, pixel AUROC and AUPRO (%) of the model's own maps and score on `validation`, the
    maps not levelled, as the tuning reads them (a category's figures barely move by it: float rounding), each
    category's with the mirror views it takes."""
    maps = unlevelled_maps(model, validation, categories)
    figures = {}
    for category, indices in validation.indices_by_category().items():
        labels = np.array([validation.samples[i].label for i in indices])
        masks = np.stack([validation.mask(i) for i in indices])
        row = compute_metrics(labels, image_score(maps[indices, 1], kernel).numpy(), masks, maps[indices, 0].numpy())
        figures[category] = {name: 100 * row[name] for name in FIGURES}
    return figures


def refilled_model(run: Path, data: list[str], anomalies: tuple[str, ...] = VALIDATION_ANOMALIES
                   ) -> tuple[MALA, MalaConfig, dict, ImageCache]:
    """A run's model with its memory refilled from the images its stage 2 trained on (the model the tuning read), its
    config and info, and the tuning's validation images (with `anomalies`: the tuning's own by default)."""
    model, cfg, info = load_trained_model(run)
    train = ImageCache.build(train_samples(scan_roots(data)), cfg.input_shape, desc="decoding training images")
    fit, validation = validation_split(train, cfg.input_shape, anomalies)
    fill_memory(model, fit, cfg.run.seed, cfg.tile_grid)
    return model, cfg, info, validation


def run_arguments(description: str) -> argparse.Namespace:
    """The command line of a bench that reads one run that tuned in training: the run, its data, the threads (set
    here) and a JSON file for the report."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("run", type=Path, help="a run that tuned in training")
    parser.add_argument("--data", nargs="+", required=True, help="the data the run trained on, all of it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    return args


def run_figures(run: Path, data: list[str]) -> dict[str, dict[str, float]]:
    """`category_figures` of a run's model, its memory refilled from the images its stage 2 trained on."""
    model, cfg, info, validation = refilled_model(run, data)
    return category_figures(model, validation, info["categories"], cfg.run.score_kernel)


def validation_score(figures: dict[str, dict[str, float]]) -> float:
    """The mean over categories of each category's mean image AUROC, pixel AUROC and AUPRO."""
    return float(np.mean([np.mean([row[name] for name in FIGURES]) for row in figures.values()]))


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: per category and run, image / pixel AUROC / AUPRO, then each run's means and validation score."""
    lines = ["| category | " + " | ".join(runs) + " |", "|---|" + "---|" * len(runs)]
    for category in next(iter(runs.values())):
        lines.append(f"| {category} | " + " | ".join(
            " / ".join(f"{figures[category][name]:.1f}" for name in FIGURES) for figures in runs.values()) + " |")
    means = [" / ".join(f"{np.mean([row[name] for row in figures.values()]):.1f}" for name in FIGURES)
             for figures in runs.values()]
    lines.append("| mean | " + " | ".join(means) + " |")
    lines.append("| **validation score** | " + " | ".join(f"**{validation_score(f):.2f}**" for f in runs.values())
                 + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="run folders of `mala train` with run.tune")
    parser.add_argument("--data", nargs="+", required=True, help="the data the runs trained on, all of it")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = {run.name: run_figures(run, args.data) for run in args.runs}
    print(table(runs))
    args.out.write_text(json.dumps({"data": args.data, "runs": runs,
                                    "scores": {name: validation_score(f) for name, f in runs.items()}}, indent=1))


if __name__ == "__main__":
    main()
