"""Choosing the memory's settings without test labels (issue 22, item 3): a validation protocol on training images
only, and how well its ranking of candidate settings predicts their test-set ranking.

    python bench/selection.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        ../shared/data/deeppcb ../shared/data/pv_el_cells --out runs/selection.json

The protocol, per category: 80 % of its normal training images fill the memory; the other 20 % are the validation
normals, and each of them also appears once with a synthetic anomaly, alternately of two kinds that stage 2 never
trains on: DRAEM-style anomalies whose content is the image itself (no DTD textures), and cut-paste (a rectangle of
another normal training image of the category pasted elsewhere, as CutPaste): `mala/tune/split.py`, which `mala
tune` uses too. `validation_split(..., anomalies=("large", "small"))` also gives each a small one, a thin crack or a pasted speck in turn, of the size of real
cracks, opens and blowholes (the large ones cover 2 to 8 % of the image), from a generator of its own, so the split
and the large anomalies stay the same. A candidate's validation score is the
mean of its image and pixel AUROC there. Its test score is the same mean on the real test set, with the memory of
all training images (as `mala train` builds it). Candidates: backbone (lite0, lite2) x token stride (8, 16), stages
2 + 4, epsilon-net radius 0.8 (built as `mala.train.fill_memory` builds it), x map blur sigma (2, 4, 8 px) x score
kernel (1: the map's maximum, 21: paper eq. 7). Only the memory's map (weight 1): these settings are the memory's.
Prints per category the Spearman correlation of the two rankings, the protocol's pick and the test-best, and writes
every figure as JSON.

`--write-split DIR` only writes the protocol's 80 % as links to the image files, in the data's own layout under DIR,
so that `mala train --data DIR/...` trains a model on them (for protocols that need a trained model:
bench/fusion.py).
"""

from __future__ import annotations

import argparse
import dataclasses
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

from mala.config import load_config  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.eval.metrics import compute_metrics  # noqa: E402
from mala.model import MALA, image_score  # noqa: E402
from mala.model.backbone import TokenRecipe  # noqa: E402
from mala.model.maps import distance_map  # noqa: E402
from mala.progress import progress  # noqa: E402
from mala.train.fill_memory import fill_memory  # noqa: E402
from mala.tune.split import SEED, validation_split  # noqa: E402

TOKENS = [("efficientnet_lite0", 8), ("efficientnet_lite0", 16), ("efficientnet_lite2", 8), ("efficientnet_lite2", 16)]
SIGMAS = [2.0, 4.0, 8.0]
KERNELS = [1, 21]
SHIPPED = "lite2, stride 16, sigma 4, kernel 21"  # `tiny` as shipped, chosen on magnetic_tile's and metal_plate's tests


@torch.no_grad()
def scaled_distances(model: MALA, cache: ImageCache, sections: dict[str, int]) -> torch.Tensor:
    """Each image's tokens' nearest distances / scale in its category's section, (N, rows, columns)."""
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2)
    places = torch.tensor([sections[s.category] for s in cache.samples])
    out = []
    for start in progress(range(0, len(images), 16), desc="distances", unit="batch", leave=False):
        tokens = model.memory_features(images[start:start + 16].float() / 255)
        out.append(model.memory.scaled_distance(tokens, places[start:start + 16]))
    return torch.cat(out).reshape(len(images), *model.memory_grid)


def category_figures(cache: ImageCache, maps_of: Callable[[np.ndarray, str], Iterator[tuple[str, torch.Tensor]]],
                     kernels: list[int] = KERNELS) -> dict[str, dict[str, dict]]:
    """Per category, per setting and score kernel: image / pixel AUROC and AUPRO of each (setting, maps (N, H, W))
    that `maps_of(indices, category)` yields for the category's images `indices`."""
    results: dict[str, dict[str, dict]] = {}
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        known = [i for i in indices if cache.samples[i].has_mask]
        masks, places = np.stack([cache.mask(i) for i in known]), np.searchsorted(indices, known)
        for setting, maps in maps_of(indices, category):
            for kernel in kernels:
                row = compute_metrics(labels, image_score(maps, kernel).numpy(), masks, maps[places].numpy())
                results.setdefault(category, {})[f"{setting}, kernel {kernel}"] = {
                    key: row[key] for key in ("image_auroc", "pixel_auroc", "pixel_aupro")}
    return results


def blurred_maps(distances: torch.Tensor, size: tuple[int, int], sigmas: list[float]
                 ) -> Callable[[np.ndarray, str], Iterator[tuple[str, torch.Tensor]]]:
    """`category_figures`' maps of the memory alone: the scaled distances (N, rows, columns) as `distance_map` at
    each blur sigma."""
    def maps_of(indices: np.ndarray, _: str) -> Iterator[tuple[str, torch.Tensor]]:
        for sigma in sigmas:
            yield f"sigma {sigma:g}", distance_map(distances[indices].unsqueeze(1), size, sigma)
    return maps_of


def write_split(fit: ImageCache, roots: list[str], out: Path) -> None:
    """Links to the images of `fit` under `out`, each at its path relative to the parent of its `--data` root."""
    parents = [Path(root).resolve().parent for root in roots]
    for sample in fit.samples:
        source = sample.path.resolve()
        parent = next(p for p in parents if source.is_relative_to(p))
        link = out / source.relative_to(parent)
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(source)
    print(f"{len(fit.samples)} training images linked under {out}", file=sys.stderr)


def memory_model(backbone: str, stride: int, cache: ImageCache, recipe: TokenRecipe = TokenRecipe(),
                 radius: float | None = None) -> tuple[MALA, dict[str, int]]:
    """A `tiny` model whose one memory, on the grid of `stride` with tokens by `recipe` and an epsilon-net of
    `radius` (None: tiny's), is filled from `cache`."""
    tiny = load_config("tiny").model
    cfg = dataclasses.replace(tiny, backbone=backbone, patch_size=16, backbone_stages=[2, 4], memory_stride=stride,
                              memory_pool=recipe.pool, memory_norm=recipe.norm, score_memory=False,
                              memory_radius=tiny.memory_radius if radius is None else radius)
    model = MALA(cfg).eval()
    fill_memory(model, cache, SEED)
    return model, {c: k for k, c in enumerate(sorted(cache.indices_by_category()))}


def evaluate(train: ImageCache, test: ImageCache, size: int) -> dict:
    fit, validation = validation_split(train, size)
    figures: dict = {}
    for backbone, stride in TOKENS:
        name = f"{backbone.removeprefix('efficientnet_')}, stride {stride}"
        print(f"candidate tokens: {name}", file=sys.stderr)
        for split, (memory_cache, target) in {"validation": (fit, validation), "test": (train, test)}.items():
            model, sections = memory_model(backbone, stride, memory_cache)
            maps_of = blurred_maps(scaled_distances(model, target, sections), (size, size), SIGMAS)
            for category, rows in category_figures(target, maps_of).items():
                for setting, row in rows.items():
                    figures.setdefault(category, {}).setdefault(f"{name}, {setting}", {})[split] = row
    return figures


def score(row: dict) -> float:
    return (row["image_auroc"] + row["pixel_auroc"]) / 2


def summary(figures: dict, shipped: str | None = SHIPPED) -> dict:
    """Per category: Spearman's rho of the validation and test rankings, the protocol's pick and the test-best (and
    on the mean of the categories, the test score of the `shipped` candidate)."""
    out = {}
    for category, candidates in figures.items():
        names = list(candidates)
        validation = [score(candidates[n]["validation"]) for n in names]
        test = [score(candidates[n]["test"]) for n in names]
        picked, best = names[int(np.argmax(validation))], names[int(np.argmax(test))]
        out[category] = {"spearman": round(float(spearmanr(validation, test)[0]), 2), "picked": picked,
                         "picked_test": round(100 * score(candidates[picked]["test"]), 1),
                         "best": best, "best_test": round(100 * max(test), 1)}
    names = list(next(iter(figures.values())))
    mean = {split: {n: float(np.mean([score(figures[c][n][split]) for c in figures])) for n in names}
            for split in ("validation", "test")}
    picked, best = max(mean["validation"], key=mean["validation"].get), max(mean["test"], key=mean["test"].get)
    out["all categories"] = {
        "spearman": round(float(spearmanr([mean["validation"][n] for n in names], [mean["test"][n] for n in names])[0]), 2),
        "picked": picked, "picked_test": round(100 * mean["test"][picked], 1),
        "best": best, "best_test": round(100 * mean["test"][best], 1)}
    if shipped in mean["test"]:  # not when the run's candidates leave it out
        out["all categories"].update(shipped=shipped, shipped_test=round(100 * mean["test"][shipped], 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--write-split", type=Path, help="only link the protocol's training images under this folder")
    args = parser.parse_args()
    if (args.out is None) == (args.write_split is None):
        parser.error("give --out or --write-split")
    torch.set_num_threads(2)
    samples = scan_roots(args.data)
    train = ImageCache.build(train_samples(samples), args.size, desc="decoding training images")
    if args.write_split is not None:
        write_split(validation_split(train, args.size)[0], args.data, args.write_split)
        return
    test = ImageCache.build(test_samples(samples), args.size, desc="decoding test images")
    figures = evaluate(train, test, args.size)
    report = {"data": args.data, "candidates": [f"{b}, stride {s}" for b, s in TOKENS],
              "settings": [f"sigma {s:g}, kernel {k}" for s, k in itertools.product(SIGMAS, KERNELS)],
              "summary": summary(figures), "figures": figures}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
