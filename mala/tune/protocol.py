"""Each category's map fusion chosen on its training images (`mala tune`): a model trained on 80 % of them maps the
held-out 20 %, each also with a small synthetic anomaly (`split.validation_split`), and each candidate fusion is
scored there by the mean of its pixel AUROC and AUPRO. No test image is read.

The candidates are the grid the protocol was validated on (BENCHMARKS.md, "A map from two grids"): the memory map's
weight 0.5 or 0.75, and the share of the score memory's coarse distances in it, 0, 0.33 or 0.5; with a trained global
map each also with the stage-2 map's place shared half-and-half with it (BENCHMARKS.md, "A global map"). Small
anomalies (thin cracks, pasted specks) were the validation kind whose ranking of these candidates predicted the test's
best; large textured ones and broad faint shades ranked them worse (BENCHMARKS.md, "Broad, faint validation defects").

With the pick, each category's map gets its normal level (`map_levels`: a high quantile of the picked map over the
held-out normal images), by which the model divides it, so that a map means the same in every category and an image
routed to the wrong one is not put out of scale (BENCHMARKS.md, "A map that means the same in every category").
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np
import torch

from mala.data.dataset import ImageCache, to_tensor
from mala.eval.metrics import compute_metrics
from mala.model import MALA
from mala.model.mala import MapParts
from mala.model.maps import cut_tiles, image_score
from mala.progress import progress
from mala.tiling import TileGrid

MAP_LEVEL_QUANTILE = 0.99  # of a category's normal held-out pixels: its anomaly map's normal level
LEVEL_SAMPLE = 1 << 20  # pixels the level's quantile reads at most (a stride through all of them)
MEMORY_WEIGHTS = (0.5, 0.75)
SCORE_MAP_SHARES = (0.0, 0.33, 0.5)
GLOBAL_SHARES = (0.0, 0.5)
VALIDATION_ANOMALIES = ("small",)
MAP_PARTS = ("learned", "distance", "score_distance", "global_distance")  # the maps of a `MapParts`, one per image


@dataclass(frozen=True)
class Fusion:
    """How a category's anomaly map is fused (`MALA.fused_maps`)."""

    memory_weight: float
    score_map_share: float
    global_share: float = 0.0

    def __str__(self) -> str:
        named = f"memory weight {self.memory_weight:g}, coarse share {self.score_map_share:g}"
        return named + (f", global share {self.global_share:g}" if self.global_share else "")

    @property
    def label(self) -> str:
        """Short, for a picture's titles."""
        return f"w {self.memory_weight:g}, share {self.score_map_share:g}" + (
            f", global {self.global_share:g}" if self.global_share else "")

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
                     device: str = "cpu", grid: TileGrid | None = None) -> MapParts:
    """`MALA.map_parts` of every image of `cache`, each read in its section, gathered on the CPU; with a tile `grid`,
    of every tile of each (about `batch_size` tiles a pass), which `MALA.fused_maps` stitches."""
    model = model.to(device).eval()
    count = 1 if grid is None else grid.count
    step, parts = max(1, batch_size // count), []
    for start in progress(range(0, len(cache.samples), step), desc="validation maps", unit="batch"):
        images = torch.stack([to_tensor(image) for image in cache.images[start:start + step]]).to(device)
        chosen = torch.from_numpy(sections[start:start + step]).to(device)
        if grid is not None:
            images, chosen = cut_tiles(images, grid), chosen.repeat_interleave(count)
        parts.append(model.map_parts(images, chosen, every_part=True))
    joined = {name: torch.cat([getattr(p, name).cpu() for p in parts]) if getattr(parts[0], name) is not None
              else None for name in MAP_PARTS}
    return MapParts(sections=torch.from_numpy(sections).repeat_interleave(count), grid=grid, **joined)


def part_of(parts: MapParts, indices: np.ndarray) -> MapParts:
    """The parts of the images `indices` (of all their tiles, for parts of tiles)."""
    if parts.grid is not None:
        indices = (indices[:, None] * parts.grid.count + np.arange(parts.grid.count)).ravel()
    chosen = torch.from_numpy(indices)
    return dataclasses.replace(parts, **{name: value[chosen] for name in ("sections", *MAP_PARTS)
                                         if (value := getattr(parts, name)) is not None})


def choose_fusion(model: MALA, cache: ImageCache, parts: MapParts, fusions: list[Fusion] | None = None
                  ) -> dict[str, CategoryChoice]:
    """Per category of the validation `cache` (with its `parts`): every candidate's (`fusions`, the config's first;
    None: `candidates`) pixel AUROC and AUPRO, and the best by their mean."""
    model, choices = model.cpu(), {}
    for category, indices in cache.indices_by_category().items():
        labels = np.array([cache.samples[i].label for i in indices])
        if labels.all() or not labels.any():
            raise ValueError(f"validation of category '{category}' needs normal and anomalous images")
        masks = np.stack([cache.mask(i) for i in indices])
        category_parts, figures = part_of(parts, indices), {}
        for fusion in fusions or candidates(model):
            maps = model.fused_maps(category_parts, *fusion.values, levelled=False)[:, 0]
            row = compute_metrics(labels, image_score(maps, 1).numpy(), masks, maps.numpy())
            figures[fusion] = (100 * row["pixel_auroc"], 100 * row["pixel_aupro"])
        choices[category] = CategoryChoice(figures)
    return choices


def section_fusion(choices: dict[str, CategoryChoice], categories: list[str]) -> torch.Tensor:
    """The model's `section_fusion` buffer (S, 3) for its categories in section order."""
    return torch.tensor([choices[c].chosen.values for c in categories])


def map_levels(model: MALA, cache: ImageCache, parts: MapParts, choices: dict[str, CategoryChoice],
               categories: list[str]) -> torch.Tensor:
    """The model's `section_map_levels` buffer (S,) for its categories in section order: the `MAP_LEVEL_QUANTILE` of
    the chosen fusion's anomaly map over each category's normal validation images of `cache` (with its `parts`)."""
    model, levels = model.cpu(), []
    by_category = cache.indices_by_category()
    for category in categories:
        normal = np.array([i for i in by_category[category] if not cache.samples[i].label])
        fusion = choices[category].chosen.values
        maps = model.fused_maps(part_of(parts, normal), *fusion, levelled=False)[:, 0].flatten()
        step = max(1, len(maps) // LEVEL_SAMPLE)
        levels.append(float(torch.quantile(maps[::step], MAP_LEVEL_QUANTILE).clamp_min(1e-6)))
    return torch.tensor(levels)


@dataclass
class SectionTuning:
    """What tuning stores in a model, per memory section: the fusion (S, 3) and the map's normal level (S,)."""

    fusion: torch.Tensor
    map_levels: torch.Tensor

    @classmethod
    def of(cls, model: MALA, cache: ImageCache, parts: MapParts, choices: dict[str, CategoryChoice],
           categories: list[str]) -> SectionTuning:
        """The picks of `choices` and their maps' normal levels (`map_levels`), in section order."""
        return cls(section_fusion(choices, categories), map_levels(model, cache, parts, choices, categories))

    def apply(self, model: MALA) -> None:
        model.section_fusion = self.fusion.to(model.section_fusion.device)
        model.section_map_levels = self.map_levels.to(model.section_map_levels.device)

    def store(self, state: dict[str, torch.Tensor]) -> None:
        """Into a model's state dict (as a checkpoint holds it)."""
        state["section_fusion"], state["section_map_levels"] = self.fusion, self.map_levels


def choice_table(choices: dict[str, CategoryChoice]) -> str:
    """Markdown: per category, the config's fusion and the chosen one with their validation pixel AUROC / AUPRO."""
    lines = ["| category | chosen | validation pixel AUROC / AUPRO | config's | validation pixel AUROC / AUPRO |",
             "|---|---|---|---|---|"]
    for category, choice in choices.items():
        chosen, default = (choice.validation[f] for f in (choice.chosen, choice.default))
        lines.append(f"| {category} | {choice.chosen} | {chosen[0]:.1f} / {chosen[1]:.1f} | {choice.default} | "
                     f"{default[0]:.1f} / {default[1]:.1f} |")
    return "\n".join(lines)


def tuned_fusion_line(model: MALA, categories: list[str]) -> str | None:
    """One line naming each category's fusion as tuning (`run.tune` or `mala tune`) stored it in the model; None for
    an untuned model."""
    if not model.hybrid or model.section_fusion.shape[0] == 0:
        return None
    chosen = "; ".join(f"{category} {Fusion(*values).label}"
                       for category, values in zip(categories, model.section_fusion.tolist()))
    return f"map fusion tuned on training images: {chosen}"
