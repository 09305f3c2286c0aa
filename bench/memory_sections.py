"""What the memory's per-category sections buy (issue 22, item 1): the memory's map alone, without training, of ONE
model over every dataset given, read (a) in each test image's own category's section, (b) in the section the model
routes it to, (c) in ONE shared section of all categories' tokens with one scale (the design before sections), and
(d) of one model per category. Prints a table of image / pixel AUROC and AUPRO per category and writes it as JSON.

    python bench/memory_sections.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        ../shared/data/deeppcb ../shared/data/pv_el_cells --config tiny --seed 0 --out runs/sections_seed0.json

The memory is filled exactly as `mala train` fills it (`mala.train.fill_memory`); the maps are the model's memory
maps (`MALA.memory_map`), scored by paper eq. 7 with the preset's kernel. The stage-2 map is left out (it needs
training and is the same in every variant).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mala.config import MalaConfig, load_config  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.evaluate import (MEAN_ROW, Predictions, category_metrics, known_sections, mean_row,  # noqa: E402
                                routed_right)
from mala.eval.metrics import MetricsTable  # noqa: E402
from mala.model import MALA, image_score  # noqa: E402
from mala.progress import progress  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402

SHARED = "shared"  # the one category of the shared-memory variant
METRICS = ("image_auroc", "pixel_auroc", "pixel_aupro")


@torch.no_grad()
def test_tokens(model: MALA, cache: ImageCache, batch: int = 16) -> torch.Tensor:
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2)
    return torch.cat([model.memory_features(images[i:i + batch].float() / 255)
                      for i in progress(range(0, len(images), batch), desc="test tokens", unit="batch", leave=False)])


@torch.no_grad()
def memory_predictions(model: MALA, tokens: torch.Tensor, sections: np.ndarray | None, kernel: int,
                       batch: int = 16) -> Predictions:
    """The memory's maps and eq. 7 scores of test tokens, each image in its given section (None: routed)."""
    maps = []
    for start in range(0, len(tokens), batch):
        chosen = None if sections is None else torch.from_numpy(sections[start:start + batch])
        maps.append(model.memory_map(tokens[start:start + batch], chosen))
    maps = torch.cat(maps)
    return Predictions(maps.numpy(), image_score(maps, kernel).double().numpy())


def filled_model(cfg: MalaConfig, cache: ImageCache, seed: int) -> tuple[MALA, float]:
    """An untrained model with its memory filled from `cache`, and the seconds the fill took."""
    torch.manual_seed(seed)
    model = MALA(cfg.model).eval()
    start = time.perf_counter()
    fill_memory(model, cache, seed)
    return model, time.perf_counter() - start


def subset(cache: ImageCache, chosen: np.ndarray, category: str | None = None) -> ImageCache:
    """The cached samples `chosen` (renamed to one `category` if given), without decoding again."""
    part = cache.subset(chosen)
    if category is not None:
        part.samples = [dataclasses.replace(s, category=category) for s in part.samples]
    return part


def per_category_models(cfg: MalaConfig, train: ImageCache, test: ImageCache, tokens: torch.Tensor,
                        seed: int) -> MetricsTable:
    """(d): a memory of each category's own training images, tested on that category's test images."""
    results: MetricsTable = {}
    test_groups = test.indices_by_category()
    for category, indices in train.indices_by_category().items():
        model, _ = filled_model(cfg, subset(train, indices), seed)
        chosen = test_groups[category]
        predictions = memory_predictions(model, tokens[chosen], np.zeros(len(chosen), dtype=np.int64),
                                         cfg.run.score_kernel)
        results[category] = category_metrics(subset(test, chosen), predictions)[category]
    return results | {MEAN_ROW: mean_row(results)}


def figures(row: dict) -> list[float | None]:
    return [None if row.get(m) is None else round(100 * row[m], 1) for m in METRICS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--config", default="tiny")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cfg = load_config(args.config)
    cfg.model.memory_weight = 1.0
    samples = scan_roots(args.data)
    train = ImageCache.build(train_samples(samples), cfg.input_shape, desc="decoding training images")
    test = ImageCache.build(test_samples(samples), cfg.input_shape, desc="decoding test images")
    one, one_seconds = filled_model(cfg, train, args.seed)
    tokens = test_tokens(one, test)
    kernel = cfg.run.score_kernel
    known = known_sections(test, sorted(train.indices_by_category()))
    routed_sections = one.memory.route(tokens).numpy()
    routed = memory_predictions(one, tokens, routed_sections, kernel)
    routed.routed_right = routed_right(known, routed_sections)
    shared, shared_seconds = filled_model(cfg, subset(train, np.arange(len(train.samples)), SHARED), args.seed)
    variants = {
        "own section": category_metrics(test, memory_predictions(one, tokens, known, kernel)),
        "routed": category_metrics(test, routed),
        "shared memory": category_metrics(test, memory_predictions(shared, tokens, np.zeros_like(known), kernel)),
        "one model per category": per_category_models(cfg, train, test, tokens, args.seed),
    }
    report = {"config": args.config, "seed": args.seed, "data": args.data,
              "memory_rows": {"sections": len(one.memory.tokens), "shared": len(shared.memory.tokens)},
              "fill_seconds": {"sections": round(one_seconds), "shared": round(shared_seconds)},
              "results": {name: {c: {**dict(zip(METRICS, figures(r))), "routing": r.get("routing")}
                                 for c, r in table.items()} for name, table in variants.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    categories = sorted(train.indices_by_category())
    print("| category | " + " | ".join(variants) + " | routed right |")
    print("|---|" + "---|" * (len(variants) + 1))
    for category in [*categories, MEAN_ROW]:
        cells = [" / ".join("n/a" if v is None else f"{v:.1f}" for v in figures(table.get(category, {})))
                 for table in variants.values()]
        routing = variants["routed"].get(category, {}).get("routing")
        print(f"| {category} | " + " | ".join(cells) + f" | {'' if routing is None else f'{100 * routing:.1f} %'} |")
    print(f"memory rows: sections {len(one.memory.tokens):,}, shared {len(shared.memory.tokens):,}; "
          f"fill {one_seconds:.0f} s / {shared_seconds:.0f} s")


if __name__ == "__main__":
    main()
