"""A map from two grids, chosen on training images only (issue 22, targets): the stride-8 memory's map localises
thin defects (pcb, el_mono) and the stride-16 memory's broad ones (magnetic_tile); does a mix of the two hold on
every set?

    python bench/map_scales.py --checkpoint runs/split80_depth0/model.safetensors \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --cache runs/map_scales \
        --memories 8,none,1.0 --only-distances --threads 1 &
    python bench/map_scales.py ... --memories 16,token,1.0 16,none,1.0 --only-distances --threads 1; wait
    python bench/map_scales.py ... --memories 8,none,1.0 16,token,1.0 16,none,1.0 --out runs/map_scales.json

bench/selection.py's protocol (validation: the 20 % of normal training images stage 2 never saw, each also with a
synthetic anomaly; test: the real test set, outcome only) on a model trained on the other 80 % (bench/fusion.py).
Each memory (`stride,norm,radius`: `none` = raw tokens as `tiny`'s map memory, `token` = layer-normed as its score
memory) gives each image's scaled nearest distances on its grid, cached under `--cache` (a killed run keeps them).
The first memory is the fine one; each other one is a coarse one mixed in. Candidates, with L the stage-2 map and
D_f, D_c the fine and coarse distances upsampled to the image:
- `mix a, distances`: D = a D_f + (1 - a) D_c, then (1 - w) L + w (1 - exp(-blur(D)));
- `mix a, maps`: each squashed on its own, (1 - w) L + w (a (1 - exp(-blur(D_f))) + (1 - a) (1 - exp(-blur(D_c))));
for a in `--mixes` (a = 1: the fine map alone, today's `tiny`), blur sigma in `--sigmas`, w in `--weights`.
The validation score of a candidate is the mean of its pixel AUROC and AUPRO over the categories (the map's part of
bench/two_memories.py's rule: the image score has its own memory and does not change here).
`--validation-anomalies large small` adds small synthetic anomalies (thin cracks, pasted specks) to validation and
`--validation-kinds` scores validation on one kind only (which kind's ranking predicts the test's?);
`--test-figures` takes the test figures of an earlier run instead of computing them again. Prints the ranking
with test figures beside it and Spearman's rho of the two rankings, per category and overall.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from bench.fusion import learned_maps, protocol_inputs  # noqa: E402
from bench.memory_sections import subset  # noqa: E402
from bench.selection import category_figures, memory_model, scaled_distances  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.model.backbone import TokenRecipe  # noqa: E402
from mala.model.maps import distance_map, fuse_maps, mixed_distance_map  # noqa: E402
from mala.tune.split import VALIDATION_ANOMALIES, VALIDATION_KINDS, validation_split  # noqa: E402

SPLITS = ("validation", "test")


def parse_memory(text: str) -> tuple[int, str, float]:
    stride, norm, radius = text.split(",")
    return int(stride), norm, float(radius)


def cached_distances(cache_dir: Path, memory: str, splits: dict[str, tuple[ImageCache, ImageCache]],
                     tags: dict[str, str]) -> dict[str, torch.Tensor]:
    """The memory's scaled distances (N, rows, columns) per split, computed once and kept under `cache_dir` by the
    split's tag (which validation anomalies it holds)."""
    stride, norm, radius = parse_memory(memory)
    out = {}
    for split, (memory_cache, target) in splits.items():
        path = cache_dir / f"{memory.replace(',', '_')}_{tags[split]}.pt"
        if not path.exists():
            print(f"memory {memory}, {split}", file=sys.stderr)
            model, sections = memory_model("efficientnet_lite2", stride, memory_cache, TokenRecipe(1, norm), radius)
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(scaled_distances(model, target, sections), path)
        out[split] = torch.load(path, weights_only=True)
    return out


def mixed_memory_maps(fine: torch.Tensor, coarse: torch.Tensor, mix: float, form: str, size: tuple[int, int],
                      sigma: float) -> torch.Tensor:
    """The memory part of a candidate's map (N, H, W) from fine and coarse grid distances (N, 1, rows, columns):
    `distances` as the model mixes them (`mixed_distance_map`), `maps` each squashed on its own first."""
    if mix == 1:
        return distance_map(fine, size, sigma)
    if form == "distances":
        return mixed_distance_map([(fine, mix), (coarse, 1 - mix)], size, sigma)
    return mix * distance_map(fine, size, sigma) + (1 - mix) * distance_map(coarse, size, sigma)


def candidate_names(memories: list[str], mixes: list[float], sigmas: list[float], weights: list[float]) -> list[str]:
    """Every candidate: a = 1 once (no coarse memory), each other mix with each coarse memory and form."""
    mixed = [("fine only", 1.0, "maps")] + [(f"with {c}", a, form) for c, a, form in itertools.product(
        memories[1:], [a for a in mixes if a != 1], ("distances", "maps"))]
    return [f"{coarse}, mix {a:g}, {form}, sigma {s:g}, weighted {w:g}"
            for (coarse, a, form), s, w in itertools.product(mixed, sigmas, weights)]


def maps_for(learned: torch.Tensor, distances: dict[str, torch.Tensor], memories: list[str], names: list[str],
             size: int) -> Callable[[np.ndarray, str], Iterator[tuple[str, torch.Tensor]]]:
    """`category_figures`' maps: every candidate's fused maps of the images `indices`."""
    def maps_of(indices: np.ndarray, _: str) -> Iterator[tuple[str, torch.Tensor]]:
        fine = distances[memories[0]][indices].unsqueeze(1)
        coarse = {m: distances[m][indices].unsqueeze(1) for m in memories[1:]}
        for name in names:
            which, mix, form, sigma, weight = name.split(", ")
            memory_map = mixed_memory_maps(fine, coarse.get(which.removeprefix("with "), fine),
                                           float(mix.split()[1]), form, (size, size), float(sigma.split()[1]))
            yield name, fuse_maps(learned[indices], memory_map, float(weight.split()[1]))
    return maps_of


def map_score(row: dict) -> float:
    return 100 * (row["pixel_auroc"] + row["pixel_aupro"]) / 2


def ranking(figures: dict, names: list[str]) -> list[dict]:
    """Candidates by validation score (the mean over categories of `map_score`), with the test figures."""
    rows = []
    for name in names:
        mean = {split: float(np.mean([map_score(figures[c][name][split]) for c in figures])) for split in SPLITS}
        per_set = {c: [100 * figures[c][name]["test"][k] for k in ("pixel_auroc", "pixel_aupro")] for c in figures}
        test_pixel = float(np.mean([v[0] for v in per_set.values()]))
        rows.append({"name": name, **mean, "test_pixel_auroc": test_pixel, "test_per_set": per_set})
    return sorted(rows, key=lambda r: -r["validation"])


def report(figures: dict, names: list[str], shown: int) -> dict:
    ranked = ranking(figures, names)
    rho = float(spearmanr([r["validation"] for r in ranked], [r["test"] for r in ranked])[0])
    per_category = {c: round(float(spearmanr([map_score(figures[c][n]["validation"]) for n in names],
                                             [map_score(figures[c][n]["test"]) for n in names])[0]), 2)
                    for c in figures}
    categories = list(figures)
    print("| candidate | validation | test | test pixel AUROC | " + " | ".join(categories) + " |")
    print("|---|---|---|---|" + "---|" * len(categories))
    for row in ranked[:shown]:
        cells = " | ".join("{:.1f} / {:.1f}".format(*row["test_per_set"][c]) for c in categories)
        print(f"| {row['name']} | {row['validation']:.1f} | {row['test']:.1f} | {row['test_pixel_auroc']:.1f} | "
              f"{cells} |")
    print(f"rho over {len(ranked)} candidates {rho:.2f}; per category {per_category}")
    return {"ranking": ranked, "spearman": rho, "spearman_per_category": per_category}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a model trained on the protocol's split")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--cache", type=Path, required=True, help="folder of each memory's distances")
    parser.add_argument("--memories", nargs="+", required=True, help="stride,norm,radius; the first is the fine one")
    parser.add_argument("--only-distances", action="store_true", help="fill the cache and stop")
    parser.add_argument("--validation-anomalies", nargs="+", choices=VALIDATION_ANOMALIES, default=["large"],
                        help="the synthetic anomalies of the validation images (bench/selection.py)")
    parser.add_argument("--mixes", type=float, nargs="+", default=[1.0, 0.67, 0.5])
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 2.0, 4.0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--validation-kinds", nargs="+", choices=VALIDATION_KINDS,
                        help="score validation on the normals and these kinds of anomaly only [all drawn]")
    parser.add_argument("--test-figures", type=Path,
                        help="an earlier run's JSON of the same checkpoint and candidates: its test figures are kept")
    parser.add_argument("--shown", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model, size, train, test = protocol_inputs(args.checkpoint, args.data, args.threads)
    anomalies = tuple(args.validation_anomalies)
    fit, validation = validation_split(train, size, anomalies)
    splits = {"validation": (fit, validation), "test": (train, test)}
    tags = {"validation": "validation" + "".join(f"-{a}" for a in anomalies if anomalies != ("large",)),
            "test": "test"}
    distances = {m: cached_distances(args.cache, m, splits, tags) for m in args.memories}
    if args.only_distances:
        return
    if args.validation_kinds:
        kept = np.array([k for k, sample in enumerate(validation.samples)
                         if sample.path.stem.split("_", 1)[1] in ("normal", *args.validation_kinds)])
        splits["validation"] = (fit, subset(validation, kept))
        for memory in distances.values():
            memory["validation"] = memory["validation"][kept]
    names = candidate_names(args.memories, args.mixes, args.sigmas, args.weights)
    figures: dict = {}
    if args.test_figures is not None:  # the test set does not depend on the validation anomalies
        earlier = json.loads(args.test_figures.read_text())["figures"]
        figures = {c: {n: {"test": earlier[c][n]["test"]} for n in names} for c in earlier}
        del splits["test"]
    for split, (_, target) in splits.items():
        learned = learned_maps(model, target)
        maps_of = maps_for(learned, {m: d[split] for m, d in distances.items()}, args.memories, names, size)
        for category, rows in category_figures(target, maps_of, [1]).items():
            for name, row in rows.items():
                figures.setdefault(category, {}).setdefault(name.removesuffix(", kernel 1"), {})[split] = row
    result = report(figures, names, args.shown)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "memories": args.memories,
                                        "figures": figures, **result}, indent=1))


if __name__ == "__main__":
    main()
