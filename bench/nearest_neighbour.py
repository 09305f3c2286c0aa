"""A plain nearest-neighbour peer (issue 22's bar): one model per category, no training, no tricks.

    python bench/nearest_neighbour.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        ../shared/data/deeppcb ../shared/data/pv_el_cells --backbone efficientnet_lite0 --out runs/nn_lite0.json

Per category: the frozen ImageNet EfficientNet-Lite's stage-2 and stage-4 feature maps (strides 8 and 16, the
same weights `mala` uses), the coarser one upsampled bilinearly to the stride-8 grid and concatenated, raw (no
pooling, no layer norm); a bank of `--bank` tokens drawn at random from the category's training images; each test
token's Euclidean distance to its nearest bank token is the map, upsampled bilinearly to the image (no blur); the
image score is the map's maximum. Image / pixel AUROC and AUPRO with mala's exact metrics, per category and their
mean, as JSON.
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
import torch.nn.functional as F  # noqa: E402

from bench.memory_sections import subset  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import Predictions, category_metrics, mean_row  # noqa: E402
from mala.model.backbone import EfficientNetLite, pretrained_backbone  # noqa: E402
from mala.model.memory import FeatureMemory  # noqa: E402
from mala.progress import progress  # noqa: E402

STAGES = (2, 4)
STRIDE = 8


@torch.no_grad()
def raw_tokens(backbone: EfficientNetLite, cache: ImageCache, batch: int = 16) -> torch.Tensor:
    """(N, rows x columns, C) feature tokens on the stride-8 grid, the stage-4 map upsampled to it."""
    out = []
    for start in progress(range(0, len(cache.images), batch), desc="features", unit="batch", leave=False):
        images = torch.from_numpy(cache.images[start:start + batch]).permute(0, 3, 1, 2).float() / 255
        grid = (images.shape[-2] // STRIDE, images.shape[-1] // STRIDE)
        maps = [F.interpolate(m, size=grid, mode="bilinear", align_corners=False) if m.shape[-2:] != grid else m
                for m in backbone.features(images, STAGES)]
        out.append(torch.cat(maps, dim=1).flatten(2).transpose(1, 2))
    return torch.cat(out)


def category_predictions(backbone: EfficientNetLite, train: ImageCache, test: ImageCache, bank: int,
                         rng: np.random.Generator) -> Predictions:
    tokens = raw_tokens(backbone, train).flatten(0, 1)
    memory = FeatureMemory(tokens.shape[-1])
    memory.fill(tokens[torch.from_numpy(rng.permutation(len(tokens))[:bank])], 1.0)
    queries = raw_tokens(backbone, test)
    size = test.images.shape[1:3]
    rows, columns = size[0] // STRIDE, size[1] // STRIDE
    distances = torch.cat([memory.nearest_distance(q) for q in queries.split(16)]).reshape(-1, 1, rows, columns)
    maps = F.interpolate(distances, size=size, mode="bilinear", align_corners=False)[:, 0]
    return Predictions(maps.numpy(), maps.flatten(1).amax(1).double().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bank", type=int, default=20_000, help="bank tokens per category")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    backbone = pretrained_backbone(args.backbone, last_stage=max(STAGES))
    samples = scan_roots(args.data)
    train = ImageCache.build(train_samples(samples), args.size, desc="decoding training images")
    test = ImageCache.build(test_samples(samples), args.size, desc="decoding test images")
    rng = np.random.default_rng(args.seed)
    results = {}
    test_by_category = test.indices_by_category()
    for category, indices in train.indices_by_category().items():
        category_test = subset(test, test_by_category[category])
        predictions = category_predictions(backbone, subset(train, indices), category_test, args.bank, rng)
        results[category] = category_metrics(category_test, predictions)[category]
        print(category, {k: round(100 * v, 1) for k, v in results[category].items()
                         if k in ("image_auroc", "pixel_auroc", "pixel_aupro")}, file=sys.stderr)
    results["mean"] = mean_row(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"data": args.data, "backbone": args.backbone, "bank": args.bank,
                                    "seed": args.seed, "results": results}, indent=1))


if __name__ == "__main__":
    main()
