"""Fusing the stage-2 map with the memory's, chosen on training images only (issue 22, items 2 and 3).

    python bench/selection.py --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --write-split /work/split80
    mala train --config tiny --data /work/split80/magnetic_tile /work/split80/metal_plate /work/split80/deeppcb \
        /work/split80/pv_el_cells --textures D/dtd/images --out runs/split80
    python bench/fusion.py --checkpoint runs/split80/model.safetensors \
        --data D/magnetic_tile D/metal_plate D/deeppcb D/pv_el_cells --out runs/fusion.json

The model's stage 2 trains on the 80 % of each category's normal training images that bench/selection.py's
protocol keeps (`--write-split`); the other 20 % were never seen by stage 2 and are the validation normals, each
also with one synthetic anomaly of the two kinds stage 2 never trains on (selection.py). Validation: the memory of
the 80 %; test: the memory of all training images, on the real test set (stage 2 stays the 80 % model, so test
figures are a little below a model trained on all images).

Candidates: the memory's grid stride (`--strides`; its tokens by `--memory-backbone`, `--memory-pool` and
`--memory-norm`, thinned to an epsilon-net of `--memory-radius`) x its blur sigma (`--sigmas`, px) x the fusion x
the score kernel (1, 21). A candidate's name holds all of them but the tokens ("stride 8, radius 0.8, sigma 0,
weighted 0.5, kernel 1"), so runs of other radii merge (bench/two_memories.py).
Fusions of the stage-2 map L (softmax, in [0, 1]) and the memory's scaled distance D (1 = the 99 % quantile of
held-out normal distances, `fill_memory`):
- `weighted w`: (1 - w) L + w (1 - exp(-D)), as `tiny` fuses (w = 0: L alone; w = 1: the memory alone);
- `normal units`: L / q, with q the 99 % quantile of L's pixels on the category's own training images (those stage 2
  trained on: what a model has after training), added to D with equal weight, then 1 - exp(-x / 2): each map in
  units of its category's normal statistics, one weight fixed by that principle.
Per category and on the mean of the categories, Spearman's rho between the validation and test rankings, the
protocol's pick and the test-best (bench/selection.py's `summary`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.memory_sections import subset  # noqa: E402
from bench.selection import category_figures, memory_model, scaled_distances, summary  # noqa: E402
from mala.config import load_config  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.model import MALA  # noqa: E402
from mala.model.backbone import NORMS, TokenRecipe  # noqa: E402
from mala.model.filters import blur_reflected  # noqa: E402
from mala.model.load import load_trained_model  # noqa: E402
from mala.progress import progress  # noqa: E402
from mala.tune.split import VALIDATION_ANOMALIES, validation_split  # noqa: E402

WEIGHTS = [0.0, 0.5, 0.75, 0.9, 1.0]
KERNELS = [1, 21]
NORMAL_QUANTILE = 0.99
NORMAL_IMAGES = 40  # training images per category whose stage-2 maps give its normal quantile
SHIPPED = "stride 16, radius 0.8, sigma 4, weighted 0.75, kernel 21"  # `tiny` before this bench


@torch.no_grad()
def learned_maps(model: MALA, cache: ImageCache, batch: int = 16) -> torch.Tensor:
    """Stage-2 maps (N, H, W): channel 0 of the softmax of the logits."""
    images = torch.from_numpy(cache.images).permute(0, 3, 1, 2)
    return torch.cat([torch.softmax(model.map_logits(images[i:i + batch].float() / 255), dim=1)[:, 0]
                      for i in progress(range(0, len(images), batch), desc="stage-2 maps", unit="batch",
                                        leave=False)])


def normal_quantiles(model: MALA, fit: ImageCache) -> dict[str, float]:
    """Per category, the `NORMAL_QUANTILE` of the stage-2 map's pixels on some of its training images."""
    rng = np.random.default_rng(0)
    quantiles = {}
    for category, indices in fit.indices_by_category().items():
        chosen = np.sort(rng.permutation(indices)[:NORMAL_IMAGES])
        values = learned_maps(model, subset(fit, chosen)).flatten()
        quantiles[category] = float(np.quantile(values.numpy(), NORMAL_QUANTILE))
    return quantiles


def fusions(learned: torch.Tensor, distance: torch.Tensor, quantile: float, weights: list[float] = WEIGHTS
            ) -> dict[str, torch.Tensor]:
    """Every fusion candidate's maps (N, H, W) from the stage-2 maps and the memory's blurred scaled distances."""
    remembered = 1 - torch.exp(-distance)
    out = {f"weighted {w:g}": (1 - w) * learned + w * remembered for w in weights}
    out["normal units"] = 1 - torch.exp(-(learned / quantile + distance) / 2)
    return out


def fused_maps(learned: torch.Tensor, distances: torch.Tensor, quantiles: dict[str, float], size: tuple[int, int],
               sigmas: list[float], weights: list[float]
               ) -> Callable[[np.ndarray, str], Iterator[tuple[str, torch.Tensor]]]:
    """`category_figures`' maps: every (sigma, fusion) of the stage-2 maps and the memory's scaled distances."""
    def maps_of(indices: np.ndarray, category: str) -> Iterator[tuple[str, torch.Tensor]]:
        for sigma in sigmas:
            upsampled = F.interpolate(distances[indices].unsqueeze(1), size=size, mode="bilinear", align_corners=False)
            blurred = blur_reflected(upsampled, sigma=sigma)[:, 0]
            for fusion, maps in fusions(learned[indices], blurred, quantiles[category], weights).items():
                yield f"sigma {sigma:g}, {fusion}", maps
    return maps_of


@dataclass
class MemoryCandidates:
    """The memories tried: tokens by `backbone` and `recipe`, on each grid stride x epsilon-net radius, each map blurred
    by each sigma and fused by each weight."""

    backbone: str
    recipe: TokenRecipe
    strides: list[int]
    radii: list[float]
    sigmas: list[float]
    weights: list[float]

    def settings(self) -> list[str]:
        fusions = [f"weighted {w:g}" for w in self.weights] + ["normal units"]
        return [f"stride {s}, radius {r:g}, sigma {g:g}, {f}, kernel {k}"
                for s, r, g, f, k in itertools.product(self.strides, self.radii, self.sigmas, fusions, KERNELS)]


def evaluate(model: MALA, train: ImageCache, test: ImageCache, size: int, candidates: MemoryCandidates,
             save: Callable[[dict, dict, dict], None], anomalies: tuple[str, ...] = ("large",)) -> None:
    """Figures per category and candidate on both splits, the categories' normal quantiles, and the memory rows per
    memory, split and category (what a search costs), passed to `save` after each memory (a long run keeps what it
    has done)."""
    fit, validation = validation_split(train, size, anomalies)
    quantiles = normal_quantiles(model, fit)
    splits = {"validation": (fit, validation), "test": (train, test)}
    learned = {split: learned_maps(model, target) for split, (_, target) in splits.items()}
    figures: dict = {}
    memory_rows: dict = {}
    for stride, radius in itertools.product(candidates.strides, candidates.radii):
        memory_name = f"stride {stride}, radius {radius:g}"
        for split, (memory_cache, target) in splits.items():
            print(f"memory {memory_name}, {split}", file=sys.stderr)
            memory, sections = memory_model(candidates.backbone, stride, memory_cache, candidates.recipe, radius)
            memory_rows.setdefault(memory_name, {})[split] = {
                category: len(memory.memory.section_rows(k)) for category, k in sections.items()}
            distances = scaled_distances(memory, target, sections)
            maps_of = fused_maps(learned[split], distances, quantiles, (size, size), candidates.sigmas,
                                 candidates.weights)
            for category, rows in category_figures(target, maps_of, KERNELS).items():
                for setting, row in rows.items():
                    figures.setdefault(category, {}).setdefault(f"{memory_name}, {setting}", {})[split] = row
        save(figures, quantiles, memory_rows)


def protocol_inputs(checkpoint: Path, roots: list[str], threads: int) -> tuple[MALA, int, ImageCache, ImageCache]:
    """The protocol's trained model (in eval mode), its image size and the data's decoded training and test images,
    with torch on `threads` threads."""
    torch.set_num_threads(threads)
    model, cfg, _ = load_trained_model(checkpoint)
    size = cfg.model.image_shape[0]
    samples = scan_roots(roots)
    train = ImageCache.build(train_samples(samples), size, desc="decoding training images")
    test = ImageCache.build(test_samples(samples), size, desc="decoding test images")
    return model.eval(), size, train, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="a model trained on the protocol's split")
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--memory-backbone", default="efficientnet_lite2")
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16], help="the memory's grid strides to try")
    parser.add_argument("--memory-pool", type=int, default=3)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 4.0], help="the memory map's blurs to try")
    parser.add_argument("--memory-norm", choices=NORMS, default="token")
    parser.add_argument("--memory-radius", type=float, nargs="+", default=[load_config("tiny").model.memory_radius],
                        help="the memory's epsilon-net radii to try, in units of its normal distance scale")
    parser.add_argument("--weights", type=float, nargs="+", default=WEIGHTS, help="the weighted fusions to try")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (1 for runs side by side)")
    parser.add_argument("--validation-anomalies", nargs="+", choices=VALIDATION_ANOMALIES, default=["large"],
                        help="the synthetic anomalies of the validation images (bench/selection.py; small ones rank "
                             "map candidates like the test sets, BENCHMARKS.md \"A map from two grids\")")
    args = parser.parse_args()
    model, size, train, test = protocol_inputs(args.checkpoint, args.data, args.threads)
    candidates = MemoryCandidates(args.memory_backbone, TokenRecipe(args.memory_pool, args.memory_norm), args.strides,
                                  args.memory_radius, args.sigmas, args.weights)
    old_memory = candidates.recipe == TokenRecipe() and args.memory_backbone == "efficientnet_lite2"
    report: dict = {}

    def save(figures: dict, quantiles: dict, memory_rows: dict) -> None:
        report.update({"checkpoint": str(args.checkpoint), "data": args.data, "normal_quantiles": quantiles,
                       "memory": {"backbone": args.memory_backbone, "pool": candidates.recipe.pool,
                                  "norm": candidates.recipe.norm, "rows": memory_rows},
                       "settings": candidates.settings(), "figures": figures,
                       "summary": summary(figures, SHIPPED if old_memory else None)})
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))

    evaluate(model, train, test, size, candidates, save, tuple(args.validation_anomalies))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
