"""Everything a trained model outputs, in one place: the memory's distance map, the fusion of the two maps, the
image score (paper eq. 7), the reconstruction ablation's map, and tiled inference (cut, run, stitch).

Functions of tensors and of a model passed in: this module imports no model class, so `mala.model.mala` can use
the fusion while evaluation and deployment call `anomaly_maps` for the whole pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from mala.model.filters import blur_reflected
from mala.tiling import TileGrid

if TYPE_CHECKING:
    from mala.config import MalaConfig
    from mala.model.mala import MALA

Sections = int | torch.Tensor | None  # memory sections: one for all images, one per image (B,), or None: routed

PARTITION_SEED = 0  # the reconstruction map's patch partition: fixed, so a model's maps are reproducible

MapFunction = Callable[[torch.Tensor], torch.Tensor]  # images (N, 3, h, w) -> maps (N, ..., h, w)


def distance_map(distance: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """Scaled nearest-normal distances (B, 1, rows, columns) to a map (B, H, W) in [0, 1): upsampled bilinearly,
    smoothed (Gaussian, `sigma` px) and squashed by 1 - exp(-x)."""
    return mixed_distance_map([(distance, 1.0)], size, sigma)


def mixed_distance_map(shares: list[tuple[torch.Tensor, float | torch.Tensor]], size: tuple[int, int], sigma: float
                       ) -> torch.Tensor:
    """`distance_map` of the weighted sum of several grids' scaled distances (B, 1, rows, columns), each upsampled to
    the image first: every grid's distances are in units of its own normal scale, so they add up. A share is a
    number or one per image (B, 1, 1, 1); a grid of share 0 is not upsampled."""
    upsampled = sum(share * F.interpolate(distance, size=size, mode="bilinear", align_corners=False)
                    for distance, share in shares if isinstance(share, torch.Tensor) or share)
    return 1 - torch.exp(-blur_reflected(upsampled, sigma=sigma)[:, 0])


def fuse_maps(learned: torch.Tensor, remembered: torch.Tensor, memory_weight: float | torch.Tensor) -> torch.Tensor:
    """The hybrid's anomaly map: (1 - w) x stage-2 map + w x memory map (w a number, or one per map (B, 1, 1))."""
    return (1 - memory_weight) * learned + memory_weight * remembered


def image_score(anomaly_map: torch.Tensor, kernel: int) -> torch.Tensor:
    """Paper eq. 7: max of the k x k mean-filtered map, (B, H, W) -> (B,)."""
    kernel = min(kernel, *anomaly_map.shape[-2:]) | 1  # odd, so the pooled map keeps its size
    pooled = F.avg_pool2d(anomaly_map.unsqueeze(1), kernel, stride=1, padding=kernel // 2, count_include_pad=False)
    return pooled.flatten(1).amax(dim=1)


def patch_partition(num_patches: int, mask_ratio: float) -> list[torch.Tensor]:
    """round(1 / (1 - mask_ratio)) (at least 2) disjoint random sets of patch indices covering all patches, each
    about the size stage 1 keeps visible; seeded, so the same at every call."""
    parts = max(2, round(1 / (1 - mask_ratio)))
    order = np.random.default_rng(PARTITION_SEED).permutation(num_patches)  # numpy: a constant to torch.export
    return [torch.from_numpy(part) for part in np.array_split(order, parts)]


def hidden_reconstruction(model: MALA, images: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Every patch reconstructed only from passes that hide it: pass k shows set k of `patch_partition` (so about
    `mask_ratio` of the patches are hidden, as in training) and each patch takes the mean of its hidden passes."""
    batch, num_patches = images.shape[0], model.num_patches
    total = count = 0
    for visible in patch_partition(num_patches, mask_ratio):
        noise = torch.ones(batch, num_patches, device=images.device)
        noise[:, visible] = 0  # `random_masking` keeps the lowest noise: exactly this set
        recon = model.reconstruct(images, 1 - len(visible) / num_patches, noise)
        hidden = recon.mask.unsqueeze(-1)
        total = total + model.patchify(recon.image) * hidden
        count = count + hidden
    return model.unpatchify(total / count, 3)


def reconstruction_map(model: MALA, images: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The ablation's reconstruction-based map: mean absolute difference to `hidden_reconstruction`, so that a
    defect is predicted from its surroundings, not copied from its own visible pixels."""
    return (hidden_reconstruction(model, images, mask_ratio) - images).abs().mean(dim=1)


def cut_tiles(images: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(B, C, H, W) at the source size -> (B x tiles, C, h, w), each image's tiles together, row by row.

    Every position is a Python constant, so torch.export unrolls the loops and the ONNX export stays one graph with
    a dynamic batch size."""
    height, width = grid.tile
    tiles = [images[..., y:y + height, x:x + width] for y, x in grid.corners.tolist()]
    return torch.stack(tiles, dim=1).flatten(0, 1)


def stitch_maps(tile_maps: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """(B x tiles, ..., h, w) in `cut_tiles` order -> (B, ..., H, W): each pixel the mean of the tiles that hold it.

    Tiles are padded to their place and summed (a row of tiles at a time, so at most one row's padded copies exist
    at once); padding and adding export to ONNX where in-place slice updates would not stay simple."""
    (source_height, source_width), (height, width) = grid.source, grid.tile
    maps = tile_maps.unflatten(0, (-1, len(grid.rows), len(grid.columns)))
    canvas = None
    for row, y in enumerate(grid.rows):
        strip = sum(F.pad(maps[:, row, column], (x, source_width - x - width))
                    for column, x in enumerate(grid.columns))
        placed = F.pad(strip, (0, 0, y, source_height - y - height))
        canvas = placed if canvas is None else canvas + placed
    return canvas / torch.from_numpy(grid.coverage()).to(canvas)


def tiled_maps(images: torch.Tensor, grid: TileGrid, map_of: MapFunction) -> torch.Tensor:
    """The stitched maps (B, ..., H, W) of images (B, 3, H, W) at the source size; one batched `map_of` over all
    tiles."""
    return stitch_maps(map_of(cut_tiles(images, grid)), grid)


def model_maps(model: MALA, images: torch.Tensor, cfg: MalaConfig, sections: Sections = None
               ) -> tuple[torch.Tensor, Sections]:
    """The configured pipeline's anomaly map and the map the image score reads, (B, 2, H, W) at the model's size,
    and the memory sections they were read in: the end-to-end head's (`MALA.maps_and_sections`, in the images'
    `sections`, see `memory.Sections`), or the reconstruction error twice (ablation; the sections as given)."""
    if cfg.run.pipeline == "reconstruction":
        return reconstruction_map(model, images, cfg.stage1.mask_ratio).unsqueeze(1).expand(-1, 2, -1, -1), sections
    return model.maps_and_sections(images, sections)


def map_pairs(model: MALA, images: torch.Tensor, cfg: MalaConfig, sections: Sections = None
              ) -> tuple[torch.Tensor, Sections]:
    """`model_maps` of images (B, 3, H, W) in [0, 1] at `cfg.input_shape`: the model's own, or with tiling the tile
    maps stitched at the source size, every tile read in its image's `image_sections`."""
    grid = cfg.tile_grid
    if grid is None:
        return model_maps(model, images, cfg, sections)
    sections = image_sections(model, images, sections)
    per_tile = sections.repeat_interleave(grid.count) if isinstance(sections, torch.Tensor) else sections
    return tiled_maps(images, grid, lambda tiles: model_maps(model, tiles, cfg, per_tile)[0]), sections


def anomaly_maps(model: MALA, images: torch.Tensor, cfg: MalaConfig, sections: Sections = None) -> torch.Tensor:
    """Anomaly maps (B, H, W) of images (B, 3, H, W) in [0, 1] at `cfg.input_shape` (`map_pairs`' first)."""
    return map_pairs(model, images, cfg, sections)[0][:, 0]


def image_sections(model: MALA, images: torch.Tensor, sections: Sections = None) -> Sections:
    """The memory sections a tiled model's images (B, 3, H, W) are read in: the given ones; for None, in a model of
    several sections, the one (B,) each whole image is routed to, so that all of its tiles read the same one (an
    untiled model routes from its maps' own backbone pass instead)."""
    if sections is None and model.hybrid and model.memory.section_count > 1:
        return model.route(images)
    return sections


def scores_and_maps(model: MALA, images: torch.Tensor, cfg: MalaConfig, sections: Sections = None
                    ) -> tuple[torch.Tensor, torch.Tensor, Sections]:
    """The whole pipeline: image scores (B,), eq. 7 on the score's map, anomaly maps (B, H, W) of images (B, 3, H, W)
    in [0, 1] at `cfg.input_shape`, and the memory sections they were read in (`map_pairs`)."""
    pairs, sections = map_pairs(model, images, cfg, sections)
    return image_score(pairs[:, 1], cfg.run.score_kernel), pairs[:, 0], sections
