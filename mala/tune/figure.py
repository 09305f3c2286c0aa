"""`mala tune`'s picture: per category, a validation crack and speck with the maps of the config's fusion and of the
category's pick, so a user sees what the choice changed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mala.data.dataset import ImageCache
from mala.deploy.render import overlay
from mala.model import MALA
from mala.model.mala import MapParts
from mala.tune.protocol import CategoryChoice, part_of
from mala.tune.split import VALIDATION_KINDS

SHOWN_KINDS = VALIDATION_KINDS[2:]  # the small anomalies: crack, speck


def first_of_kind(cache: ImageCache, indices: np.ndarray, kind: str) -> int | None:
    """The first of the images `indices` whose synthetic anomaly is `kind` (its name ends in it)."""
    return next((int(i) for i in indices if cache.samples[i].path.stem.endswith(f"_{kind}")), None)


def draw_choices(path: Path, model: MALA, cache: ImageCache, views: list[MapParts],
                 choices: dict[str, CategoryChoice]) -> Path:
    """A row per category: for a crack and a speck of its validation images, the image (the defect outlined) and the
    maps of the config's fusion and of the pick (each of its mirror views' parts, `validation_views`)."""
    by_category = cache.indices_by_category()
    figure = Figure(figsize=(2.0 * 3 * len(SHOWN_KINDS), 2.3 * len(choices)))
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(choices), 3 * len(SHOWN_KINDS), squeeze=False)
    for row, (category, choice) in enumerate(choices.items()):
        for place, kind in enumerate(SHOWN_KINDS):
            index = first_of_kind(cache, by_category[category], kind)
            panels = grid[row, 3 * place:3 * place + 3]
            if index is None:
                continue
            maps = {fusion: model.fused_maps(part_of(views[fusion.mirrors], np.array([index])), *fusion.values)[0, 0]
                    .numpy() for fusion in (choice.default, choice.chosen)}
            panels[0].imshow(cache.images[index])
            panels[0].contour(cache.mask(index), levels=[0.5], colors="red", linewidths=0.6)
            panels[0].set_title(f"{category}: {kind}", fontsize=8)
            for axes, (label, fusion) in zip(panels[1:], (("config's", choice.default), ("chosen", choice.chosen))):
                axes.imshow(overlay(cache.images[index], maps[fusion]))
                axes.set_title(f"{label}: {fusion.label}", fontsize=8)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    return path
