"""The image score's two parts fused by their normal statistics instead of a fixed weight? (issue 22, items 2 and 3.)
The image score is the maximum of `(1 - w_s) x stage-2 map + w_s x score memory map` (w_s = `score_memory_weight`).
Here each part's maximum is put in units of its category's held-out NORMAL training images (the tuning's 20 %:
their mean and standard deviation, or their quantiles) and the parts are added with equal weight, so no weight is
chosen. Scored per category by image AUROC on the protocol's validation images (the held-out 20 %, each also with a
small synthetic defect and with a large one; the memory refilled from the other 80 %, as the tuning reads it) and on
the test set with the shipped model (outcome only).

    python bench/image_fusion.py runs/s18_b18_seed0 --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells \
        --out runs/image_fusion_seed0.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.run_validation import refilled_model, run_arguments  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples  # noqa: E402
from mala.eval.evaluate import known_sections  # noqa: E402
from mala.eval.metrics import auroc  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.model.maps import distance_map, fuse_maps  # noqa: E402
from mala.tune.protocol import validation_parts  # noqa: E402

Parts = dict[str, np.ndarray]  # per image: "learned" and "memory" maxima, and the config's score


def image_parts(model, cache: ImageCache, categories: list[str]) -> Parts:
    """Per image of `cache`, read in its category's section: the maxima of the stage-2 map and of the score memory's
    map, and the config's score (the maximum of their fusion)."""
    parts = validation_parts(model, cache, known_sections(cache, categories))
    memory = distance_map(parts.score_distance, model.image_shape, model.cfg.memory_sigma)
    weight = model.cfg.score_memory_weight
    return {"learned": parts.learned.flatten(1).amax(1).numpy(), "memory": memory.flatten(1).amax(1).numpy(),
            "config": fuse_maps(parts.learned, memory, weight).flatten(1).amax(1).numpy()}


Statistic = Callable[[np.ndarray], tuple[float, float]]  # normal values -> (centre, spread)
STATISTICS: dict[str, Statistic] = {
    "z": lambda v: (float(v.mean()), float(v.std() + 1e-9)),
    "quantile": lambda v: (float(np.median(v)), float(np.quantile(v, 0.95) - np.median(v) + 1e-9)),
}


def scores(parts: Parts, indices: np.ndarray, normals: Parts) -> dict[str, np.ndarray]:
    """Every candidate image score of the images `indices`, the normal statistics read from `normals` (the
    category's held-out normal images' parts)."""
    out = {"config": parts["config"][indices], "memory": parts["memory"][indices],
           "learned": parts["learned"][indices]}
    for name, statistic in STATISTICS.items():
        units = []
        for part in ("learned", "memory"):
            centre, spread = statistic(normals[part])
            units.append((parts[part][indices] - centre) / spread)
        out[f"{name} sum"] = units[0] + units[1]
        out[f"{name} max"] = np.maximum(units[0], units[1])
    return out


def category_table(cache: ImageCache, parts: Parts, normals_of: dict[str, Parts], kinds: dict[str, list[str]]
                   ) -> dict[str, dict[str, dict[str, float]]]:
    """Per category and anomaly kind group: every candidate's image AUROC (%), normals against that group."""
    figures = {}
    for category, indices in cache.indices_by_category().items():
        names = [cache.samples[i].path.stem for i in indices]
        labels = np.array([cache.samples[i].label for i in indices])
        figures[category] = {}
        for group, endings in kinds.items():
            keep = np.array([not label or any(n.endswith(e) for e in endings) for n, label in zip(names, labels)])
            if labels[keep].all() or not labels[keep].any():
                continue
            found = scores(parts, indices[keep], normals_of[category])
            figures[category][group] = {k: 100 * auroc(labels[keep], v) for k, v in found.items()}
    return figures


def main() -> None:
    args = run_arguments(__doc__.splitlines()[0])
    model, cfg, info, validation = refilled_model(args.run, args.data, ("small", "large"))
    categories = info["categories"]
    held = image_parts(model, validation, categories)
    normals_of = {}
    for category, indices in validation.indices_by_category().items():
        normal = indices[[not validation.samples[i].label for i in indices]]
        normals_of[category] = {k: v[normal] for k, v in held.items()}
    figures = {"validation": category_table(validation, held, normals_of, {
        "small": ["crack", "speck"], "large": ["draem", "cut-paste"]})}
    del model
    shipped, _, _ = load_trained_model(args.run)
    test = ImageCache.build(test_samples(scan_roots(args.data)), cfg.input_shape, desc="decoding test images")
    figures["test"] = category_table(test, image_parts(shipped, test, categories), normals_of, {"all": [""]})
    candidates = list(next(iter(figures["test"].values()))["all"])
    print("| category | " + " | ".join(candidates) + " |\n|---|" + "---|" * len(candidates))
    for split, groups in (("test", ("all",)), ("validation", ("small", "large"))):
        for group in groups:
            rows = {c: figures[split][c][group] for c in figures[split] if group in figures[split][c]}
            for category, row in rows.items():
                print(f"| {category} ({split} {group}) | " + " | ".join(f"{row[k]:.1f}" for k in candidates) + " |")
            print(f"| **mean ({split} {group})** | " + " | ".join(
                f"{np.mean([r[k] for r in rows.values()]):.2f}" for k in candidates) + " |")
    args.out.write_text(json.dumps({"run": str(args.run), "figures": figures}, indent=1))


if __name__ == "__main__":
    main()
