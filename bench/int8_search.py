"""The int8 shortlist against the exact float32 search, per memory section of a trained run: how often a test
image's token gets its exact nearest distance (and how far off the rest are), in the map's memory and the score's,
and the whole map pipeline's images/s at batch 1 with each search, in alternating rounds (this machine is shared).
With `--views`: each section's images/s (int8 search) with 0, 1 and 2 mirror views, beside their GFLOPs as the
tuning's budget (`run.mirror_gflops`) counts them: what the budget must stay under for every choice it allows to
run at the speed target.

    python bench/int8_search.py runs/s17_seed0 --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells \
        --out runs/int8_search.json
    python bench/int8_search.py runs/s18_b18_seed0 --views --out runs/view_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mala.data.dataset import ImageCache, to_tensor  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.cost import images_per_second, view_flops  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.mala import MIRROR_VIEWS  # noqa: E402

EXACT = 1 + 1e-5  # a shortlisted distance within this ratio of the exact one is the exact one (float rounding)


def agreement(model: MALA, images: torch.Tensor, section: int) -> dict[str, dict[str, float]]:
    """Per memory: the share of tokens whose shortlisted distance is the exact one, and its 99.9 % and largest
    ratio to it."""
    with torch.no_grad():
        _, memory_tokens, score_tokens = model.backbone_tokens(images)
    figures = {}
    for name, (memory, _), tokens in zip(("map memory", "score memory"), model.memories, (memory_tokens, score_tokens)):
        exact = memory.nearest_distance(tokens, section)
        ratio = (memory.nearest_distance(tokens, section, shortlist=True) / exact.clamp_min(1e-12)).flatten()
        figures[name] = {"exact share": float((ratio <= EXACT).float().mean()),
                         "ratio p99.9": float(ratio.quantile(0.999)), "ratio max": float(ratio.max())}
    return figures


def search_speeds(model: MALA, cfg, section: int, rounds: int, repeats: int) -> dict[str, list[float]]:
    """Images/s at batch 1 with the exact search and the shortlist, alternating, `rounds` each."""
    measured: dict[str, list[float]] = {"exact": [], "int8": []}
    for _ in range(rounds):
        for name in measured:
            model.set_memory_search(name)
            measured[name].append(images_per_second(model, 1, repeats, cfg, section))
    model.set_memory_search("int8")
    return measured


def view_speeds(model: MALA, cfg, categories: list[str], rounds: int, repeats: int) -> list[dict]:
    """Images/s of every section with each count of mirror views, alternating, `rounds` each."""
    stored = model.section_mirrors.clone()
    cases = [(section, views) for section in range(len(categories)) for views in range(len(MIRROR_VIEWS) + 1)]
    measured: dict[tuple[int, int], list[float]] = {case: [] for case in cases}
    for _ in range(rounds):
        for section, views in cases:
            mirrors = stored.clone()
            mirrors[section] = views
            model.set_section_mirrors(mirrors)
            measured[(section, views)].append(images_per_second(model, 1, repeats, cfg, section))
    model.set_section_mirrors(stored)
    rows = []
    for (section, views), speeds in measured.items():
        rows.append({"category": categories[section], "views": views, "images/s": speeds,
                     "GFLOPs": (1 + views) * view_flops(model, section) / 1e9, "median": statistics.median(speeds)})
        print(f"{categories[section]}, {views} view(s): {rows[-1]['GFLOPs']:.1f} GFLOPs, img/s "
              + " / ".join(f"{v:.1f}" for v in speeds) + f", median {rows[-1]['median']:.1f}", flush=True)
    return rows


def search_comparison(model: MALA, cfg, categories: list[str], data: list[str], images: int, rounds: int,
                      repeats: int) -> dict:
    """Per section: `agreement` on `images` test images of its category, GFLOPs and `search_speeds`."""
    samples = test_samples(scan_roots(data))
    results = {}
    for section, category in enumerate(categories):
        chosen = [s for s in samples if s.category == category]
        chosen = [chosen[i] for i in np.linspace(0, len(chosen) - 1, images).round().astype(int)]
        cache = ImageCache.build(chosen, cfg.model.image_shape, desc=f"decoding {category}")
        tensors = torch.stack([to_tensor(image) for image in cache.images])
        model.set_memory_search("int8")
        int8_gflops = view_flops(model, section) / 1e9
        model.set_memory_search("exact")
        results[category] = {"agreement": agreement(model, tensors, section),
                             "GFLOPs (exact / int8)": [view_flops(model, section) / 1e9, int8_gflops],
                             "images/s": search_speeds(model, cfg, section, rounds, repeats)}
        row = results[category]
        medians = {name: statistics.median(values) for name, values in row["images/s"].items()}
        print(f"{category}: " + "; ".join(f"{name} {v['exact share']:.2%} exact, max x{v['ratio max']:.4f}"
                                          for name, v in row["agreement"].items())
              + f"; img/s exact {medians['exact']:.1f}, int8 {medians['int8']:.1f} "
                f"(x{medians['int8'] / medians['exact']:.2f})", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--data", nargs="+", help="the roots of the run's test sets (not with --views)")
    parser.add_argument("--views", action="store_true", help="time 0, 1 and 2 mirror views per section instead")
    parser.add_argument("--images", type=int, default=16, help="test images per category for the agreement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not args.views and not args.data:
        parser.error("--data is needed to compare the searches (or --views)")
    torch.set_num_threads(2)
    model, cfg, info = load_trained_model(args.run)
    if args.views:
        results = view_speeds(model, cfg, info["categories"], args.rounds, args.repeats)
    else:
        results = search_comparison(model, cfg, info["categories"], args.data, args.images, args.rounds, args.repeats)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
