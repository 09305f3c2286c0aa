"""The normal-feature memory alone, without training: which backbone tokens, grid, image size and epsilon-net radius
make the best map (issue 13's design comparisons for the hybrid's memory).

    python bench/memory_design.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        --size 224 --backbone efficientnet_lite0 --stride 16 --stages 2 4 --radius 0.8

The backbone's feature tokens of every training image (layer-normed, 3 x 3-pooled, as `mala.model.backbone`) fill
ONE memory for all categories (`--per-category`: one memory per category, each test image searched in its own
category's memory, which the category of the nearest training image by mean token picks), thinned to an
epsilon-net of radius `--radius` x the held-out distance scale (`mala.train.fill_memory`). The map is the nearest
distance, upsampled and blurred (`--sigma`); the image score is paper eq. 7 (k = 21). Prints one JSON line of image
/ pixel AUROC and AUPRO per category, the memory's size and the seconds taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import Predictions, category_metrics  # noqa: E402
from mala.model import image_score  # noqa: E402
from mala.model.backbone import pretrained_backbone  # noqa: E402
from mala.model.backbone import FeatureTokens  # noqa: E402
from mala.model.filters import blur_reflected  # noqa: E402
from mala.model.memory import FeatureMemory  # noqa: E402
from mala.train.fill_memory import cover, held_out_scale  # noqa: E402


@torch.no_grad()
def feature_tokens(cache: ImageCache, tokens: FeatureTokens, batch: int = 16) -> torch.Tensor:
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2)
    return torch.cat([tokens(images[i:i + batch].float() / 255) for i in range(0, len(images), batch)])


def nearest_distances(queries: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    memory = FeatureMemory(tokens.shape[1])
    memory.fill(tokens, 1.0)
    return torch.cat([memory.nearest_distance(q) for q in queries.split(32)])


def memories(train: ImageCache, train_tokens: torch.Tensor, radius: float, per_category: bool) -> dict[str, torch.Tensor]:
    """Category (or "all") -> epsilon-net of its training tokens."""
    scale = held_out_scale(train_tokens, np.random.default_rng(0))
    categories = np.array([s.category for s in train.samples])
    groups = {c: categories == c for c in np.unique(categories)} if per_category else {"all": categories == categories}
    return {name: cover(train_tokens[chosen].flatten(0, 1), radius * scale, seed=0) for name, chosen in groups.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--radius", type=float, default=0.8)
    parser.add_argument("--sigma", type=float, default=4.0)
    parser.add_argument("--per-category", action="store_true")
    args = parser.parse_args()
    start = time.time()
    samples = scan_roots(args.data)
    train = ImageCache.build(train_samples(samples), args.size)
    test = ImageCache.build(test_samples(samples), args.size)
    tokens = FeatureTokens(pretrained_backbone(args.backbone, last_stage=max(args.stages)), tuple(args.stages),
                           args.stride)
    train_tokens, test_tokens = feature_tokens(train, tokens), feature_tokens(test, tokens)
    nets = memories(train, train_tokens, args.radius, args.per_category)
    if args.per_category:
        categories = np.array([s.category for s in train.samples])
        routes = categories[torch.cdist(test_tokens.mean(1), train_tokens.mean(1)).argmin(1).numpy()]
    else:
        routes = np.array(["all"] * len(test_tokens))
    distances = torch.empty(test_tokens.shape[:2])
    for name, net in nets.items():
        chosen = torch.from_numpy(np.flatnonzero(routes == name))
        distances[chosen] = nearest_distances(test_tokens[chosen], net)
    grid = args.size // args.stride
    upsampled = F.interpolate(distances.reshape(-1, 1, grid, grid), size=(args.size, args.size), mode="bilinear")
    maps = blur_reflected(upsampled, args.sigma)[:, 0]
    results = category_metrics(test, Predictions(maps.numpy(), image_score(maps, 21).numpy()))
    print(json.dumps({**{k: v for k, v in vars(args).items() if k != "data"},
                      "memory_tokens": {name: len(net) for name, net in nets.items()},
                      "seconds": round(time.time() - start),
                      **{c: [round(100 * r[m], 1) for m in ("image_auroc", "pixel_auroc", "pixel_aupro")]
                         for c, r in results.items()}}))


if __name__ == "__main__":
    main()
