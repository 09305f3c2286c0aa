"""The normal-feature memory taken apart, from mala's memory to a plain 1-NN, chosen on training images only (issue
22): which tokens, bank, blur and score make the best memory map.

    python bench/memory_factors.py --data ../shared/data/magnetic_tile ../shared/data/metal_plate \
        ../shared/data/deeppcb ../shared/data/pv_el_cells --out runs/memory_factors.json

No training: the backbone is frozen. Per backbone (`--backbones`), the raw stage maps of every image are computed once
(every stage some `--stage-sets` entry names; `tiny`'s 2 + 4 by default); each candidate takes its stages' maps and
turns them into tokens (`mala.model.backbone.TokenRecipe`) on a grid of stride 8
or 16, with or without 3 x 3 pooling, normalised per token (layer norm), per image or not at all, and fills one
memory per category with a bank:
`random N` (N random tokens of the category, as bench/nearest_neighbour.py) or `net R` (the epsilon-net of radius
R x the normal scale that `mala train` builds). Distances are divided by the category's normal scale
(`held_out_scale`) as in `mala`, mapped with each blur sigma and scored with each kernel. Validation and test as
bench/selection.py: the protocol's 80 % of the normal training images fill the memory for the validation images
(the other 20 %, each also with a self-texture or cut-paste anomaly, or with `--validation-anomalies small` a crack
or speck as `mala tune` has them); all training images fill it for the test sets. Per category and on the mean, Spearman's rho between the validation and test rankings, the protocol's pick
and the test-best; every figure as JSON.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.selection import blurred_maps, category_figures, summary  # noqa: E402
from mala.data.dataset import ImageCache  # noqa: E402
from mala.data.sources import scan_roots, test_samples, train_samples  # noqa: E402
from mala.model.backbone import NORMS, EfficientNetLite, TokenRecipe, pretrained_backbone, tokens_on_grid  # noqa: E402
from mala.model.memory import FeatureMemory, MemorySection  # noqa: E402
from mala.progress import progress  # noqa: E402
from mala.train.fill_memory import cover, held_out_scale, thinned  # noqa: E402
from mala.tune.split import validation_split  # noqa: E402

SCALE_IMAGES = 60  # images per category whose held-out distances give its scale (a bounded cost at stride 8)
SEED = 0
NORM_NAMES = {"token": "layer norm", "image": "image norm", "none": "raw"}


@dataclass(frozen=True)
class Candidate:
    stride: int
    recipe: TokenRecipe
    bank: str  # "random N" or "net R"
    stages: tuple[int, ...] = (2, 4)
    shift: int = 0  # px: the memory also holds the tokens of its images shifted by this much down and right
    mirror: str = "none"  # "lr", "ud" or "lr+ud": the memory also holds the tokens of its images mirrored so
    balance: str = "none"  # "channel" or "stage": each channel, or each stage's channels, divided by its normal std
    components: int = 0  # the tokens projected on their category's first principal components (0: not)

    @property
    def name(self) -> str:
        stages = "" if self.stages == (2, 4) else f"stages {'+'.join(map(str, self.stages))}, "
        views = f", shift {self.shift}" if self.shift else ""
        views += f", mirrored {self.mirror}" if self.mirror != "none" else ""
        balance = f", {self.balance} std" if self.balance != "none" else ""
        components = f", {self.components} components" if self.components else ""
        return (f"{stages}stride {self.stride}, pool {self.recipe.pool}, {NORM_NAMES[self.recipe.norm]}, "
                f"{self.bank}{views}{balance}{components}")

    @property
    def extra_views(self) -> list[str]:
        """The views of the training images (`viewed`) whose tokens the memory holds beside theirs."""
        return ([f"shift {self.shift}"] if self.shift else []) + ([] if self.mirror == "none" else self.mirror.split("+"))


def viewed(images: torch.Tensor, view: str) -> torch.Tensor:
    """Images (B, 3, H, W) as they are (""), moved K px down and right ("shift K", mirrored in at the top and left
    edges) or mirrored left-right ("lr") or up-down ("ud")."""
    if view.startswith("shift"):
        shift = int(view.split()[1])
        return F.pad(images, (shift, 0, shift, 0), mode="reflect")[..., :images.shape[2], :images.shape[3]]
    return {"": images, "lr": images.flip(-1), "ud": images.flip(-2)}[view]


@torch.no_grad()
def stage_maps(backbone: EfficientNetLite, cache: ImageCache, stages: tuple[int, ...], batch: int = 16,
               view: str = "") -> dict[int, torch.Tensor]:
    """The backbone's maps of `stages` for every cached image in `view` (`viewed`), float16 (half the memory;
    distances barely move)."""
    chunks = []
    for start in progress(range(0, len(cache.images), batch), desc="stage maps", unit="batch", leave=False):
        images = torch.from_numpy(cache.images[start:start + batch]).permute(0, 3, 1, 2).float() / 255
        images = viewed(images, view)
        chunks.append([m.half() for m in backbone.features(images, stages)])
    return {stage: torch.cat(parts) for stage, parts in zip(stages, zip(*chunks))}


def tokens(maps: list[torch.Tensor], indices: np.ndarray, stride: int, size: int, recipe: TokenRecipe
           ) -> torch.Tensor:
    """Tokens (len(indices), rows x columns, C) of the chosen images by `recipe`."""
    grid = (size // stride, size // stride)
    chosen = torch.from_numpy(np.asarray(indices))
    return torch.cat([tokens_on_grid([m[part].float() for m in maps], grid, recipe)
                      for part in chosen.split(64)])


def bank_rows(normal: torch.Tensor, bank: str, scale: float, rng: np.random.Generator) -> torch.Tensor:
    """The memory rows of one category's normal tokens (images, N, C); a net over `N` rows cut to N (`cut N`:
    `thinned`, as `mala train` cuts a section over its size; `random N`: a random subset, as it did before)."""
    kind, value, *cut = bank.split()
    every = normal.flatten(0, 1)
    if kind == "random":
        return random_subset(every, int(value), rng)
    rows = cover(every, float(value) * scale, SEED)
    if not cut or len(rows) <= int(cut[1]):
        return rows
    if cut[0] == "random":
        return random_subset(rows, int(cut[1]), rng)
    return thinned(MemorySection(rows, scale, rows[:0]), int(cut[1]), rng).tokens


def random_subset(rows: torch.Tensor, count: int, rng: np.random.Generator) -> torch.Tensor:
    return rows[torch.from_numpy(np.sort(rng.permutation(len(rows))[:count]))]


def balance_weights(normal: torch.Tensor, stage_channels: list[int], balance: str) -> torch.Tensor | None:
    """Per-channel factors (C,) that give each channel (`channel`) or each stage's channels together (`stage`) unit
    standard deviation over the category's normal tokens (images, N, C); None for `none`."""
    if balance == "none":
        return None
    variance = normal.flatten(0, 1).var(dim=0)
    if balance == "stage":
        variance = torch.cat([block.mean().expand(len(block)) for block in variance.split(stage_channels)])
    return variance.clamp_min(1e-12).rsqrt()


def principal_projection(normal: torch.Tensor, components: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The mean (C,) and the first `components` principal axes (C, components) of a category's normal tokens
    (images, N, C), from at most 100,000 of them; None for 0."""
    if not components:
        return None
    every = normal.flatten(0, 1)
    sample = every[torch.randperm(len(every), generator=torch.Generator().manual_seed(SEED))[:100_000]]
    mean = sample.mean(dim=0)
    _, _, axes = torch.linalg.svd(sample - mean, full_matrices=False)
    return mean, axes[:components].T.contiguous()


def candidate_distances(candidate: Candidate, memory_maps: dict[int, dict[int, torch.Tensor]],
                        memory_groups: dict[str, np.ndarray], target_maps: dict[int, torch.Tensor],
                        target: ImageCache, size: int) -> torch.Tensor:
    """Each target image's tokens' nearest distances / scale in its category's memory, (N, rows, columns);
    `memory_maps` by view ("" and the candidate's `extra_views`), the scale from the images as they are."""
    rows = size // candidate.stride
    extra = [[memory_maps[view][s] for s in candidate.stages] for view in candidate.extra_views]
    memory_maps, target_maps = ([maps[s] for s in candidate.stages] for maps in (memory_maps[""], target_maps))
    out = torch.empty(len(target.images), rows, rows)
    for category, indices in target.indices_by_category().items():
        rng = np.random.default_rng(SEED)
        normal = tokens(memory_maps, memory_groups[category], candidate.stride, size, candidate.recipe)
        weights = balance_weights(normal, [m.shape[1] for m in memory_maps], candidate.balance)
        normal = normal if weights is None else normal * weights
        projection = principal_projection(normal, candidate.components)
        normal = normal if projection is None else (normal - projection[0]) @ projection[1]
        scale = held_out_scale(normal[torch.from_numpy(rng.permutation(len(normal))[:SCALE_IMAGES])], rng)
        memory = FeatureMemory(normal.shape[-1])
        for maps in extra:  # balanced and projected as the images' own tokens
            more = tokens(maps, memory_groups[category], candidate.stride, size, candidate.recipe)
            more = more if weights is None else more * weights
            normal = torch.cat([normal, more if projection is None else (more - projection[0]) @ projection[1]], 1)
        memory.fill(bank_rows(normal, candidate.bank, scale, rng), scale)
        print(f"{category}: memory of {len(memory.tokens)} rows", file=sys.stderr)  # its search's cost
        del normal
        for part in np.array_split(indices, max(1, len(indices) // 32)):
            queries = tokens(target_maps, part, candidate.stride, size, candidate.recipe)
            queries = queries if weights is None else queries * weights
            queries = queries if projection is None else (queries - projection[0]) @ projection[1]
            out[torch.from_numpy(part)] = (memory.nearest_distance(queries) / scale).reshape(-1, rows, rows)
    return out


def positions(cache: ImageCache, within: ImageCache) -> np.ndarray:
    """The index in `within` of each image of `cache` (a subset of it)."""
    place = {sample.path: k for k, sample in enumerate(within.samples)}
    return np.array([place[sample.path] for sample in cache.samples])


def evaluate(train: ImageCache, test: ImageCache, size: int, backbones: list[str], candidates: list[Candidate],
             sigmas: list[float], kernels: list[int], out: Path, anomalies: tuple[str, ...] = ("large",)) -> dict:
    fit, validation = validation_split(train, size, anomalies)
    stages = tuple(sorted({stage for candidate in candidates for stage in candidate.stages}))
    fit_in_train = positions(fit, train)
    groups = {"validation": {c: fit_in_train[i] for c, i in fit.indices_by_category().items()},
              "test": train.indices_by_category()}
    figures: dict = {}
    for name in backbones:
        backbone = pretrained_backbone(name, last_stage=max(stages))
        train_maps = {view: stage_maps(backbone, train, stages, view=view)
                      for view in sorted({""}.union(*(candidate.extra_views for candidate in candidates)))}
        targets = {split: (cache, stage_maps(backbone, cache, stages)) for split, cache in
                   (("validation", validation), ("test", test))}
        for candidate in candidates:
            label = f"{name.removeprefix('efficientnet_')}, {candidate.name}"
            print(f"candidate: {label}", file=sys.stderr)
            for split, (target, target_maps) in targets.items():
                distances = candidate_distances(candidate, train_maps, groups[split], target_maps, target, size)
                rows = category_figures(target, blurred_maps(distances, (size, size), sigmas), kernels)
                for category, settings in rows.items():
                    for setting, row in settings.items():
                        figures.setdefault(category, {}).setdefault(f"{label}, {setting}", {})[split] = row
            out.write_text(json.dumps({"partial": True, "figures": figures}, indent=1))  # a kill loses one candidate
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "efficientnet_lite2"])
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--pools", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--norms", nargs="+", choices=NORMS, default=["token", "none"])
    parser.add_argument("--banks", nargs="+", default=["random 20000"],
                        help='"random N" and/or "net R", a net optionally cut: "net R cut N" or "net R random N"')
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 2.0, 4.0])
    parser.add_argument("--kernels", type=int, nargs="+", default=[1, 21])
    parser.add_argument("--stage-sets", nargs="+", default=["2,4"], help='backbone stages of the tokens, e.g. "2,3,4"')
    parser.add_argument("--shifts", type=int, nargs="+", default=[0],
                        help="px: the memory also holds its images' tokens shifted by this much (0: not)")
    parser.add_argument("--mirrors", nargs="+", choices=("none", "lr", "ud", "lr+ud"), default=["none"],
                        help="the memory also holds its images' tokens mirrored left-right, up-down or both")
    parser.add_argument("--balances", nargs="+", choices=("none", "channel", "stage"), default=["none"],
                        help="each channel, or each stage's channels, divided by its std over the normal tokens")
    parser.add_argument("--components", type=int, nargs="+", default=[0],
                        help="tokens projected on their category's first N principal components (0: not)")
    parser.add_argument("--validation-anomalies", nargs="+", choices=("large", "small"), default=["large"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    for bank in args.banks:
        kind, value, *cut = bank.split() + [""] * (2 - len(bank.split()))
        valid_cut = not cut or (kind == "net" and len(cut) == 2 and cut[0] in ("cut", "random") and cut[1].isdigit())
        if kind not in ("random", "net") or not value.replace(".", "", 1).isdigit() or not valid_cut:
            parser.error(f'--banks: expected "random N", "net R" or "net R cut|random N", got {bank!r}')
    torch.set_num_threads(2)
    stage_sets = [tuple(int(stage) for stage in entry.split(",")) for entry in args.stage_sets]
    candidates = [Candidate(stride, TokenRecipe(pool, norm), bank, stages, shift, mirror, balance, components)
                  for stages, stride, pool, norm, bank, shift, mirror, balance, components
                  in itertools.product(stage_sets, args.strides, args.pools, args.norms, args.banks, args.shifts,
                                       args.mirrors, args.balances, args.components)]
    samples = scan_roots(args.data)
    train = ImageCache.build(train_samples(samples), args.size, desc="decoding training images")
    test = ImageCache.build(test_samples(samples), args.size, desc="decoding test images")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figures = evaluate(train, test, args.size, args.backbones, candidates, args.sigmas, args.kernels, args.out,
                       tuple(args.validation_anomalies))
    report = {"data": args.data, "size": args.size, "summary": summary(figures, None), "figures": figures}
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))


if __name__ == "__main__":
    main()
