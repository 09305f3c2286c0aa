"""Each category's map fusion chosen on its training images (`mala tune`): a model trained on 80 % of them maps the
held-out 20 %, each also with a small synthetic anomaly (`split.validation_split`), and each candidate fusion is
scored there by the mean of its pixel AUROC and AUPRO. No test image is read.

The candidates are the grid the protocol was validated on (BENCHMARKS.md, "A map from two grids"): the memory map's
weight 0.5 or 0.75, and the share of the score memory's coarse distances in it, 0, 0.33 or 0.5; with a trained global
map each also with the stage-2 map's place shared half-and-half with it (BENCHMARKS.md, "A global map"). Small
anomalies (thin cracks, pasted specks) were the validation kind whose ranking of these candidates predicted the test's
best; large textured ones and broad faint shades ranked them worse (BENCHMARKS.md, "Broad, faint validation defects").

Where a category's images can be mapped more than once within the budget `run.mirror_gflops` (FLOPs a model input
may cost), each candidate is also scored on the maps averaged with those of one or two mirror views of every image
(left-right, then up-down; `MALA.mirrored`): a symmetric category's mirrored image reads like another normal one,
and the average halves the nearest neighbour's noise (BENCHMARKS.md, "Mirror views chosen per category").

With the pick, each category's map gets its normal level (`map_levels`: a high quantile of the picked map over the
held-out normal images), by which the model divides it, so that a map means the same in every category and an image
routed to the wrong one is not put out of scale (BENCHMARKS.md, "A map that means the same in every category").
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

from mala.data.dataset import ImageCache, to_tensor
from mala.eval.cost import search_flops, view_flops
from mala.eval.metrics import compute_metrics
from mala.model import MALA
from mala.model.mala import MIRROR_VIEWS, MapParts
from mala.model.maps import cut_tiles, image_score
from mala.progress import progress
from mala.tiling import TileGrid

MAP_LEVEL_QUANTILE = 0.99  # of a category's normal held-out pixels: its anomaly map's normal level
LEVEL_SAMPLE = 1 << 20  # pixels the level's quantile reads at most (a stride through all of them)
MEMORY_WEIGHTS = (0.5, 0.75)
SCORE_MAP_SHARES = (0.0, 0.33, 0.5)
GLOBAL_SHARES = (0.0, 0.5)
VALIDATION_ANOMALIES = ("small",)
MIRROR_NAMES = ("", "mirrored left-right", "mirrored left-right and up-down")  # by a fusion's mirror views


@dataclass(frozen=True)
class Fusion:
    """How a category's anomaly map is fused (`MALA.fused_maps`)."""

    memory_weight: float
    score_map_share: float
    global_share: float = 0.0
    mirrors: int = 0  # how many of `MIRROR_VIEWS` each image is also mapped in, every view's maps averaged

    def __str__(self) -> str:
        named = f"memory weight {self.memory_weight:g}, coarse share {self.score_map_share:g}"
        return named + (f", global share {self.global_share:g}" if self.global_share else "") + self._mirrored

    @property
    def label(self) -> str:
        """Short, for a picture's titles."""
        return f"w {self.memory_weight:g}, share {self.score_map_share:g}" + (
            f", global {self.global_share:g}" if self.global_share else "") + self._mirrored

    @property
    def _mirrored(self) -> str:
        return f", {MIRROR_NAMES[self.mirrors]}" if self.mirrors else ""

    @property
    def values(self) -> tuple[float, float, float]:
        """The three numbers, in `MALA.fused_maps`' order (a row of `section_fusion`)."""
        return self.memory_weight, self.score_map_share, self.global_share


@dataclass
class CategoryChoice:
    """One category's candidates with their validation figures, in the order they were scored (the config's first),
    and the pick."""

    validation: dict[Fusion, tuple[float, float]]  # pixel AUROC, AUPRO (%)

    def score(self, fusion: Fusion) -> float:
        return sum(self.validation[fusion]) / 2

    @property
    def default(self) -> Fusion:
        """The config's fusion."""
        return next(iter(self.validation))

    @property
    def chosen(self) -> Fusion:
        """The best by `score`; the first of equals, so a tie keeps the config's."""
        return max(self.validation, key=self.score)


def candidates(model: MALA, weights: tuple[float, ...] = MEMORY_WEIGHTS,
               shares: tuple[float, ...] = SCORE_MAP_SHARES) -> list[Fusion]:
    """The config's fusion first (a tie keeps it), then the grid; without a score memory there is no coarse share to
    choose, without a trained global map no global share."""
    cfg = model.cfg
    shares = shares if model.score_memory is not None else (cfg.score_map_share,)
    trained = model.global_map is not None and model.global_map.trained
    global_shares = GLOBAL_SHARES if trained else (cfg.global_share,)
    grid = [Fusion(w, s, g) for g, w, s in itertools.product(global_shares, weights, shares)]
    default = Fusion(cfg.memory_weight, cfg.score_map_share, cfg.global_share)
    return [default] + [fusion for fusion in grid if fusion != default]


@torch.no_grad()
def validation_parts(model: MALA, cache: ImageCache, sections: np.ndarray, batch_size: int = 16,
                     device: str = "cpu", grid: TileGrid | None = None, mirror: tuple[int, ...] = ()) -> MapParts:
    """`MALA.map_parts` of every image of `cache`, each read in its section, gathered on the CPU; with a tile `grid`,
    of every tile of each (about `batch_size` tiles a pass), which `MALA.fused_maps` stitches; with `mirror` (one of
    `MIRROR_VIEWS`), of the images' (tiles') mirror view."""
    model = model.to(device).eval()
    count = 1 if grid is None else grid.count
    step, parts = max(1, batch_size // count), []
    desc = "validation maps" + (f", mirror view {MIRROR_VIEWS.index(mirror) + 1}" if mirror else "")
    for start in progress(range(0, len(cache.samples), step), desc=desc, unit="batch"):
        images = torch.stack([to_tensor(image) for image in cache.images[start:start + step]]).to(device)
        chosen = torch.from_numpy(sections[start:start + step]).to(device)
        if grid is not None:
            images, chosen = cut_tiles(images, grid), chosen.repeat_interleave(count)
        parts.append(model.mirror_view(images, chosen, mirror, every_part=True) if mirror
                     else model.map_parts(images, chosen, every_part=True))
    joined = {name: torch.cat([p.maps()[name].cpu() for p in parts]) for name in parts[0].maps()}
    return MapParts(sections=torch.from_numpy(sections).repeat_interleave(count), grid=grid, **joined)


def mirror_allowance(model: MALA, categories: list[str], budget_gflops: float,
                     growth: dict[str, float] | None = None) -> dict[str, int]:
    """Per category (in section order), the most mirror views its images may take: 1 + views passes of one view's
    cost within `budget_gflops` a model input. A view's cost: `view_flops` in the category's section (every part of
    the map computed), its search (`search_flops`) taken `growth` times (None: once), as large as the section will
    be in the model that ships."""
    if budget_gflops <= 0:
        return {category: 0 for category in categories}
    growth = growth or {}
    costs = {c: view_flops(model, section) + (growth.get(c, 1.0) - 1) * search_flops(model, section)
             for section, c in enumerate(categories)}
    passes = {c: int(budget_gflops * 1e9 // cost) for c, cost in costs.items()}
    return {category: min(len(MIRROR_VIEWS), max(0, count - 1)) for category, count in passes.items()}


def memory_growth(model: MALA, cache: ImageCache, categories: list[str]) -> dict[str, float]:
    """Per category (in section order): the images the model's memory section holds, with the validation `cache`'s
    normal images added (the final memory holds them too), over the images it holds; a section, and its search's
    cost, grows about as much at most (an epsilon-net grows slower than its tokens)."""
    held = Counter(sample.category for sample in cache.samples if not sample.label)
    holds = torch.bincount(model.memory.image_sections.cpu(), minlength=len(categories)).tolist()
    return {c: (holds[s] + held[c]) / holds[s] if holds[s] else 1.0 for s, c in enumerate(categories)}


def validation_views(model: MALA, cache: ImageCache, sections: np.ndarray, allowance: dict[str, int],
                     batch_size: int = 16, device: str = "cpu", grid: TileGrid | None = None) -> list[MapParts]:
    """`validation_parts` of every image of `cache`, then (item k) averaged with its first k mirror views where its
    category's `allowance` takes k, as `MALA.mirrored` averages them (`MapParts.averaged_with`; elsewhere the parts
    of fewer views), the first item their `plain` parts. A view maps only the images that take it."""
    plain = validation_parts(model, cache, sections, batch_size, device, grid)
    every = plain.maps()
    taken = np.array([allowance.get(sample.category, 0) for sample in cache.samples])
    mirrored = []
    for count, dims in enumerate(MIRROR_VIEWS[:max(allowance.values(), default=0)], start=1):
        taking = np.flatnonzero(taken >= count)
        view = validation_parts(model, cache.subset(taking), sections[taking], batch_size, device, grid, dims)
        rows, spread = torch.from_numpy(_input_rows(grid, taking)), {}
        for name, value in view.maps().items():  # in place among all inputs; weighed 0 where not taken
            spread[name] = every[name].new_zeros(every[name].shape)
            spread[name][rows] = value
        mirrored.append(dataclasses.replace(plain, **spread))
    rows_taken = torch.from_numpy(taken).repeat_interleave(1 if grid is None else grid.count)
    views = [plain]
    for count in range(1, len(mirrored) + 1):
        weights = [(rows_taken >= view).float() for view in range(1, count + 1)]
        views.append(dataclasses.replace(plain.averaged_with(mirrored[:count], weights), plain=plain))
    return views


def _input_rows(grid: TileGrid | None, indices: np.ndarray) -> np.ndarray:
    """The rows of parts that hold images `indices`: the images', or all their tiles'."""
    return indices if grid is None else (indices[:, None] * grid.count + np.arange(grid.count)).ravel()


def part_of(parts: MapParts, indices: np.ndarray) -> MapParts:
    """The parts of the images `indices` (of all their tiles, for parts of tiles)."""
    chosen = torch.from_numpy(_input_rows(parts.grid, indices))
    return dataclasses.replace(parts, plain=None if parts.plain is None else part_of(parts.plain, indices),
                               **{name: value[chosen] for name, value in
                                  [("sections", parts.sections), *parts.maps().items()] if value is not None})


def choose_fusion(model: MALA, cache: ImageCache, views: MapParts | list[MapParts],
                  fusions: list[Fusion] | None = None, allowance: dict[str, int] | None = None
                  ) -> dict[str, CategoryChoice]:
    """Per category of the validation `cache` (with its parts, or `validation_views`): every candidate's (`fusions`,
    the config's first; None: `candidates`), with each number of mirror views up to the category's `allowance` (None:
    none), pixel AUROC and AUPRO, and the best by their mean."""
    model, choices = model.cpu(), {}
    views = [views] if isinstance(views, MapParts) else views
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        if labels.all() or not labels.any():
            raise ValueError(f"validation of category '{category}' needs normal and anomalous images")
        masks = np.stack([cache.mask(i) for i in indices])
        figures = {}
        for mirrors in range((allowance or {}).get(category, 0) + 1):
            category_parts = part_of(views[mirrors], indices)
            for fusion in fusions or candidates(model):
                maps = model.fused_maps(category_parts, *fusion.values, levelled=False)[:, 0]
                row = compute_metrics(labels, image_score(maps, 1).numpy(), masks, maps.numpy())
                figures[dataclasses.replace(fusion, mirrors=mirrors)] = (100 * row["pixel_auroc"],
                                                                         100 * row["pixel_aupro"])
        choices[category] = CategoryChoice(figures)
    return choices


def section_fusion(choices: dict[str, CategoryChoice], categories: list[str]) -> torch.Tensor:
    """The model's `section_fusion` buffer (S, 3) for its categories in section order."""
    return torch.tensor([choices[c].chosen.values for c in categories])


def section_mirrors(choices: dict[str, CategoryChoice], categories: list[str]) -> torch.Tensor:
    """The model's `section_mirrors` buffer (S,) for its categories in section order."""
    return torch.tensor([choices[c].chosen.mirrors for c in categories])


def map_levels(model: MALA, cache: ImageCache, views: list[MapParts], choices: dict[str, CategoryChoice],
               categories: list[str]) -> torch.Tensor:
    """The model's `section_map_levels` buffer (S,) for its categories in section order: the `MAP_LEVEL_QUANTILE` of
    the chosen fusion's anomaly map over each category's normal validation images of `cache` (with its
    `validation_views`)."""
    model, levels = model.cpu(), []
    by_category = cache.indices_by_category()
    for category in categories:
        normal = np.array([i for i in by_category[category] if not cache.samples[i].label])
        chosen = choices[category].chosen
        maps = model.fused_maps(part_of(views[chosen.mirrors], normal), *chosen.values, levelled=False)[:, 0].flatten()
        step = max(1, len(maps) // LEVEL_SAMPLE)
        levels.append(float(torch.quantile(maps[::step], MAP_LEVEL_QUANTILE).clamp_min(1e-6)))
    return torch.tensor(levels)


@dataclass
class SectionTuning:
    """What tuning stores in a model, per memory section: the fusion (S, 3), the map's normal level (S,) and the mirror
    views (S,)."""

    fusion: torch.Tensor
    map_levels: torch.Tensor
    mirrors: torch.Tensor

    @classmethod
    def of(cls, model: MALA, cache: ImageCache, views: MapParts | list[MapParts],
           choices: dict[str, CategoryChoice], categories: list[str]) -> SectionTuning:
        """The picks of `choices` and their maps' normal levels (`map_levels`), in section order."""
        views = [views] if isinstance(views, MapParts) else views
        return cls(section_fusion(choices, categories), map_levels(model, cache, views, choices, categories),
                   section_mirrors(choices, categories))

    def apply(self, model: MALA) -> None:
        model.section_fusion = self.fusion.to(model.section_fusion.device)
        model.section_map_levels = self.map_levels.to(model.section_map_levels.device)
        model.set_section_mirrors(self.mirrors)

    def store(self, state: dict[str, torch.Tensor]) -> None:
        """Into a model's state dict (as a checkpoint holds it)."""
        state["section_fusion"], state["section_map_levels"] = self.fusion, self.map_levels
        state["section_mirrors"] = self.mirrors


def choice_table(choices: dict[str, CategoryChoice]) -> str:
    """Markdown: per category, the config's fusion and the chosen one with their validation pixel AUROC / AUPRO, and
    how many mirror views the budget offered."""
    lines = ["| category | chosen | validation pixel AUROC / AUPRO | config's | validation pixel AUROC / AUPRO | "
             "mirror views offered |", "|---|---|---|---|---|---|"]
    for category, choice in choices.items():
        chosen, default = (choice.validation[f] for f in (choice.chosen, choice.default))
        offered = max(fusion.mirrors for fusion in choice.validation)
        lines.append(f"| {category} | {choice.chosen} | {chosen[0]:.1f} / {chosen[1]:.1f} | {choice.default} | "
                     f"{default[0]:.1f} / {default[1]:.1f} | {offered} |")
    return "\n".join(lines)


def tuned_fusion_line(model: MALA, categories: list[str]) -> str | None:
    """One line naming each category's fusion as tuning (`run.tune` or `mala tune`) stored it in the model; None for
    an untuned model."""
    if not model.hybrid or model.section_fusion.shape[0] == 0:
        return None
    mirrors = model.mirror_counts or (0,) * len(categories)
    chosen = "; ".join(f"{category} {Fusion(*values, mirrors=count).label}"
                       for category, values, count in zip(categories, model.section_fusion.tolist(), mirrors))
    return f"map fusion tuned on training images: {chosen}"
