"""The hybrid's two maps apart and fused: the stage-2 map, the normal-feature memory's map, and their weighted
mean, from ONE trained model (no retraining per weight).

    python bench/hybrid_maps.py --checkpoint RUN/model.safetensors \
        --data ../shared/data/magnetic_tile ../shared/data/metal_plate --weights 0 0.25 0.5 0.75 1

Prints a Markdown table of image / pixel AUROC and AUPRO per category and weight (0: the stage-2 map alone,
1: the memory alone) and writes it to --out (JSON) when given. `--memory-radius R` first thins the stored memory
to an epsilon-net of radius R x its scale (`model.memory_radius`), as a model trained with that setting holds.
`--score-kernels K ...` scores images with each k of eq. 7 (`run.score_kernel`, default the model's) and adds a
column for it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from mala.model.load import load_trained_model  # noqa: E402
from mala.data.dataset import ImageCache, TestImages  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.evaluate import Predictions, category_metrics  # noqa: E402
from mala.model import image_score  # noqa: E402
from mala.model.maps import fuse_maps  # noqa: E402
from mala.train.fill_memory import thin_sections  # noqa: E402


@torch.no_grad()
def both_maps(model, cache: ImageCache) -> tuple[torch.Tensor, torch.Tensor]:
    """(stage-2 maps, memory maps), each (N, S, S)."""
    learned, remembered = [], []
    for images, _, _, _ in DataLoader(TestImages(cache), batch_size=8):
        logits, features, _ = model.logits_and_features(images)
        learned.append(torch.softmax(logits, dim=1)[:, 0])
        remembered.append(model.memory_map(features))
    return torch.cat(learned), torch.cat(remembered)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--memory-radius", type=float, default=0.0)
    parser.add_argument("--score-kernels", type=int, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model, cfg, _ = load_trained_model(args.checkpoint)
    kernels = args.score_kernels or [cfg.run.score_kernel]
    if args.memory_radius > 0:
        thin_sections(model.memory, args.memory_radius, cfg.run.seed)
        print(f"memory thinned to {len(model.memory.tokens)} tokens (radius {args.memory_radius} x scale)")
    cache = ImageCache.build(test_samples(scan_roots(args.data)), cfg.model.image_size, desc="decoding test images")
    learned, remembered = both_maps(model, cache)
    rows = {}
    several = len(kernels) > 1
    print(f"| memory weight |{' score kernel |' if several else ''} category | image AUROC | pixel AUROC | "
          f"pixel AUPRO |\n|---|{'---|' if several else ''}---|---|---|---|")
    for weight in args.weights:
        maps = fuse_maps(learned, remembered, weight)
        for kernel in kernels:
            scores = image_score(maps, kernel).numpy()
            results = category_metrics(cache, Predictions(maps.numpy(), scores))
            rows[f"{weight}, k={kernel}" if several else str(weight)] = results
            for category, r in results.items():
                print(f"| {weight} |{f' {kernel} |' if several else ''} {category} | {100 * r['image_auroc']:.1f} | "
                      f"{100 * r['pixel_auroc']:.1f} | {100 * r['pixel_aupro']:.1f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
